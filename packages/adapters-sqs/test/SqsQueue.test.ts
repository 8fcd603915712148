import { SqsQueue } from "@chunkwise/adapters-sqs"
import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Emulator from "./emulator.js"
import * as Proxy from "./proxy.js"

// What the adapter itself promises beyond the conformance suite. The adapter talks through a proxy
// without faults that records requests, so a check can see what reached SQS and what did not.
let emulator: Emulator.Emulator
let proxy: Proxy.Proxy
beforeAll(async () => {
  emulator = await Emulator.start()
  proxy = await Proxy.start(emulator.endpoint, { seed: 1 })
})
afterAll(async () => {
  await proxy.stop()
  await emulator.stop()
})

const sqs = <A, E>(effect: Effect.Effect<A, E, QueueAdapter.QueueAdapter>, options: Partial<SqsQueue.Options> = {}) =>
  Effect.suspend(() =>
    effect.pipe(
      Effect.provide(
        SqsQueue.layer({
          ...Emulator.connection(proxy.endpoint),
          queue: Emulator.freshName("sqs"),
          ensureQueue: true,
          ...options
        })
      )
    )
  )

/** Runs `effect` and returns the requests it sent, by action. */
const recorded = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      proxy.requests.length = 0
      proxy.record = true
    }),
    () => Effect.map(effect, (value) => ({ value, requests: [...proxy.requests] })),
    () => Effect.sync(() => (proxy.record = false))
  )
const calls = (requests: ReadonlyArray<Proxy.Proxy["requests"][number]>, action: string) =>
  requests.filter((r) => r.action === action)

