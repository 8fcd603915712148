/**
 * What resource limits cost and what they deliver: one worker (CONCURRENCY units at once) runs
 * PARTITIONS × CHUNKS chunks of one trivial statement each (mode chunk) on Postgres, once per limit
 * setting: no resources; a resource without limits; limits that never bind (the permits' own cost);
 * and limits that bind (the pace they set, and the most chunks seen at once on the database's clock).
 * Prints figures; asserts nothing. Run: npx tsx packages/core/bench/limits.ts
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, LogLevel, Schema } from "effect"
import {
  Job,
  PgQueue,
  PgResourceLimiter,
  PgStateStore,
  type ResourceLimiter,
  Runner,
  Step,
  Worker
} from "../src/index.js"

const PARTITIONS = Number(process.env["PARTITIONS"] ?? 8)
const CHUNKS = Number(process.env["CHUNKS"] ?? 100)
const CONCURRENCY = Number(process.env["CONCURRENCY"] ?? 8)

interface Case {
  readonly name: string
  readonly resources: ReadonlyArray<string>
  readonly limit?: ResourceLimiter.Limit
}

const cases: ReadonlyArray<Case> = [
  { name: "no resources", resources: [] },
  { name: "resource, no limit", resources: ["primary-db"], limit: {} },
  { name: "inFlight 64 (never binds)", resources: ["primary-db"], limit: { inFlight: 64 } },
  { name: "100000 chunks/s (never binds)", resources: ["primary-db"], limit: { chunksPerSecond: 100_000 } },
  { name: "inFlight 2", resources: ["primary-db"], limit: { inFlight: 2 } },
  { name: "200 chunks/s, burst 10", resources: ["primary-db"], limit: { chunksPerSecond: 200, burst: 10 } }
]

const runCase = (c: Case, index: number) =>
  Effect.gen(function*() {
    const schema = `cw_bench_limits_${index}`
    const app = `${schema}_app`
    const sql = yield* SqlClient.SqlClient
    yield* sql`drop schema if exists ${sql(schema)} cascade`
    yield* sql`drop schema if exists ${sql(app)} cascade`
    yield* sql`create schema ${sql(app)}`
    yield* sql`create table ${sql(app)}.executions (
      id serial primary key, started_at timestamptz not null, ended_at timestamptz not null)`
    const job = Job.make({
      name: "bench-limits",
      params: Schema.Struct({ label: Schema.String }),
      concurrency: { perWorker: CONCURRENCY },
      partitions: () => Array.from({ length: PARTITIONS }, (_, i) => `p${i}`),
      steps: (step) => [
        step.chunked("load", {
          cursor: Schema.Struct({ next: Schema.Number }),
          start: { next: 0 },
          chunkSize: 1,
          transaction: "chunk",
          resources: c.resources,
          process: ({ cursor }) =>
            Effect.gen(function*() {
              const db = yield* SqlClient.SqlClient
              const [row] = yield* db<{ readonly id: number }>`
                insert into ${db(app)}.executions (started_at, ended_at) values (clock_timestamp(), clock_timestamp())
                returning id`
              yield* db`update ${db(app)}.executions set ended_at = clock_timestamp() where id = ${row!.id}`
              return cursor.next + 1 >= CHUNKS ? Step.done : { next: cursor.next + 1 }
            })
        })
      ]
    })
    // The store's layer first: it migrates the schema once before the queue and the limiter check it.
    const engine = Layer.mergeAll(PgQueue.layer({ schema }), PgResourceLimiter.layer({ schema })).pipe(
      Layer.provideMerge(PgStateStore.layer({ schema }))
    )
    const figures = yield* Effect.gen(function*() {
      yield* Worker.make({
        jobs: [job],
        concurrency: CONCURRENCY,
        pollInterval: "20 millis",
        feedInterval: "50 millis",
        ...(c.limit === undefined ? {} : { limits: { "primary-db": c.limit } })
      })
      const began = performance.now()
      const { runId } = yield* Runner.start(job, { label: c.name })
      const progress = yield* Runner.awaitTerminal(runId, { pollInterval: "20 millis" })
      const seconds = (performance.now() - began) / 1000
      const [db] = yield* sql<{ readonly span: number; readonly most: number }>`
        select extract(epoch from max(started_at) - min(started_at))::float8 as span,
          (select max(n) from (
            select (select count(*) from ${sql(app)}.executions o
                    where o.started_at <= e.started_at and o.ended_at > e.started_at) as n
            from ${sql(app)}.executions e) x)::int as most
        from ${sql(app)}.executions`
      return {
        status: progress.run.status,
        chunks: progress.chunks,
        seconds,
        perSecond: progress.chunks / seconds,
        startsPerSecond: (progress.chunks - 1) / db!.span,
        most: db!.most
      }
    }).pipe(Effect.scoped, Effect.provide(engine))
    yield* sql`drop schema if exists ${sql(schema)} cascade`
    yield* sql`drop schema if exists ${sql(app)} cascade`
    return figures
  })

const main = Effect.gen(function*() {
  console.log(
    `resource limits: ${PARTITIONS} partitions × ${CHUNKS} chunks, one worker at concurrency ${CONCURRENCY}, Postgres`
  )
  console.log(
    "case                              status     chunks   seconds   chunks/s   starts/s   most at once (db clock)"
  )
  for (const [i, c] of cases.entries()) {
    const f = yield* runCase(c, i)
    console.log(
      `${c.name.padEnd(34)}${f.status.padEnd(11)}${String(f.chunks).padStart(6)}${f.seconds.toFixed(2).padStart(10)}` +
        `${f.perSecond.toFixed(0).padStart(11)}${f.startsPerSecond.toFixed(0).padStart(11)}${
          String(f.most).padStart(9)
        }`
    )
  }
})

main.pipe(
  Effect.provide(
    PgClient.layer({
      host: "127.0.0.1",
      port: 5432,
      username: "postgres",
      database: "test",
      maxConnections: CONCURRENCY + 4
    })
  ),
  Logger.withMinimumLogLevel(LogLevel.Error),
  Effect.runPromise
).catch((error) => {
  console.error(error)
  process.exitCode = 1
})
