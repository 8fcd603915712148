/**
 * Queue throughput on one Postgres: chunkwise's PgQueue against pg-boss and graphile-worker, the same
 * JOBS no-op jobs at CONCURRENCY, in one run (D20: queues alone, send → receive → ack). Prints jobs per
 * second for draining an enqueued backlog, and the ratios. Run: npm run bench:queue -w packages/core
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, FiberSet, Logger, LogLevel } from "effect"
import { Logger as GraphileLogger, makeWorkerUtils, run } from "graphile-worker"
import PgBoss from "pg-boss"
import { PgQueue, QueueAdapter } from "../src/index.js"

const JOBS = Number(process.env["JOBS"] ?? 20_000)
const CONCURRENCY = Number(process.env["CONCURRENCY"] ?? 16)
const DATABASE = process.env["PGDATABASE"] ?? "test"
const url = `postgres://postgres@127.0.0.1:5432/${DATABASE}`

const seconds = (start: number) => (performance.now() - start) / 1000

/**
 * chunkwise, received the way the Worker receives: one loop asks for as many messages as it has free
 * slots (CONCURRENCY in all), and each message is handled (here: acked) in its own fiber.
 */
const chunkwise = Effect.gen(function*() {
  const queue = yield* QueueAdapter.QueueAdapter
  for (let i = 0; i < JOBS; i += 1000) {
    yield* queue.send(Array.from({ length: Math.min(1000, JOBS - i) }, (_, j) => ({ body: `{"n":${i + j}}` })))
  }
  let done = 0
  let inflight = 0
  const handlers = yield* FiberSet.make()
  const start = performance.now()
  while (done < JOBS) {
    const free = CONCURRENCY - inflight
    if (free <= 0) {
      yield* Effect.sleep(1)
      continue
    }
    const got = yield* queue.receive({ max: free, visibilityMs: 60_000, waitMs: 100 })
    for (const delivery of got) {
      inflight += 1
      yield* FiberSet.run(
        handlers,
        queue.ack([delivery.receipt]).pipe(Effect.ensuring(Effect.sync(() => {
          inflight -= 1
          done += 1
        })))
      )
    }
  }
  return JOBS / seconds(start)
}).pipe(
  Effect.scoped,
  Effect.provide(PgQueue.layer({ schema: "cw_bench_queue", queue: `bench-${Date.now()}`, pollInterval: "20 millis" })),
  Effect.provide(
    PgClient.layer({ host: "127.0.0.1", username: "postgres", database: DATABASE, maxConnections: CONCURRENCY + 2 })
  )
)

/**
 * pg-boss 10 has no per-worker concurrency setting: one worker fetching batches of CONCURRENCY jobs,
 * polling every 0.5 s (its minimum), keeps CONCURRENCY jobs in flight.
 */
const pgBoss = async () => {
  const boss = new PgBoss({ connectionString: url, schema: "pgboss_bench", max: CONCURRENCY + 2 })
  boss.on("error", () => {})
  await boss.start()
  const name = `bench-${Date.now()}`
  await boss.createQueue(name)
  for (let i = 0; i < JOBS; i += 1000) {
    await boss.insert(Array.from({ length: Math.min(1000, JOBS - i) }, (_, j) => ({ name, data: { n: i + j } })))
  }
  let done = 0
  const start = performance.now()
  const finished = new Promise<void>((resolve) => {
    void boss.work(name, { batchSize: CONCURRENCY, pollingIntervalSeconds: 0.5 }, async (jobs) => {
      done += jobs.length
      if (done >= JOBS) resolve()
    })
  })
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

const main = async () => {
  const cw = await Effect.runPromise(chunkwise.pipe(Logger.withMinimumLogLevel(LogLevel.Error)))
  // pg-boss drains at batchSize / 0.5 s: SKIP_BOSS=1 leaves it out of long runs.
  const boss = process.env["SKIP_BOSS"] ? NaN : await pgBoss()
  const gw = await graphileWorker()
  console.log(
    `queue throughput: ${JOBS} no-op jobs, concurrency ${CONCURRENCY}, database ${DATABASE} (draining a backlog)`
  )
  console.log(`  chunkwise PgQueue  ${cw.toFixed(0).padStart(7)} jobs/s`)
  console.log(`  pg-boss 10         ${boss.toFixed(0).padStart(7)} jobs/s   chunkwise ${(cw / boss).toFixed(2)}x`)
  console.log(`  graphile-worker    ${gw.toFixed(0).padStart(7)} jobs/s   chunkwise ${(cw / gw).toFixed(2)}x`)
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e)
  process.exit(1)
})
