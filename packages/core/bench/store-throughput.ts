/**
 * The store's own cost: empty chunks (the framework statement alone, in its transaction) committed by
 * WORKERS fibers for SECONDS, against `pgbench -N` with as many clients on the same database, in one run.
 * Each fiber commits through a store session, as a worker does for a unit. Prints the rates and the
 * worker's CPU per chunk (steadier than the rate on a shared machine); asserts nothing.
 * Run: npm run bench:store -w packages/core
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Logger, LogLevel } from "effect"
import { execFileSync } from "node:child_process"
import { PgStateStore, StateStore } from "../src/index.js"

const WORKERS = Number(process.env["WORKERS"] ?? 8)
const SECONDS = Number(process.env["SECONDS"] ?? 10)
const DATABASE = process.env["PGDATABASE"] ?? "test"
const schema = "cw_bench_store_tps"

const pgbench = (): number => {
  const args = ["-h", "127.0.0.1", "-U", "postgres"]
  execFileSync("pgbench", [...args, "-i", "-q", "-s", "1", DATABASE], { stdio: "ignore" })
  try {
    const out = execFileSync("pgbench", [
      ...args,
      "-N",
      "-c",
      String(WORKERS),
      "-j",
      "2",
      "-T",
      String(SECONDS),
      DATABASE
    ], {
      encoding: "utf8"
    })
    return Number(/tps = ([0-9.]+)/.exec(out)?.[1] ?? NaN)
  } finally {
    execFileSync("pgbench", [...args, "-i", "-I", "d", DATABASE], { stdio: "ignore" })
  }
}

const emptyChunks = Effect.gen(function*() {
  const store = yield* StateStore.StateStore
  const runId = `tps-${Date.now()}`
  yield* store.createRun({
    runId,
    job: "tps",
    runKey: runId,
    baseKey: runId,
    params: {},
    definition: { version: 1, steps: [] },
    fingerprint: "f"
  })
  yield* store.insertUnits(
    runId,
    Array.from({ length: WORKERS }, (_, i) => ({ unitId: `u${i}`, partitionKey: `u${i}`, weight: 1 }))
  )
  yield* store.openRun(runId, () => 0)
  const messages = yield* store.feed({ maxOutstanding: WORKERS, redeliverAfterMs: 600_000 })
  const leases = yield* Effect.forEach(
    messages,
    (message) =>
      Effect.flatMap(
        store.claim({ message, workerId: "bench", leaseMs: 600_000, jobConcurrency: undefined }),
        (claim) => claim._tag === "Claimed" ? Effect.succeed(claim.lease) : Effect.dieMessage("claim failed")
      )
  )
  const deadline = Date.now() + SECONDS * 1000
  const cpuFrom = process.cpuUsage()
  const counts = yield* Effect.forEach(leases, (lease) =>
    Effect.gen(function*() {
      // One session per unit, as a worker holds one for a unit's chunks.
      const transaction = store.session === undefined ? store.transaction : (yield* store.session).transaction
      let seq = 0
      while (Date.now() < deadline) {
        yield* transaction(store.commitChunk({
          lease,
          from: { stepIndex: 0, chunkSeq: seq },
          to: { stepIndex: 0, chunkSeq: seq + 1, cursor: { n: seq + 1 } },
          unitDone: false,
          items: 0,
          idempotencyKey: `k${seq}`,
          step: "s",
          leaseMs: 600_000,
          last: true
        }))
        seq += 1
      }
      return seq
    }).pipe(Effect.scoped), { concurrency: "unbounded" })
  const { system, user } = process.cpuUsage(cpuFrom)
  const chunks = counts.reduce((a, b) => a + b, 0)
  return { perSecond: chunks / SECONDS, cpuPerChunk: (user + system) / chunks }
})

const program = Effect.gen(function*() {
  const chunkwise = yield* emptyChunks.pipe(Effect.provide(PgStateStore.layer({ schema })))
  const bench = pgbench()
  console.log(`store throughput: ${WORKERS} clients, ${SECONDS} s each, database ${DATABASE}`)
  console.log(`  pgbench -N       ${bench.toFixed(0).padStart(7)} tps`)
  console.log(
    `  chunkwise commit ${chunkwise.perSecond.toFixed(0).padStart(7)} chunks/s  ` +
      `${(chunkwise.perSecond / bench).toFixed(2)}x pgbench  node cpu ${chunkwise.cpuPerChunk.toFixed(0)} µs/chunk`
  )
})

const Database = PgClient.layer({
  host: "127.0.0.1",
  username: "postgres",
  database: DATABASE,
  maxConnections: WORKERS + 2
})

Effect.runPromise(
  program.pipe(
    Effect.zipLeft(Effect.flatMap(PgClient.PgClient, (sql) => sql`drop schema if exists ${sql(schema)} cascade`)),
    Effect.provide(Database),
    Logger.withMinimumLogLevel(LogLevel.Error)
  )
).catch((e) => {
  console.error(e)
  process.exit(1)
})
