/**
 * Queue throughput on one SQS emulator (fauxqs, in-process on a loopback port): chunkwise's SqsQueue
 * against sqs-consumer, the same JOBS messages per contender, in one run (D20: queues alone, send →
 * receive → handle → ack). Three cases: no-op handler at concurrency 16, a 2 ms handler at 16 and at
 * 64. Each consumption is compared with its like: chunkwise consumed the Worker's way (a fiber and an
 * ack per message) with sqs-consumer's `handleMessage` (a handler and a delete per message), and
 * chunkwise consumed in batches of 10 (receive, handle all, ack all in one call) with sqs-consumer's
 * `handleMessageBatch`. Prints jobs per second for draining an enqueued backlog, and the ratios.
 * Run: npm run bench -w packages/adapters-sqs   (JOBS=20000 by default; ONLY=chunkwise, batches or
 * sqs-consumer runs those contenders alone, for profiling)
 */
import { SQSClient } from "@aws-sdk/client-sqs"
import type { Errors, QueueAdapter } from "@chunkwise/core"
import * as QueueBench from "@chunkwise/testing/QueueBench"
import { Effect, Fiber, FiberSet, Layer, Logger, LogLevel, Redacted } from "effect"
import { buildApp } from "fauxqs"
import type { AddressInfo } from "node:net"
import { Consumer } from "sqs-consumer"
import { SqsQueue } from "../src/index.js"

process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] = "true"

const JOBS = Number(process.env["JOBS"] ?? 20_000)
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

/**
 * CPU per message of the 2 ms handler alone, as each side runs it: chunkwise's in a fiber per message
 * (`Effect.sleep`, forked into a fiber set as the drains fork it), sqs-consumer's as a promise over
 * `setTimeout`; JOBS messages in batches of 10, 7 batches at once, no queue.
 */
const handlerCost = Effect.gen(function*() {
  const batches = Array.from({ length: Math.ceil(JOBS / 10) })
  const ten = Array.from({ length: 10 })
  const effectFrom = cpu()
  yield* Effect.scoped(Effect.flatMap(FiberSet.make(), (handlers) =>
    Effect.forEach(
      batches,
      () => Effect.flatMap(Effect.forEach(ten, () => FiberSet.run(handlers, Effect.sleep(2))), Fiber.awaitAll),
      { concurrency: 7, discard: true }
    )))
  const effect = (cpu() - effectFrom) / JOBS
  const promiseFrom = cpu()
  yield* Effect.promise(async () => {
    for (let i = 0; i < batches.length; i += 7) {
      await Promise.all(Array.from({ length: 7 }, () => Promise.all(ten.map(() => sleep(2)))))
    }
  })
  return { effect, promise: (cpu() - promiseFrom) / JOBS }
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
  const row = (
    name: string,
    result: { readonly rate: number; readonly perMessage: number; readonly cpuPerMessage: number },
    base?: number
  ) =>
    `  ${name.padEnd(44)} ${result.rate.toFixed(0).padStart(6)} jobs/s  ${result.perMessage.toFixed(2)} req/msg  ` +
    `${result.cpuPerMessage.toFixed(0).padStart(4)} µs CPU/msg` +
    (base === undefined ? "" : `   chunkwise ${(base / result.rate).toFixed(2)}x`)
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
    const perMessage = runs("chunkwise") ? yield* measured(chunkwise(endpoint, c)) : undefined
    if (perMessage !== undefined) console.log(row("chunkwise SqsQueue, per message", perMessage))
    if (runs("sqs-consumer")) {
      const single = yield* measured(sqsConsumer(endpoint, c, false))
      console.log(row(`sqs-consumer handleMessage (${consumers}x10)`, single, perMessage?.rate))
    }
    const batches = runs("batches") ? yield* measured(chunkwiseBatches(endpoint, c)) : undefined
    if (batches !== undefined) console.log(row(`chunkwise SqsQueue, batches (${consumers}x10)`, batches))
    if (runs("sqs-consumer")) {
      const batched = yield* measured(sqsConsumer(endpoint, c, true))
      console.log(row(`sqs-consumer handleMessageBatch (${consumers}x10)`, batched, batches?.rate))
    }
    console.log("")
  }
  if (ONLY === undefined) {
    // The 2 ms handlers alone, no queue: what running each message's handler costs each side.
    const handlers = yield* handlerCost
    console.log(`the 2 ms handler alone, ${JOBS} messages in batches of 10, 7 at once (no queue):`)
    console.log(`  Effect.sleep in a fiber per message       ${handlers.effect.toFixed(0).padStart(4)} µs CPU/msg`)
    console.log(`  a promise over setTimeout per message     ${handlers.promise.toFixed(0).padStart(4)} µs CPU/msg`)
  }
}).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Error), Effect.provide(Layer.empty))

Effect.runPromise(main).then(() => process.exit(0)).catch((e) => {
  console.error(e)
  process.exit(1)
})
