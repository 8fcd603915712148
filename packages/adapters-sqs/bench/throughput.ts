/**
 * Queue throughput on one SQS emulator (fauxqs, in-process on a loopback port): chunkwise's SqsQueue
 * against sqs-consumer, the same JOBS messages per contender, in one run (D20: queues alone, send →
 * receive → handle → ack). Three cases: no-op handler at concurrency 16, a 2 ms handler at 16 and at
 * 64. Each consumption is compared with its like: chunkwise consumed the Worker's way (a fiber and an
 * ack per message) with sqs-consumer's `handleMessage` (a handler and a delete per message), and
 * chunkwise consumed in batches of 10 (receive, handle all, ack all in one call) with sqs-consumer's
 * `handleMessageBatch`. Each case runs ROUNDS rounds, the contenders alternated (reversed every other
 * round); prints the median round's jobs per second for draining an enqueued backlog, SQS requests and
 * CPU per message, and each chunkwise/sqs-consumer ratio as its median and every round's.
 * Run: npm run bench -w packages/adapters-sqs   (JOBS=20000, ROUNDS=3 by default; ONLY=chunkwise,
 * batches or sqs-consumer runs those contenders alone, for profiling)
 */
import { SQSClient } from "@aws-sdk/client-sqs"
import type { Errors, QueueAdapter } from "@chunkwise/core"
import * as QueueBench from "@chunkwise/testing/QueueBench"
import { Effect, Layer, Logger, LogLevel, Redacted } from "effect"
import { buildApp } from "fauxqs"
import type { AddressInfo } from "node:net"
import { Consumer } from "sqs-consumer"
import { SqsQueue } from "../src/index.js"

process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] = "true"

const JOBS = Number(process.env["JOBS"] ?? 20_000)
const ROUNDS = Number(process.env["ROUNDS"] ?? 3)
const ONLY = process.env["ONLY"]
const region = "us-east-1"
const credentials = { accessKeyId: "bench", secretAccessKey: Redacted.make("bench") }
let queues = 0
/** SQS requests the emulator served, to report requests per message for each contender. */
let served = 0
/** The process's CPU time in µs (emulator and contender share the process, as they share the machine). */
const cpu = () => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}
interface Drained {
  readonly rate: number
  /** `served` and `cpu()` when the drain began. */
  readonly from: number
  readonly cpuFrom: number
}
/** Runs a drain and returns its rate with the SQS requests and the CPU time per message it took. */
const measured = <E, R>(drain: Effect.Effect<Drained, E, R>) =>
  Effect.map(drain, ({ cpuFrom, from, rate }) => ({
    rate,
    perMessage: (served - from) / JOBS,
    cpuPerMessage: (cpu() - cpuFrom) / JOBS
  }))

interface Case {
  readonly concurrency: number
  readonly handlerMs: number
}
const cases: ReadonlyArray<Case> = [
  { concurrency: 16, handlerMs: 0 },
  { concurrency: 16, handlerMs: 2 },
  { concurrency: 64, handlerMs: 2 }
]

type Result = Effect.Effect.Success<ReturnType<typeof measured>>
/** The median round of each figure (taken one by one). */
const medianRound = (results: ReadonlyArray<Result>): Result => ({
  rate: QueueBench.median(results.map((result) => result.rate)),
  perMessage: QueueBench.median(results.map((result) => result.perMessage)),
  cpuPerMessage: QueueBench.median(results.map((result) => result.cpuPerMessage))
})
/** Ratios of the rounds: the median, then every round's in order, e.g. `1.12x (1.05 1.12 1.20)`. */
const range = (ratios: ReadonlyArray<number>) =>
  `${QueueBench.median(ratios).toFixed(2)}x (${ratios.map((ratio) => ratio.toFixed(2)).join(" ")})`
const seconds = (start: number) => (performance.now() - start) / 1000
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A fresh queue (and dead-letter queue) filled with JOBS messages; returns its layer options and URL. */
const filled = (endpoint: string) =>
  Effect.gen(function*() {
    const name = `bench-${Date.now().toString(36)}-${queues++}`
    const connection: SqsQueue.ConnectionOptions = { endpoint, region, credentials }
    const { queueUrl } = yield* Effect.flatMap(SqsQueue.makeClient(connection), (client) =>
      SqsQueue.ensureQueue(client, { name })).pipe(Effect.scoped)
    const options: SqsQueue.Options = { ...connection, queue: queueUrl }
    yield* QueueBench.fill(JOBS).pipe(Effect.scoped, Effect.provide(SqsQueue.layer(options)))
    return { options, queueUrl }
  })

