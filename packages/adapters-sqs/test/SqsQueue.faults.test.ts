import { SqsQueue } from "@chunkwise/adapters-sqs"
import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Schedule } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Emulator from "./emulator.js"
import * as Proxy from "./proxy.js"

// The adapter under test talks to SQS through a proxy that throttles, fails, loses replies and resets
// connections; the checks read the emulator directly, through a second adapter without faults.
let emulator: Emulator.Emulator
let proxy: Proxy.Proxy
beforeAll(async () => {
  emulator = await Emulator.start()
  proxy = await Proxy.start(emulator.endpoint, { seed: 20_261_123 })
})
afterAll(async () => {
  await proxy.stop()
  await emulator.stop()
})

/** Two adapters on one fresh queue: `direct` to the emulator, `troubled` through the proxy. */
const adapters = (options: Partial<SqsQueue.QueueOptions> = {}) =>
  Effect.gen(function*() {
    const name = Emulator.freshName("faults")
    const direct = yield* Effect.flatMap(
      SqsQueue.makeClient(Emulator.connection(emulator.endpoint)),
      (client) => SqsQueue.make(client, { queue: name, ensureQueue: true })
    )
    const troubled = yield* Effect.flatMap(
      SqsQueue.makeClient(Emulator.connection(proxy.endpoint)),
      (client) => SqsQueue.make(client, { queue: name, ...options })
    )
    return { direct, troubled }
  })

/** Everything still in the queue, in flight or dead. */
const leftIn = (queue: QueueAdapter.QueueAdapterShape) =>
  Effect.map(queue.depth, (d) => d.ready + d.inFlight + d.delayed + d.dead)

describe("SqsQueue under broker trouble", () => {
  it.live(
    "1,000 messages through throttling, 5xx, lost replies and resets: every one is processed and acked, the queue ends empty",
    () =>
      Effect.gen(function*() {
        const { direct, troubled } = yield* adapters()
        proxy.faults = { throttle: 0.12, serverError: 0.06, replyLost: 0.04, reset: 0.02, entryFailure: 0.15 }
        const before = { ...proxy.counts }
        const total = 1000
        const bodies = Array.from({ length: total }, (_, i) => JSON.stringify({ n: i }))
        // A send that still fails after the adapter's retries is sent again (as the feeder would).
        for (let i = 0; i < total; i += 100) {
          yield* troubled.send(bodies.slice(i, i + 100).map((body) => ({ body }))).pipe(
            Effect.retry(Schedule.spaced("100 millis"))
          )
        }

        const processed = new Map<string, number>()
        const acked = new Set<string>()
        // Consumers as the Worker runs them: back off when receiving fails; a failed ack means redelivery.
        const consumer = Effect.forever(
          Effect.gen(function*() {
            const got = yield* troubled.receive({ max: 10, visibilityMs: 2000, waitMs: 1000 }).pipe(
              Effect.catchTag("QueueUnavailable", () => Effect.as(Effect.sleep("200 millis"), []))
            )
            yield* Effect.forEach(got, (delivery) =>
              Effect.gen(function*() {
                processed.set(delivery.body, (processed.get(delivery.body) ?? 0) + 1)
                const ok = yield* troubled.ack([delivery.receipt]).pipe(
                  Effect.as(true),
                  Effect.catchTag("QueueUnavailable", () => Effect.succeed(false))
                )
                if (ok) acked.add(delivery.body)
              }), { concurrency: "unbounded" })
          })
        )
        const consumers = yield* Effect.forkAll(Array.from({ length: 4 }, () => consumer))
        // Done when every message was acked and the emulator holds nothing (duplicates from lost replies included).
        yield* Effect.gen(function*() {
          while (acked.size < total || (yield* leftIn(direct)) > 0) yield* Effect.sleep("500 millis")
        }).pipe(Effect.timeout("150 seconds"))
        yield* Fiber.interrupt(consumers)
        proxy.faults = Proxy.none

        expect(acked.size).toBe(total)
        expect(bodies.every((body) => processed.has(body))).toBe(true)
        expect(yield* direct.depth).toMatchObject({ ready: 0, inFlight: 0, delayed: 0, dead: 0 })
        // The trouble really happened, of every kind.
        const counts = proxy.counts
        expect(counts.throttled - before.throttled).toBeGreaterThan(20)
        expect(counts.serverErrors - before.serverErrors).toBeGreaterThan(10)
        expect(counts.repliesLost - before.repliesLost).toBeGreaterThan(5)
        expect(counts.resets - before.resets).toBeGreaterThan(2)
        expect(counts.entryFailures - before.entryFailures).toBeGreaterThan(5)
      }).pipe(Effect.scoped),
    180_000
  )

  it.live(
    "batch calls retry only their failed entries: nothing lost, nothing sent or deleted twice",
    () =>
      Effect.gen(function*() {
        const { direct, troubled } = yield* adapters()
        proxy.faults = { ...Proxy.none, entryFailure: 1 }
        const sendsBefore = proxy.actions.get("SendMessageBatch") ?? 0
        const bodies = Array.from({ length: 95 }, (_, i) => `m${i}`)
        yield* troubled.send(bodies.map((body) => ({ body })))
        // 10 batches, each with one entry held back and sent again alone.
        expect((proxy.actions.get("SendMessageBatch") ?? 0) - sendsBefore).toBeGreaterThanOrEqual(20)

        const seen: Array<string> = []
        for (let empty = 0; empty < 2;) {
          const got = yield* troubled.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
          if (got.length === 0) empty += 1
          seen.push(...got.map((d) => d.body))
          yield* troubled.ack(got.map((d) => d.receipt))
        }
        proxy.faults = Proxy.none
        // Every message exactly once: a retry that re-sent a delivered entry would show here twice.
        expect(seen.sort()).toEqual([...bodies].sort())
        expect(yield* leftIn(direct)).toBe(0)
      }).pipe(Effect.scoped),
    120_000
  )

  it.live(
    "a call that keeps failing ends in QueueUnavailable naming the operation and the vendor code",
    () =>
      Effect.gen(function*() {
        const { troubled } = yield* adapters({ retry: { times: 2, base: "10 millis" } })
        proxy.faults = { ...Proxy.none, throttle: 1 }
        const throttled = yield* Effect.flip(troubled.send([{ body: "x" }]))
        proxy.faults = { ...Proxy.none, serverError: 1 }
        const failing = yield* Effect.flip(troubled.receive({ max: 1, visibilityMs: 1000, waitMs: 0 }))
        proxy.faults = Proxy.none
        expect(throttled._tag).toBe("QueueUnavailable")
        expect(throttled.message).toMatch(/^SQS send on faults-.* failed: (ThrottlingException|RequestThrottled)/)
        expect(throttled.message).toMatch(/HTTP 400\) after 3 attempts/)
        expect(failing._tag).toBe("QueueUnavailable")
        expect(failing.message).toMatch(/(InternalError \(HTTP 500\)|ServiceUnavailable \(HTTP 503\)) after 3 attempts/)
      }).pipe(Effect.scoped),
    60_000
  )
})
