/**
 * The resource limiter conformance suite on the core's drivers: memory (both "workers" share one
 * store, as processes share a database) and Postgres (a fresh schema per test, each driver on its own
 * connection pool). The Redis driver runs it in its own package.
 */
import { PgResourceLimiter, ResourceLimiter } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import { ResourceLimiterConformance } from "../src/index.js"

ResourceLimiterConformance.suite("memory limiter", {
  make: Effect.map(ResourceLimiter.makeMemoryStore, (store) => Effect.succeed(store))
})

const client = () =>
  Layer.orDie(PgClient.layer({ host: "127.0.0.1", port: 5432, username: "postgres", database: "test" }))
let schemas = 0

ResourceLimiterConformance.suite("PgResourceLimiter", {
  make: Effect.gen(function*() {
    const schema = `cw_limits_conf_${process.pid}_${Date.now().toString(36)}_${schemas++}`
    const open = Effect.flatMap(
      Layer.build(client()),
      (context) => PgResourceLimiter.makeStore({ schema }).pipe(Effect.provide(context))
    )
    // Migrate once before the two drivers open, then drop the schema when the test ends.
    yield* Effect.acquireRelease(
      Effect.scoped(open),
      () =>
        Effect.scoped(
          Effect.flatMap(Layer.build(client()), (context) =>
            Effect.flatMap(SqlClient.SqlClient, (sql) =>
              sql`drop schema if exists ${sql(schema)} cascade`).pipe(
                Effect.provide(context)
              ))
        ).pipe(Effect.orDie)
    )
    return open
  })
})
