/**
 * Queue benchmarks, consumed the way the chunkwise Worker consumes: one loop receives as many messages
 * as it has free slots, waits for a slot to free when all are busy, and handles and acks each message
 * in its own fiber. Every driver's benchmark (Postgres, Redis, SQS) drives its queue with this, so the
 * figures compare drivers, not consumer loops. Import it as `@chunkwise/testing/QueueBench`: the
 * package's main entry loads vitest, which a benchmark script does not run under.
 *
 * @since 0.1.0
 */
import { type Errors, QueueAdapter } from "@chunkwise/core"
import { Deferred, Effect, FiberSet, Queue } from "effect"

/** Dies with a message naming the option when it is not a whole number of at least 1. */
const requireCount = <O extends object>(
  fn: string,
  options: O,
  names: ReadonlyArray<keyof O & string>
): Effect.Effect<void> =>
  Effect.suspend(() => {
    for (const name of names) {
      const value: unknown = options[name]
      if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
        return Effect.die(
          new TypeError(`QueueBench.${fn}: ${name} must be a whole number of at least 1 (got ${value})`)
        )
      }
    }
    return Effect.void
  })

/**
 * The median of a benchmark's rounds: the middle value, the upper of the two middle ones when their
 * number is even, NaN when there are none.
 */
export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? Number.NaN : sorted[Math.floor(sorted.length / 2)]!
}

/** Sends `messages` small JSON bodies (`{"n":i}`), 1,000 per call: the backlog a benchmark drains. */
export const fill = (
  messages: number
): Effect.Effect<void, Errors.QueueUnavailable | Errors.MessageRejected, QueueAdapter.QueueAdapter> =>
  Effect.flatMap(QueueAdapter.QueueAdapter, (queue) =>
    Effect.forEach(
      Array.from({ length: Math.ceil(messages / 1000) }, (_, k) => k * 1000),
      (from) =>
        queue.send(Array.from({ length: Math.min(1000, messages - from) }, (_, j) => ({ body: `{"n":${from + j}}` }))),
      { discard: true }
    ))

/** Options every drain takes. */
export interface DrainCommonOptions {
  /** Messages to handle; the drain ends with the ack of the last one. */
  readonly messages: number
  /** What handling one message costs (e.g. `Effect.sleep(2)`); acked after it. */
  readonly handler: Effect.Effect<void>
  /** Long-poll wait of one receive (default 1 s). */
  readonly waitMs?: number | undefined
}

/** What a consumer gets from `timedDrain`. */
interface DrainTools {
  readonly queue: QueueAdapter.QueueAdapterShape
  /** Where handler fibers run: interrupted when the drain ends. */
  readonly handlers: FiberSet.FiberSet
  /** One receive of up to `max` messages, with the drain's visibility and long-poll wait. */
  readonly receive: (max: number) => Effect.Effect<ReadonlyArray<QueueAdapter.Delivery>, Errors.QueueUnavailable>
  /** Counts `n` messages acked; the drain ends when they reach `messages`. */
  readonly acked: (n: number) => Effect.Effect<void>
}

/**
 * Runs `consume` until `messages` messages were acked; returns the milliseconds from the start to the
 * last ack (a consumer's final receive, waiting for work that will not come, is not the queue's time).
 */
const timedDrain = (
  options: DrainCommonOptions,
  consume: (tools: DrainTools) => Effect.Effect<unknown, Errors.QueueUnavailable>
): Effect.Effect<number, Errors.QueueUnavailable, QueueAdapter.QueueAdapter> =>
  Effect.scoped(Effect.gen(function*() {
    const queue = yield* QueueAdapter.QueueAdapter
    const handlers = yield* FiberSet.make()
    const drained = yield* Deferred.make<void>()
    let done = 0
    let end = 0
    const start = performance.now()
    const receive = (max: number) => queue.receive({ max, visibilityMs: 60_000, waitMs: options.waitMs ?? 1000 })
    const acked = (n: number) =>
      Effect.suspend(() => {
        done += n
        if (done < options.messages || end !== 0) return Effect.void
        end = performance.now()
        return Deferred.succeed(drained, undefined)
      })
    yield* Effect.raceFirst(consume({ queue, handlers, receive, acked }), Deferred.await(drained))
    return end - start
  }))