/** chunkwise on a fresh filled queue: `drain` (given the handler) is timed, with the requests and CPU it took. */
const onChunkwise = (
  endpoint: string,
  drain: (
    handler: Effect.Effect<void>
  ) => Effect.Effect<number, Errors.QueueUnavailable, QueueAdapter.QueueAdapter>,
  handlerMs: number
) =>
  Effect.gen(function*() {
    const { options } = yield* filled(endpoint)
    return yield* Effect.gen(function*() {
      const from = served
      const cpuFrom = cpu()
      const ms = yield* drain(handlerMs > 0 ? Effect.sleep(handlerMs) : Effect.void)
      return { rate: JOBS / (ms / 1000), from, cpuFrom }
    }).pipe(Effect.scoped, Effect.provide(SqsQueue.layer(options)))
  })

/**
 * chunkwise, received the way the Worker receives: one loop asks for as many messages as it has free
 * slots (the concurrency in all; SqsQueue runs one ReceiveMessage per 10, up to 4 at once), each
 * message is handled and then acked in its own fiber (SqsQueue coalesces the acks into
 * DeleteMessageBatch calls).
 */
const chunkwise = (endpoint: string, { concurrency, handlerMs }: Case) =>
  onChunkwise(endpoint, (handler) => QueueBench.drain({ messages: JOBS, concurrency, handler }), handlerMs)

/**
 * chunkwise consumed in batches, the way `handleMessageBatch` consumes: ceil(concurrency / 10) loops each
 * receive up to 10 messages, handle them at once, ack them in one call (one DeleteMessageBatch) and
 * receive again.
 */
const chunkwiseBatches = (endpoint: string, { concurrency, handlerMs }: Case) =>
  onChunkwise(
    endpoint,
    (handler) =>
      QueueBench.drainBatches({ messages: JOBS, consumers: Math.ceil(concurrency / 10), batchSize: 10, handler }),
    handlerMs
  )

/**
 * sqs-consumer 14: a Consumer polls ReceiveMessage for `batchSize` (at most 10) messages, handles them
 * concurrently and polls again when all are done; it has no concurrency setting, so concurrency N runs
 * ceil(N / 10) consumers with batchSize 10 (up to 20 or 70 in flight: a little more than N). `batch`
 * uses handleMessageBatch (one DeleteMessageBatch per batch), otherwise handleMessage (one DeleteMessage
 * per message, its default). All consumers share one SQSClient with the SDK's defaults.
 */
const sqsConsumer = (endpoint: string, { concurrency, handlerMs }: Case, batch: boolean) =>
  Effect.gen(function*() {
    const { queueUrl } = yield* filled(endpoint)
    const client = new SQSClient({
      endpoint,
      region,
      credentials: {
        accessKeyId: credentials.accessKeyId,
        secretAccessKey: Redacted.value(credentials.secretAccessKey)
      }
    })
    return yield* Effect.promise(async () => {
      let done = 0
      let resolveDone: () => void = () => {}
      const finished = new Promise<void>((resolve) => (resolveDone = resolve))
      const handle = async () => {
        if (handlerMs > 0) await sleep(handlerMs)
      }
      const count = (n: number) => {
        done += n
        if (done >= JOBS) resolveDone()
      }
      const consumers = Array.from({ length: Math.ceil(concurrency / 10) }, () =>
        Consumer.create({
          queueUrl,
          sqs: client,
          batchSize: 10,
          waitTimeSeconds: 1,
          visibilityTimeout: 60,
          ...(batch
            ? {
              handleMessageBatch: async (messages) => {
                await Promise.all(messages.map(handle))
                count(messages.length)
                return messages
              }
            }
            : {
              handleMessage: async (message) => {
                await handle()
                count(1)
                return message
              }
            })
        }))
      for (const consumer of consumers) consumer.on("error", () => {})
      const from = served
      const cpuFrom = cpu()
      const start = performance.now()
      for (const consumer of consumers) consumer.start()
      await finished
      const rate = JOBS / seconds(start)
      for (const consumer of consumers) consumer.stop({ abort: true })
      client.destroy()
      return { rate, from, cpuFrom }
    })
  })

