/**
 * Per-chunk overhead of chunkwise on the Postgres store, against hand-written loops doing the same SQL
 * (D20). Prints figures; asserts nothing. Run: npm run bench -w packages/core
 *
 * Data: PARTITIONS × ROWS rows; every contender copies them, CHUNK rows per chunk, CONCURRENCY partitions
 * at a time, into its own target table. Contenders, alternated ROUNDS times on the same data:
 *  - loop:        BEGIN; the chunk's INSERT ... SELECT; COMMIT            (the bare baseline of D20)
 *  - loop+ckpt:   the same plus an UPDATE of a checkpoint row in the transaction (a hand-written resumable loop)
 *  - chunkwise:   a Step.chunked in "chunk" mode on PgStateStore (checkpoint, ledger, fenced lease)
 * ONLY=chunkwise or ONLY=loop runs that contender alone, MODE=none runs the chunkwise step in mode "none"
 * (for profiling).
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { type Duration, Effect, Layer, Logger, LogLevel, Schema } from "effect"
import { Job, PgStateStore, QueueAdapter, Runner, Step, Worker } from "../src/index.js"

const PARTITIONS = Number(process.env["PARTITIONS"] ?? 16)
const ROWS = Number(process.env["ROWS"] ?? 25_000)
const CHUNK = Number(process.env["CHUNK"] ?? 1000)
const CONCURRENCY = Number(process.env["CONCURRENCY"] ?? 4)
const ROUNDS = Number(process.env["ROUNDS"] ?? 3)
const schema = "cw_bench"

const copyChunk = (target: string, partition: number, after: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly last: number | null; readonly n: number }>`
        with c as (
          select id, v from ${sql(schema)}.items where p = ${partition} and id > ${after} order by id limit ${CHUNK}),
        ins as (insert into ${sql(schema)}.${sql(target)} (id, v) select id, v * 2 from c)
        select max(id)::int as last, count(*)::int as n from c`,
      ([row]) => ({ last: row?.last ?? null, n: row?.n ?? 0 })
    ))

const handLoop = (withCheckpoint: boolean) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const target = withCheckpoint ? "t_loop_ckpt" : "t_loop"
    yield* Effect.forEach(Array.from({ length: PARTITIONS }, (_, p) => p), (p) =>
      Effect.gen(function*() {
        let after = 0
        while (true) {
          const { last } = yield* sql.withTransaction(Effect.gen(function*() {
            const result = yield* copyChunk(target, p, after)
            if (withCheckpoint) {
              yield* sql`update ${sql(schema)}.checkpoints set after_id = ${result.last ?? after}, chunks = chunks + 1
                where p = ${p}`
            }
            return result
          }))
          if (last === null) return
          after = last
        }
      }), { concurrency: CONCURRENCY, discard: true })
  })

const job = Job.make({
  name: "bench-copy",
  params: Schema.Struct({ round: Schema.Number }),
  partitions: () => Array.from({ length: PARTITIONS }, (_, p) => String(p)),
  steps: (step) => [
    step.chunked("copy", {
      cursor: Schema.Struct({ after: Schema.Number }),
      start: { after: 0 },
      chunkSize: CHUNK,
      transaction: (process.env["MODE"] ?? "chunk") as "chunk" | "none",
      process: ({ cursor, partition }) =>
        Effect.map(
          copyChunk("t_chunkwise", Number(partition.key), cursor.after),
          ({ last, n }) => Step.advance(last === null ? Step.done : { after: last }, n)
        )
    })
  ],
  concurrency: { perWorker: CONCURRENCY }
})

/**
 * One run, from `Runner.start` to its end (the finalize included). The worker is long-lived, as in a
 * service: it starts once, before the first round, so its start-up is not a per-chunk cost.
 */
const chunkwise = (round: number) =>
  Effect.gen(function*() {
    const { runId } = yield* Runner.start(job, { round })
    const progress = yield* Runner.awaitTerminal(runId, { pollInterval: "10 millis" })
    if (progress.run.status !== "succeeded") throw new Error(`bench run ${progress.run.status}`)
  })

