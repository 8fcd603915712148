/**
 * Replica routing on real Postgres: a second database stands in for the replica. Reads sent to the
 * replica reach it (and only it), outside the chunk's transaction; reads sent to the primary see the
 * chunk's own uncommitted writes; the store stays on the primary.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { Job, Replica, Runner, Step, Worker } from "../src/index.js"
import { awaitRun, freshSchema, liveWorker, pgClient, pgEngine } from "./pg.js"

const replicaDb = `cw_replica_${process.pid}_${Date.now().toString(36)}`

/** Creates the stand-in replica database with 30 source rows, and drops it afterwards. */
const withReplicaDatabase = Effect.acquireRelease(
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`create database ${sql(replicaDb)}`
    yield* Effect.gen(function*() {
      const replica = yield* SqlClient.SqlClient
      yield* replica`create table source (id integer primary key, amount integer not null)`
      yield* replica`insert into source select g, g * 10 from generate_series(1, 30) g`
      yield* replica`create table written (id integer primary key)`
    }).pipe(Effect.provide(pgClient({ database: replicaDb, maxConnections: 2 })))
  }),
  () =>
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql`drop database if exists ${sql(replicaDb)} with (force)`).pipe(
      Effect.orDie
    )
)

describe("read replicas", () => {
  it.live(
    "replica reads go to the replica outside the transaction; primary reads see the chunk's writes",
    () =>
      Effect.gen(function*() {
        const store = freshSchema("cw_store")
        const app = freshSchema("cw_app")
        yield* withReplicaDatabase
        const sql = yield* SqlClient.SqlClient
        yield* Effect.addFinalizer(() =>
          Effect.orDie(
            Effect.all([
              sql`drop schema if exists ${sql(app)} cascade`,
              sql`drop schema if exists ${sql(store)} cascade`
            ])
          )
        )
        yield* sql`create schema ${sql(app)}`
        yield* sql`create table ${sql(app)}.written (id integer primary key, amount integer not null)`
        const seen: Array<{ readonly primary: number; readonly replica: number }> = []
        const job = Job.make({
          name: "replica-reads",
          params: Schema.Struct({}),
          partitions: () => ["only"],
          steps: (step) => [
            step.chunked("copy", {
              cursor: Schema.Struct({ after: Schema.Number }),
              start: { after: 0 },
              chunkSize: 10,
              transaction: "chunk",
              process: (ctx) =>
                Effect.gen(function*() {
                  // The source table exists only on the replica: a primary read would fail.
                  const rows = yield* Replica.replica((r) =>
                    r<{ readonly id: number; readonly amount: number }>`
                    select id, amount from source where id > ${ctx.cursor.after} order by id limit ${ctx.chunkSize}`
                  )
                  if (rows.length === 0) return Step.done
                  yield* Replica.primary((p) =>
                    p`insert into ${p(app)}.written ${p.insert(rows.map((r) => ({ id: r.id, amount: r.amount })))}`
                  )
                  const [primary] = yield* Replica.primary((p) =>
                    p<{ readonly n: number }>`select count(*)::int as n from ${p(app)}.written`
                  )
                  const [replica] = yield* Replica.replica((r) =>
                    r<{ readonly n: number }>`select count(*)::int as n from written`
                  )
                  seen.push({ primary: primary!.n, replica: replica!.n })
                  return Step.advance({ after: rows[rows.length - 1]!.id }, rows.length)
                })
            })
          ]
        })
        yield* Effect.gen(function*() {
          yield* Worker.make({ jobs: [job], ...liveWorker })
          const { runId } = yield* Runner.start(job, {})
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("succeeded")
        }).pipe(
          Effect.provide(
            Layer.merge(pgEngine(store), Replica.layer(pgClient({ database: replicaDb, maxConnections: 2 })))
          )
        )
        // Each chunk's primary read saw its own uncommitted insert; the replica never saw the primary's rows.
        expect(seen).toEqual([{ primary: 10, replica: 0 }, { primary: 20, replica: 0 }, { primary: 30, replica: 0 }])
        const [copied] = yield* sql<{ readonly n: number; readonly total: number }>`
        select count(*)::int as n, sum(amount)::int as total from ${sql(app)}.written`
        expect(copied).toEqual({ n: 30, total: 4650 })
      }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))),
    60_000
  )
})
