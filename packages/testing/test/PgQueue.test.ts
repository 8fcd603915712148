import { PgQueue } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import { afterAll } from "vitest"
import { QueueAdapterConformance } from "../src/index.js"

// Real Postgres at 127.0.0.1:5432 (database test): one schema for this file, the suite's queue names.
const client = PgClient.layer({
  host: "127.0.0.1",
  port: 5432,
  username: "postgres",
  database: "test",
  maxConnections: 16
})
const schema = `cw_queue_${process.pid}_${Date.now().toString(36)}`

afterAll(() =>
  Effect.runPromise(
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql`drop schema if exists ${sql(schema)} cascade`).pipe(
      Effect.provide(client)
    )
  )
)

QueueAdapterConformance.suite("PgQueue", {
  make: ({ maxReceives, queue }) =>
    PgQueue.layer({ schema, queue, maxReceives, pollInterval: "20 millis" }).pipe(Layer.provide(client)),
  time: "live",
  sharedBetweenInstances: true,
  visibilityMs: 400,
  maxMessageBytes: 262_144
})