/** Options of `drain`. */
export interface DrainOptions extends DrainCommonOptions {
  /** Messages handled at once. */
  readonly concurrency: number
}

/**
 * Receives, handles and acks `messages` messages; returns the milliseconds from the start to the last
 * ack (the loop's final receive, waiting for work that will not come, is not the queue's time).
 */
export const drain = (
  options: DrainOptions
): Effect.Effect<number, Errors.QueueUnavailable, QueueAdapter.QueueAdapter> =>
  Effect.zipRight(
    requireCount("drain", options, ["messages", "concurrency"]),
    timedDrain(options, ({ acked, handlers, queue, receive }) =>
      Effect.gen(function*() {
        const slotFreed = yield* Queue.sliding<void>(1)
        let inflight = 0
        while (true) {
          if (inflight >= options.concurrency) {
            yield* Queue.take(slotFreed)
            continue
          }
          const got = yield* receive(options.concurrency - inflight)
          for (const delivery of got) {
            inflight += 1
            yield* FiberSet.run(
              handlers,
              options.handler.pipe(
                Effect.zipRight(queue.ack([delivery.receipt])),
                Effect.ensuring(Effect.suspend(() => {
                  inflight -= 1
                  return Effect.zipRight(acked(1), Queue.offer(slotFreed, undefined))
                }))
              )
            )
          }
        }
      }))
  )

/** Options of `drainBatches`: a batch's messages are handled at once, then acked in one call. */
export interface DrainBatchesOptions extends DrainCommonOptions {
  /** Consumer loops, each with one batch at a time. */
  readonly consumers: number
  /** Messages one receive asks for: a batch. */
  readonly batchSize: number
}

/**
 * Receives, handles and acks `messages` messages in batches, the way a batch consumer does (such as
 * sqs-consumer's `handleMessageBatch`): `consumers` loops each receive up to `batchSize` messages,
 * handle them all at once, ack them in one call and receive again. The queue is the same, the
 * consumption is another: compare it with a batch consumer, and `drain` with a per-message one.
 * Returns the milliseconds from the start to the last ack.
 */
export const drainBatches = (
  options: DrainBatchesOptions
): Effect.Effect<number, Errors.QueueUnavailable, QueueAdapter.QueueAdapter> =>
  Effect.zipRight(
    requireCount("drainBatches", options, ["messages", "consumers", "batchSize"]),
    timedDrain(options, ({ acked, handlers, queue, receive }) =>
      Effect.gen(function*() {
        // A batch's handlers run in the fiber set, as `drain`'s do: forked without a parent to report to,
        // by a runner made once, and counted down as they end. Ten at a time that costs 2 µs of CPU a
        // message against 10-14 for `FiberSet.run` and `Fiber.awaitAll` (each fork copies the calling
        // fiber's refs, each await adds a fiber of its own), and 17 for `Effect.forEach` with unbounded
        // concurrency.
        const fork = yield* FiberSet.runtime(handlers)<never>()
        const handleAll = (count: number) =>
          Effect.async<void>((resume) => {
            let left = count
            const ended = () => {
              if (--left === 0) resume(Effect.void)
            }
            for (let i = 0; i < count; i++) fork(options.handler).addObserver(ended)
          })
        const consumer = Effect.forever(Effect.gen(function*() {
          const got = yield* receive(options.batchSize)
          if (got.length === 0) return
          yield* handleAll(got.length)
          yield* queue.ack(got.map((delivery) => delivery.receipt))
          yield* acked(got.length)
        }))
        return yield* Effect.forEach(Array.from({ length: options.consumers }), () => consumer, {
          concurrency: "unbounded",
          discard: true
        })
      }))
  )