const main = Effect.gen(function*() {
  const app = buildApp({ logger: false })
  app.addHook("onRequest", (_request, _reply, done) => {
    served += 1
    done()
  })
  yield* Effect.acquireRelease(
    Effect.promise(() => app.listen({ port: 0, host: "127.0.0.1" })),
    () => Effect.promise(() => app.close())
  )
  const endpoint = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  console.log(`SQS queue throughput: ${JOBS} messages per contender, fauxqs ${endpoint} (draining a backlog)`)
  console.log(
    `  chunkwise SqsQueue, per message: one receive loop asking for the free slots, a fiber and an ack per message`
  )
  console.log(
    `  chunkwise SqsQueue, batches: ceil(concurrency / 10) loops, receive 10, handle all, ack all in one call`
  )
  console.log(`  sqs-consumer 14: ceil(concurrency / 10) consumers, batchSize 10, waitTimeSeconds 1\n`)
  const row = (name: string, result: Result, ratios?: ReadonlyArray<number>) =>
    `  ${name.padEnd(44)} ${result.rate.toFixed(0).padStart(6)} jobs/s  ${result.perMessage.toFixed(2)} req/msg  ` +
    `${result.cpuPerMessage.toFixed(0).padStart(4)} µs CPU/msg` +
    (ratios === undefined ? "" : `   chunkwise ${range(ratios)}`)
  const runs = (name: "chunkwise" | "batches" | "sqs-consumer") => ONLY === undefined || ONLY === name
  // Warm-up: one unmeasured drain per contender, so the first measured case does not pay for the JIT.
  if (runs("chunkwise")) yield* chunkwise(endpoint, cases[0]!)
  if (runs("batches")) yield* chunkwiseBatches(endpoint, cases[0]!)
  if (runs("sqs-consumer")) {
    yield* sqsConsumer(endpoint, cases[0]!, false)
    yield* sqsConsumer(endpoint, cases[0]!, true)
  }
  for (const c of cases) {
    console.log(`${c.handlerMs === 0 ? "no-op" : `${c.handlerMs} ms`} handler, concurrency ${c.concurrency}`)
    const consumers = Math.ceil(c.concurrency / 10)
    const contenders = [
      { name: "chunkwise SqsQueue, per message", runs: runs("chunkwise"), drain: chunkwise(endpoint, c) },
      {
        name: `sqs-consumer handleMessage (${consumers}x10)`,
        runs: runs("sqs-consumer"),
        drain: sqsConsumer(endpoint, c, false)
      },
      {
        name: `chunkwise SqsQueue, batches (${consumers}x10)`,
        runs: runs("batches"),
        drain: chunkwiseBatches(endpoint, c)
      },
      {
        name: `sqs-consumer handleMessageBatch (${consumers}x10)`,
        runs: runs("sqs-consumer"),
        drain: sqsConsumer(endpoint, c, true)
      }
    ]
    const results: Array<Array<Result>> = contenders.map(() => [])
    for (let round = 0; round < ROUNDS; round++) {
      // Alternated: each contender goes first in some rounds, so a drift in the machine's load falls on all.
      const order = contenders.map((_, k) => k)
      if (round % 2 === 1) order.reverse()
      for (const k of order) if (contenders[k]!.runs) results[k]!.push(yield* measured(contenders[k]!.drain))
    }
    // Each sqs-consumer row against the chunkwise row above it: per round, then the medians.
    for (const [k, contender] of contenders.entries()) {
      if (!contender.runs) continue
      const mine = results[k]!
      const chunkwiseRounds = k % 2 === 1 ? results[k - 1]! : []
      const ratios = chunkwiseRounds.length === mine.length
        ? mine.map((result, r) => chunkwiseRounds[r]!.rate / result.rate)
        : undefined
      console.log(row(contender.name, medianRound(mine), ratios))
    }
    console.log("")
  }
}).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Error), Effect.provide(Layer.empty))

Effect.runPromise(main).then(() => process.exit(0)).catch((e) => {
  console.error(e)
  process.exit(1)
})
