import { MemoryDatabase, PgStateStore, StateStore } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Option } from "effect"
import { afterAll } from "vitest"
import { StateStoreConformance } from "../src/index.js"

StateStoreConformance.suite("memory store", {
  make: () => StateStore.layerMemory,
  time: "test-clock",
  writes: {
    write: (key) => Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.put("conformance", key, true)),
    read: (key) =>
      Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => Effect.map(db.get("conformance", key), Option.isSome))
  }
})

// Real Postgres at 127.0.0.1:5432 (database test): a fresh store schema per test, dropped afterwards.
const client = PgClient.layer({ host: "127.0.0.1", port: 5432, username: "postgres", database: "test" })
const prefix = `cw_store_conf_${process.pid}_${Date.now().toString(36)}`
const table = `${prefix}_writes`
const schemas: Array<string> = []

afterAll(() =>
  Effect.runPromise(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.all([
        ...schemas.map((schema) => sql`drop schema if exists ${sql(schema)} cascade`),
        sql`drop table if exists ${sql(table)}`
      ])).pipe(Effect.provide(client))
  )
)

const freshSchema = () => {
  schemas.push(`${prefix}_${schemas.length}`)
  return schemas[schemas.length - 1]!
}

StateStoreConformance.suite("PgStateStore", {
  make: () =>
    Layer.provideMerge(
      PgStateStore.layer({ schema: freshSchema() }),
      Layer.effectDiscard(
        Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql`create table if not exists ${sql(table)} (key text primary key)`
        )
      ).pipe(Layer.provideMerge(client))
    ),
  time: "live",
  writes: {
    write: (key) => Effect.flatMap(SqlClient.SqlClient, (sql) => sql`insert into ${sql(table)} values (${key})`),
    read: (key) =>
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => Effect.map(sql`select 1 from ${sql(table)} where key = ${key}`, (rows) => rows.length > 0)
      )
  }
})