const time = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    yield* effect
    return performance.now() - start
  })

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`drop schema if exists ${sql(schema)} cascade`
  yield* sql`create schema ${sql(schema)}`
  yield* sql`create table ${sql(schema)}.items (p int not null, id int not null, v int not null, primary key (p, id))`
  yield* sql`insert into ${sql(schema)}.items select p, i, i % 1000 from generate_series(0, ${PARTITIONS - 1}) p,
    generate_series(1, ${ROWS}) i`
  yield* sql`analyze ${sql(schema)}.items`
  for (const t of ["t_loop", "t_loop_ckpt", "t_chunkwise"]) {
    yield* sql`create table ${sql(schema)}.${sql(t)} (id int not null, v int not null)`
  }
  yield* sql`create table ${sql(schema)}.checkpoints (p int primary key, after_id int not null, chunks int not null)`
  const results: Record<string, Array<number>> = { loop: [], "loop+ckpt": [], chunkwise: [] }
  const contenders: ReadonlyArray<readonly [string, (round: number) => Effect.Effect<void, unknown, any>]> = [
    ...(process.env["ONLY"] !== "chunkwise" ? [["loop", () => handLoop(false)] as const] : []),
    ...(process.env["ONLY"] === undefined ? [["loop+ckpt", () => handLoop(true)] as const] : []),
    ...(process.env["ONLY"] !== "loop" ? [["chunkwise", chunkwise] as const] : [])
  ]
  if (process.env["ONLY"] !== "loop") {
    yield* Worker.make({
      jobs: [job],
      concurrency: CONCURRENCY,
      feedInterval: (process.env["FEED"] ?? "1 second") as Duration.DurationInput
    })
  }
  for (let round = 0; round < ROUNDS; round++) {
    yield* sql`truncate ${sql(schema)}.t_loop, ${sql(schema)}.t_loop_ckpt, ${sql(schema)}.t_chunkwise`
    yield* sql`delete from ${sql(schema)}.checkpoints`
    yield* sql`insert into ${sql(schema)}.checkpoints select p, 0, 0 from generate_series(0, ${PARTITIONS - 1}) p`
    // Rotate the order each round, so no contender always runs after the others' writes (WAL, checkpoints).
    for (let i = 0; i < contenders.length; i++) {
      const [name, run] = contenders[(round + i) % contenders.length]!
      results[name]!.push(yield* time(run(round)))
    }
  }
  const [copied] = yield* sql<{ readonly n: number }>`select count(*)::int as n from ${sql(schema)}.t_chunkwise`
  if (process.env["ONLY"] !== "loop" && copied?.n !== PARTITIONS * ROWS) {
    throw new Error(`chunkwise copied ${copied?.n} rows`)
  }
  const chunks = PARTITIONS * Math.ceil((ROWS + 1) / CHUNK)
  const base = median(results["loop"]!.length > 0 ? results["loop"]! : results["chunkwise"]!)
  console.log(
    `chunk overhead: ${PARTITIONS} partitions × ${ROWS} rows, ${CHUNK}-row chunks (~${chunks} chunks), ` +
      `concurrency ${CONCURRENCY}, median of ${ROUNDS} alternated rounds`
  )
  for (const [name, xs] of Object.entries(results).filter(([, xs]) => xs.length > 0)) {
    const m = median(xs)
    console.log(
      `  ${name.padEnd(10)} ${m.toFixed(0).padStart(7)} ms  ${(m / base).toFixed(3)}x loop  ` +
        `${((m / chunks) * CONCURRENCY).toFixed(2)} ms/chunk  [${xs.map((x) => x.toFixed(0)).join(", ")}]`
    )
  }
  yield* sql`drop schema ${sql(schema)} cascade`
}).pipe(Effect.scoped)

/** Drops the store's schema once the worker and the store are closed. */
const dropStore = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`drop schema if exists ${sql(`${schema}_store`)} cascade`
})

const Database = PgClient.layer({
  host: process.env["PGHOST"] ?? "127.0.0.1",
  port: 5432,
  username: "postgres",
  database: process.env["PGDATABASE"] ?? "test",
  maxConnections: CONCURRENCY + 4
})

const Engine = Layer.merge(PgStateStore.layer({ schema: `${schema}_store` }), QueueAdapter.layerMemory())

Effect.runPromise(
  program.pipe(
    Effect.provide(Engine),
    Effect.zipRight(dropStore),
    Effect.provide(Database),
    Logger.withMinimumLogLevel(LogLevel.Warning)
  ) as Effect.Effect<void, unknown, never>
).catch((e) => {
  console.error(e)
  process.exit(1)
})
