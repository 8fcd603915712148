/**
 * Queue throughput on one Redis: chunkwise's RedisQueue against BullMQ 5, in one run (D20: queues
 * alone, send → receive → ack). Each scenario drains a backlog of JOBS messages enqueued first, with a
 * no-op handler or one that sleeps some ms, at a concurrency; it prints jobs per second and the ratio.
 * Run: npm run bench -w packages/adapters-redis
 *
 * Knobs: JOBS (default 20,000), SCENARIOS (default "0x16,2x16,2x64": handler ms x concurrency),
 * ROUNDS (default 3: each scenario runs ROUNDS times, the contenders taking turns to go first, and the
 * medians are reported: of each contender's rates, and of the ratios of the rounds, since a shared
 * machine is noisy; one unmeasured no-op drain per contender runs first, to warm the JIT), REDIS_URL (default redis://127.0.0.1:6379),
 * PREFETCH=0 (chunkwise without fetch-next), ONLY=chunkwise|bullmq (one contender, for profiling).
 */
import { QueueAdapter } from "@chunkwise/core"
import * as QueueBench from "@chunkwise/testing/QueueBench"
import { Queue as BullQueue, Worker as BullWorker } from "bullmq"
import { Effect, Logger, LogLevel, Redacted } from "effect"
import { Redis } from "ioredis"
import { RedisQueue } from "../src/index.js"
import { deleteKeys } from "../test/redis.js"

const JOBS = Number(process.env["JOBS"] ?? 20_000)
const SCENARIOS = (process.env["SCENARIOS"] ?? "0x16,2x16,2x64").split(",").map((s) => {
  const [handlerMs, concurrency] = s.split("x").map(Number)
  return { handlerMs: handlerMs!, concurrency: concurrency! }
})
const REDIS_URL = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
const ROUNDS = Number(process.env["ROUNDS"] ?? 3)
const PREFETCH = process.env["PREFETCH"] !== "0"
const ONLY = process.env["ONLY"]
const prefix = `cwbench:${process.pid}:`

const seconds = (start: number) => (performance.now() - start) / 1000

/**
 * chunkwise, received the way the Worker receives: one loop asks for as many messages as it has free
 * slots, waits for a slot when all are busy, and runs the handler and the ack of each message in its
 * own fiber.
 */
const chunkwise = (handlerMs: number, concurrency: number) =>
  Effect.gen(function*() {
    const queue = yield* RedisQueue.make({
      url: Redacted.make(REDIS_URL),
      prefix,
      queue: `q-${Date.now()}`,
      prefetch: PREFETCH
    })
    yield* QueueBench.fill(JOBS).pipe(Effect.provideService(QueueAdapter.QueueAdapter, queue))
    const ms = yield* QueueBench.drain({
      messages: JOBS,
      concurrency,
      handler: handlerMs > 0 ? Effect.sleep(handlerMs) : Effect.void
    }).pipe(Effect.provideService(QueueAdapter.QueueAdapter, queue))
    const rate = JOBS / (ms / 1000)
    const depth = yield* queue.depth
    if (depth.ready + depth.inFlight + depth.delayed > 0) throw new Error(`chunkwise left ${JSON.stringify(depth)}`)
    return rate
  }).pipe(Effect.scoped)

/** BullMQ 5: a Worker at the same concurrency; jobs removed on completion, as chunkwise deletes on ack. */
const bullmq = async (handlerMs: number, concurrency: number) => {
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null })
  const name = `bench-${Date.now()}`
  const queue = new BullQueue(name, { connection, prefix: `${prefix}bull` })
  for (let i = 0; i < JOBS; i += 1000) {
    await queue.addBulk(
      Array.from({ length: Math.min(1000, JOBS - i) }, (_, j) => ({
        name: "noop",
        data: { n: i + j },
        opts: { removeOnComplete: true, removeOnFail: true }
      }))
    )
  }
  let done = 0
  let resolveDone: () => void = () => {}
  const finished = new Promise<void>((resolve) => (resolveDone = resolve))
  const worker = new BullWorker(
    name,
    async () => {
      if (handlerMs > 0) await new Promise((resolve) => setTimeout(resolve, handlerMs))
    },
    {
      connection: new Redis(REDIS_URL, { maxRetriesPerRequest: null }),
      prefix: `${prefix}bull`,
      concurrency,
      autorun: false
    }
  )
  worker.on("completed", () => {
    done += 1
    if (done >= JOBS) resolveDone()
  })
  // Connected before the clock starts, as chunkwise's queue is.
  await worker.waitUntilReady()
  const start = performance.now()
  void worker.run()
  await finished
  const rate = JOBS / seconds(start)
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  connection.disconnect()
  return rate
}

const cleanUp = async () => {
  const client = new Redis(REDIS_URL)
  await deleteKeys(client, prefix)
  client.disconnect()
}

const main = async () => {
  const rows: Array<string> = []
  const runChunkwise = (handlerMs: number, concurrency: number) =>
    ONLY === "bullmq"
      ? Promise.resolve(NaN)
      : Effect.runPromise(chunkwise(handlerMs, concurrency).pipe(Logger.withMinimumLogLevel(LogLevel.Error)))
  const runBullmq = (handlerMs: number, concurrency: number) =>
    ONLY === "chunkwise" ? Promise.resolve(NaN) : bullmq(handlerMs, concurrency)
  try {
    // Warm-up: one unmeasured no-op drain per contender, so no measured round pays for the JIT.
    await runChunkwise(0, 16)
    await runBullmq(0, 16)
    for (const { concurrency, handlerMs } of SCENARIOS) {
      const cws: Array<number> = []
      const bulls: Array<number> = []
      for (let round = 0; round < ROUNDS; round++) {
        if (round % 2 === 0) {
          cws.push(await runChunkwise(handlerMs, concurrency))
          bulls.push(await runBullmq(handlerMs, concurrency))
        } else {
          bulls.push(await runBullmq(handlerMs, concurrency))
          cws.push(await runChunkwise(handlerMs, concurrency))
        }
      }
      const [cw, bull] = [QueueBench.median(cws), QueueBench.median(bulls)]
      // Each round's two runs are close in time, so their ratio shakes off the machine's load better.
      const ratio = QueueBench.median(cws.map((rate, i) => rate / bulls[i]!))
      const what = handlerMs > 0 ? `${handlerMs} ms handler` : "no-op"
      const all = (values: ReadonlyArray<number>) => values.map((v) => v.toFixed(0)).join(", ")
      rows.push(
        `  ${what.padEnd(13)} concurrency ${String(concurrency).padStart(3)}   chunkwise RedisQueue ${
          cw.toFixed(0).padStart(6)
        } jobs/s   BullMQ ${bull.toFixed(0).padStart(6)} jobs/s   chunkwise ${ratio.toFixed(2)}x`
      )
      console.log(`${rows.at(-1)}   (rounds: chunkwise ${all(cws)}; BullMQ ${all(bulls)})`)
    }
  } finally {
    await cleanUp()
  }
  console.log(
    `\nqueue throughput: ${JOBS} jobs per scenario, median of ${ROUNDS} rounds, on ${
      REDIS_URL.replace(/\/\/[^@]*@/, "//")
    } (draining a backlog)`
  )
  for (const row of rows) console.log(row)
}

main().then(() => process.exit(0)).catch((e) => {
  console.error(e)
  process.exit(1)
})