describe("SqsQueue", () => {
  it.live(
    "a receive of more than 10 interrupted mid-round gives back what its finished call got, not only its call in flight",
    () =>
      sqs(
        Effect.gen(function*() {
          const queue = yield* QueueAdapter.QueueAdapter
          const bodies = ["m1", "m2", "m3", "m4", "m5"]
          yield* queue.send(bodies.map((body) => ({ body })))
          // The round's long poll waits at the proxy; its other call takes the five at once and returns.
          proxy.holdLongPollsMs = 1500
          const receiving = yield* Effect.fork(queue.receive({ max: 20, visibilityMs: 60_000, waitMs: 1000 }))
          yield* Effect.sleep("500 millis")
          yield* Fiber.interrupt(receiving)
          proxy.holdLongPollsMs = 0
          // Given back once the round ends (about 2.5 s), long before their 60 s visibility would.
          const again: Array<string> = []
          const deadline = Date.now() + 8000
          while (again.length < bodies.length && Date.now() < deadline) {
            const got = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
            again.push(...got.map((d) => d.body))
          }
          expect(again.sort()).toEqual(bodies)
        }).pipe(Effect.ensuring(Effect.sync(() => (proxy.holdLongPollsMs = 0)))),
        { prefetch: false }
      ),
    60_000
  )

  it.live(
    "never sends a stale receipt: an ack after release reaches no SQS call and leaves the new delivery alone",
    () =>
      sqs(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "once" }])
        const [first] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        yield* queue.release(first!.receipt, 0)
        const [second] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        expect(second!.receiveCount).toBe(2)
        const { requests } = yield* recorded(Effect.zipRight(
          queue.ack([first!.receipt]),
          queue.extend([first!.receipt], 60_000)
        ))
        expect(requests).toEqual([])
        expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 1 })
        yield* queue.ack([second!.receipt])
        expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 0 })
      })),
    60_000
  )

  it.live(
    "a delivery whose visibility ran out is not deleted by its late ack, even where SQS would still take the handle",
    () =>
      sqs(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "late" }])
        const [first] = yield* queue.receive({ max: 1, visibilityMs: 1000, waitMs: 1000 })
        yield* Effect.sleep("1500 millis")
        // Nobody received it again yet; SQS may still accept the old handle. The ack must not send it.
        const { requests } = yield* recorded(queue.ack([first!.receipt]))
        expect(calls(requests, "DeleteMessageBatch")).toEqual([])
        const [again] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        expect(again!.body).toBe("late")
        expect(again!.receiveCount).toBe(2)
        yield* queue.ack([again!.receipt])
      })),
    60_000
  )

  it.live(
    "an ack sent within a tenth of the visibility of its deadline never reaches SQS (room for its flight)",
    () =>
      sqs(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "close call" }])
        const [first] = yield* queue.receive({ max: 1, visibilityMs: 10_000, waitMs: 1000 })
        // 0.8 s before SQS could hand it out again: a slow request could land after that.
        yield* Effect.sleep("9200 millis")
        const { requests } = yield* recorded(queue.ack([first!.receipt]))
        expect(calls(requests, "DeleteMessageBatch")).toEqual([])
      })),
    60_000
  )

  it.live(
    "rounds visibility and long-poll waits up to whole seconds, and asks for at most 10 per call",
    () =>
      sqs(
        Effect.gen(function*() {
          const queue = yield* QueueAdapter.QueueAdapter
          yield* queue.send(Array.from({ length: 35 }, (_, i) => ({ body: `m${i}` })))
          const { requests, value } = yield* recorded(queue.receive({ max: 35, visibilityMs: 1200, waitMs: 300 }))
          const receives = calls(requests, "ReceiveMessage").map((r) => r.body)
          expect(receives.map((b) => b["MaxNumberOfMessages"])).toEqual([10, 10, 10, 5])
          expect(receives.every((b) => b["VisibilityTimeout"] === 2)).toBe(true)
          // The first call long-polls; the others take what is there.
          expect(receives.map((b) => b["WaitTimeSeconds"])).toEqual([1, 0, 0, 0])
          expect(value.length).toBeGreaterThan(0)
          expect(value.length).toBeLessThanOrEqual(35)
          yield* queue.ack(value.map((d) => d.receipt))
        }),
        { receiveConcurrency: 4 }
      ),
    60_000
  )

  it.live(
    "splits a send by size: ten 100 KiB bodies go out in batches within 256 KiB, and all arrive",
    () =>
      sqs(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const bodies = Array.from({ length: 10 }, (_, i) => `${i}`.padEnd(100 * 1024, "x"))
        const { requests } = yield* recorded(queue.send(bodies.map((body) => ({ body }))))
        const sends = calls(requests, "SendMessageBatch")
        expect(sends.map((s) => (s.body["Entries"] as Array<unknown>).length)).toEqual([2, 2, 2, 2, 2])
        const got: Array<string> = []
        while (got.length < 10) {
          const batch = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
          got.push(...batch.map((d) => d.body))
          yield* queue.ack(batch.map((d) => d.receipt))
        }
        expect(got.sort()).toEqual([...bodies].sort())
      })),
    60_000
  )

  it.live(
    "rejects a body SQS would refuse before sending anything, naming the message and the problem",
    () =>
      sqs(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const { requests, value: error } = yield* recorded(
          Effect.flip(queue.send([{ body: "fine" }, { body: "bad\u0000byte" }]))
        )
        expect(error._tag).toBe("MessageRejected")
        expect(error.message).toMatch(/message 2 of 2 .* holds U\+0000 at index 3/)
        const empty = yield* Effect.flip(queue.send([{ body: "" }]))
        expect(empty.message).toMatch(/the body is empty/)
        const big = yield* Effect.flip(queue.send([{ body: "x".repeat(262_145) }]))
        expect(big.message).toMatch(/it is 262145 bytes; the queue accepts at most 262144 bytes/)
        expect(requests).toEqual([])
      })),
    60_000
  )

  it.live("extend past SQS's 12 hours is clamped, not refused", () =>
    sqs(Effect.gen(function*() {
      const queue = yield* QueueAdapter.QueueAdapter
      yield* queue.send([{ body: "long" }])
      const [delivery] = yield* queue.receive({ max: 1, visibilityMs: 5000, waitMs: 1000 })
      const { requests } = yield* recorded(queue.extend([delivery!.receipt], 13 * 3_600_000))
      const [change] = calls(requests, "ChangeMessageVisibilityBatch")
      const seconds = (change!.body["Entries"] as Array<{ VisibilityTimeout: number }>)[0]!.VisibilityTimeout
      expect(seconds).toBeLessThanOrEqual(43_200 - 60)
      expect(seconds).toBeGreaterThan(43_000)
      // The receipt is still current: the ack deletes the message.
      yield* queue.ack([delivery!.receipt])
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 0 })
    })), 60_000)

  it.live(
    "deadLetters lists without taking; redrive by id moves only the named dead letter",
    () =>
      sqs(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "one" }, { body: "two" }])
        const got = yield* queue.receive({ max: 2, visibilityMs: 30_000, waitMs: 1000 })
        expect(got).toHaveLength(2)
        for (const d of got) yield* queue.deadLetter(d.receipt, `UnknownJob: ${d.body}`)
        const listed = yield* queue.deadLetters({ limit: 10 })
        expect(listed.map((d) => [d.body, d.reason]).sort()).toEqual([["one", "UnknownJob: one"], [
          "two",
          "UnknownJob: two"
        ]])
        expect(yield* queue.deadLetters({ limit: 10 })).toHaveLength(2)
        expect(yield* queue.deadLetters({ limit: 1 })).toHaveLength(1)
        const one = listed.find((d) => d.body === "one")!
        expect(yield* queue.redrive({ messageIds: [one.messageId] })).toBe(1)
        expect((yield* queue.deadLetters({ limit: 10 })).map((d) => d.body)).toEqual(["two"])
        const [back] = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
        expect(back!.body).toBe("one")
        expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 1, dead: 1 })
      })),
    60_000
  )

  it.live(
    "prefetch: a caller receiving in quick succession gets full batches; what it does not take goes back to SQS within a second",
    () =>
      Effect.gen(function*() {
        const name = Emulator.freshName("prefetch")
        const open = (prefetch: boolean) =>
          Effect.flatMap(
            SqsQueue.makeClient(Emulator.connection(proxy.endpoint)),
            (client) => SqsQueue.make(client, { queue: name, ensureQueue: true, prefetch })
          )
        const worker = yield* open(true)
        const observer = yield* open(false)
        yield* worker.send(Array.from({ length: 30 }, (_, i) => ({ body: `m${i}` })))
        const { requests, value: taken } = yield* recorded(Effect.gen(function*() {
          const first = yield* worker.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
          const second = yield* worker.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
          const third = yield* worker.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
          return [...first, ...second, ...third]
        }))
        expect(taken).toHaveLength(3)
        // The second receive was "hot": it asked SQS for 10, and the third was served from those.
        const asked = calls(requests, "ReceiveMessage").map((r) => r.body["MaxNumberOfMessages"])
        expect(asked[0]).toBe(1)
        expect(asked[1]).toBe(10)
        // For the contract, prefetched messages are ready, not in flight.
        expect(yield* worker.depth).toMatchObject({ ready: 27, inFlight: 3 })
        // Nobody takes the rest: within about a second they are visible in SQS again.
        yield* Effect.sleep("1500 millis")
        expect(yield* observer.depth).toMatchObject({ ready: 27, inFlight: 3 })
        yield* worker.ack(taken.map((d) => d.receipt))
        expect(yield* observer.depth).toMatchObject({ ready: 27, inFlight: 0 })
      }).pipe(Effect.scoped),
    60_000
  )
})
