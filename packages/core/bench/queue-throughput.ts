/**
 * Queue throughput on one Postgres: chunkwise's PgQueue against pg-boss and graphile-worker, the same
 * JOBS no-op jobs at CONCURRENCY, in one run (D20: queues alone, send → receive → ack). Prints jobs per
 * second for draining an enqueued backlog, and the ratios. Run: npm run bench:queue -w packages/core
 */
import * as QueueBench from "@chunkwise/testing/QueueBench"
import { PgClient } from "@effect/sql-pg"
import { Effect, Logger, LogLevel } from "effect"
import { Logger as GraphileLogger, makeWorkerUtils, run } from "graphile-worker"
import PgBoss from "pg-boss"
import { PgQueue } from "../src/index.js"

const JOBS = Number(process.env["JOBS"] ?? 20_000)
const CONCURRENCY = Number(process.env["CONCURRENCY"] ?? 16)
const DATABASE = process.env["PGDATABASE"] ?? "test"
const url = `postgres://postgres@127.0.0.1:5432/${DATABASE}`

const seconds = (start: number) => (performance.now() - start) / 1000

/** chunkwise, received the way the Worker receives (`QueueBench.drain`: CONCURRENCY slots, a fiber a message). */
const chunkwise = Effect.gen(function*() {
  yield* QueueBench.fill(JOBS)
  const ms = yield* QueueBench.drain({ messages: JOBS, concurrency: CONCURRENCY, handler: Effect.void, waitMs: 100 })
  return JOBS / (ms / 1000)
}).pipe(
  Effect.scoped,
  Effect.provide(PgQueue.layer({ schema: "cw_bench_queue", queue: `bench-${Date.now()}`, pollInterval: "20 millis" })),
  Effect.provide(
    PgClient.layer({ host: "127.0.0.1", username: "postgres", database: DATABASE, maxConnections: CONCURRENCY + 2 })
  )
)

/**
 * pg-boss 10 has no local concurrency option (`teamSize` went in v10): concurrency comes from several
 * `work()` subscriptions, each a loop that fetches `batchSize` jobs, runs the handler, completes the batch
 * and then sleeps the rest of `pollingIntervalSeconds` (minimum 0.5 s). Its public `notifyWorker(id)`
 * skips that sleep for the next iteration, so a handler that notifies its own worker keeps fetching while
 * there is work and polls only when the queue is empty. Two shapes of concurrency 16 are measured:
 * `workers` subscriptions of `batchSize` jobs each (16 × 1: one job per fetch, like the others here; and
 * 1 × 16: one fetch and one completion per 16 jobs); the best counts (D20).
 */
const pgBoss = async (workers: number, batchSize: number) => {
  const boss = new PgBoss({ connectionString: url, schema: "pgboss_bench", max: CONCURRENCY + 2 })
  boss.on("error", () => {})
  await boss.start()
  const name = `bench-${Date.now()}`
  await boss.createQueue(name)
  for (let i = 0; i < JOBS; i += 1000) {
    await boss.insert(Array.from({ length: Math.min(1000, JOBS - i) }, (_, j) => ({ name, data: { n: i + j } })))
  }
  let done = 0
  let resolveDone: () => void = () => {}
  const finished = new Promise<void>((resolve) => (resolveDone = resolve))
  const start = performance.now()
  // A handler may run before its work() call returns the worker's id: that first pass just polls.
  const ids: Array<string | undefined> = []
  for (let w = 0; w < workers; w++) {
    ids[w] = await boss.work(name, { batchSize, pollingIntervalSeconds: 0.5 }, async (jobs) => {
      done += jobs.length
      const id = ids[w]
      if (done >= JOBS) resolveDone()
      else if (id !== undefined) boss.notifyWorker(id)
    })
  }
  await finished
  const rate = JOBS / seconds(start)
  await boss.stop({ graceful: false, wait: true })
  return rate
}

/** graphile-worker 0.16: one runner at concurrency CONCURRENCY, polling every 100 ms. */
const graphileWorker = async () => {
  const schema = "graphile_worker_bench"
  const utils = await makeWorkerUtils({ connectionString: url, schema })
  await utils.migrate()
  await utils.withPgClient((client) =>
    client.query(`select ${schema}.add_job('noop', json_build_object('n', g)) from generate_series(1, $1) g`, [JOBS])
  )
  await utils.release()
  let done = 0
  let resolveDone: () => void = () => {}
  const finished = new Promise<void>((resolve) => (resolveDone = resolve))
  const start = performance.now()
  const runner = await run({
    connectionString: url,
    schema,
    concurrency: CONCURRENCY,
    pollInterval: 100,
    noHandleSignals: true,
    logger: new GraphileLogger(() => () => {}),
    taskList: {
      noop: async () => {
        done += 1
        if (done >= JOBS) resolveDone()
      }
    }
  })
  await finished
  const rate = JOBS / seconds(start)
  await runner.stop()
  return rate
}

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const ROUNDS = Number(process.env["ROUNDS"] ?? 3)

const main = async () => {
  const contenders: ReadonlyArray<readonly [string, () => Promise<number>]> = [
    ["chunkwise PgQueue", () => Effect.runPromise(chunkwise.pipe(Logger.withMinimumLogLevel(LogLevel.Error)))],
    ...(process.env["SKIP_BOSS"] ? [] : [
      [`pg-boss 10 (${CONCURRENCY} work x 1)`, () => pgBoss(CONCURRENCY, 1)] as const,
      [`pg-boss 10 (1 work x ${CONCURRENCY})`, () => pgBoss(1, CONCURRENCY)] as const
    ]),
    ["graphile-worker 0.16", graphileWorker]
  ]
  const rates = new Map<string, Array<number>>(contenders.map(([name]) => [name, []]))
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate the order, so neither side always runs on a warmer (or busier) machine.
    const order = round % 2 === 0 ? contenders : [...contenders].reverse()
    for (const [name, run] of order) rates.get(name)!.push(await run())
  }
  const cw = median(rates.get("chunkwise PgQueue")!)
  console.log(
    `queue throughput: ${JOBS} no-op jobs, concurrency ${CONCURRENCY}, database ${DATABASE}, draining a backlog; ` +
      `median of ${ROUNDS} rounds (each round's jobs/s in brackets)`
  )
  for (const [name] of contenders) {
    const all = rates.get(name)!
    const m = median(all)
    console.log(
      `  ${name.padEnd(26)} ${m.toFixed(0).padStart(7)} jobs/s  [${all.map((r) => r.toFixed(0)).join(", ")}]` +
        (name === "chunkwise PgQueue" ? "" : `   chunkwise ${(cw / m).toFixed(2)}x`)
    )
  }
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e)
  process.exit(1)
})
