/**
 * The `QueueAdapter` conformance suite: every driver (memory, Postgres, Redis, SQS) runs it in a couple
 * of lines against a real broker, so all four keep the same contract (see `QueueAdapter`'s doc).
 *
 * @since 0.1.0
 */
import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Scope, TestClock } from "effect"

/** How the suite lets time pass: `TestClock` for in-process drivers, real time for brokers. */
export type Time = "test-clock" | "live"

/** Options of the suite. */
export interface Options {
  /**
   * An instance of the driver on the queue named `queue` (a name unique to the test, so a fresh, empty
   * queue), configured with the given `maxReceives`.
   */
  readonly make: (
    config: { readonly maxReceives: number; readonly queue: string }
  ) => Layer.Layer<QueueAdapter.QueueAdapter, unknown>
  /**
   * Whether two instances made with the same `queue` share that queue, as on a broker where several
   * worker processes consume one queue (default false: in-process drivers). When true, the suite
   * checks two instances on one queue.
   */
  readonly sharedBetweenInstances?: boolean | undefined
  readonly time: Time
  /** Visibility timeouts the suite uses (ms); brokers with coarse timers need more (default 400). */
  readonly visibilityMs?: number | undefined
  /** The driver's maximum body size in bytes, to check the oversize rejection. */
  readonly maxMessageBytes: number
  /** Whether the driver reports `oldestReadyAgeMs` (default true; SQS cannot, it reports `null`). */
  readonly reportsOldestReadyAge?: boolean | undefined
}

let queues = 0
/** A queue name no other test of any run uses (letters, digits and hyphens: valid on every broker). */
const freshQueue = () => `conformance-${process.pid}-${Date.now().toString(36)}-${queues++}`

/** Registers the conformance tests under `describe(name)`. */
export const suite = (name: string, options: Options): void => {
  const visibility = options.visibilityMs ?? 400
  // Under TestClock nothing advances while a receive waits, so receives return at once there.
  const waitMs = options.time === "test-clock" ? 0 : visibility
  const pass = (ms: number) => options.time === "test-clock" ? TestClock.adjust(ms) : Effect.sleep(ms)
  const run = <A, E>(effect: Effect.Effect<A, E, QueueAdapter.QueueAdapter | Scope.Scope>, maxReceives = 50) =>
    Effect.suspend(() => Effect.provide(effect, options.make({ maxReceives, queue: freshQueue() })))
  const test = (
    title: string,
    body: Effect.Effect<void, unknown, QueueAdapter.QueueAdapter | Scope.Scope>,
    maxReceives?: number
  ) =>
    options.time === "test-clock"
      ? it.scoped(title, () => run(body, maxReceives))
      : it.live(title, () => Effect.scoped(run(body, maxReceives)), 60_000)
  const receiveAll = (max: number, visibilityMs = visibility) =>
    Effect.flatMap(QueueAdapter.QueueAdapter, (q) => q.receive({ max, visibilityMs, waitMs }))
  /** Receives until `count` messages arrived or `attempts` receives came back empty. */
  const receiveUntil = (count: number, visibilityMs = visibility) =>
    Effect.gen(function*() {
      const queue = yield* QueueAdapter.QueueAdapter
      const out: Array<QueueAdapter.Delivery> = []
      for (let empty = 0; out.length < count && empty < 5;) {
        const got = yield* queue.receive({ max: Math.min(10, count - out.length), visibilityMs, waitMs })
        if (got.length === 0) {
          empty += 1
          if (options.time === "test-clock") yield* pass(visibility)
        }
        out.push(...got)
      }
      return out
    })

  /**
   * Receives from `queue` (a visibility that outlasts the test) and acks, adding each delivery's body
   * to `seen`, until it holds `count` or three receives came back empty.
   */
  const consumeInto = (queue: QueueAdapter.QueueAdapterShape, seen: Array<string>, count: number) =>
    Effect.gen(function*() {
      for (let empty = 0; empty < 3 && seen.length < count;) {
        const got = yield* queue.receive({ max: 10, visibilityMs: 60_000, waitMs })
        if (got.length === 0) empty += 1
        seen.push(...got.map((d) => d.body))
        yield* queue.ack(got.map((d) => d.receipt))
      }
    })

  describe(name, () => {
    test(
      "delivers a sent message, and ack removes it",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: `{"n":1}` }])
        const [delivery] = yield* receiveUntil(1)
        expect(delivery!.body).toBe(`{"n":1}`)
        expect(delivery!.receiveCount).toBe(1)
        yield* queue.ack([delivery!.receipt])
        yield* pass(visibility * 2)
        expect(yield* receiveAll(10)).toEqual([])
      })
    )

    test(
      "redelivers a message that is not acked within its visibility timeout",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "again" }])
        const [first] = yield* receiveUntil(1)
        expect(yield* queue.receive({ max: 10, visibilityMs: visibility, waitMs: 0 })).toEqual([])
        yield* pass(visibility * 2)
        const [second] = yield* receiveUntil(1)
        expect(second!.body).toBe("again")
        expect(second!.receiveCount).toBe(2)
        // The first delivery's receipt is stale: acking it must not remove the message now in flight again.
        yield* queue.ack([first!.receipt])
        yield* pass(visibility * 2)
        const [third] = yield* receiveUntil(1)
        expect(third!.receiveCount).toBe(3)
        yield* queue.ack([third!.receipt])
      })
    )

    test(
      "release, extend and deadLetter with a stale receipt leave the current delivery alone",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "held" }])
        const [first] = yield* receiveUntil(1)
        yield* pass(visibility * 2)
        // Held again, for long, by a second consumer; the first one's receipt is stale.
        const [second] = yield* receiveUntil(1, visibility * 20)
        yield* queue.release(first!.receipt, 0)
        yield* queue.extend([first!.receipt], visibility)
        yield* queue.deadLetter(first!.receipt, "stale")
        expect(yield* queue.deadLetters({ limit: 10 })).toEqual([])
        yield* pass(visibility * 2)
        // Still hidden under the second delivery: the stale release made nothing visible.
        expect(yield* receiveAll(10)).toEqual([])
        yield* queue.ack([second!.receipt])
      })
    )

    test(
      "a batch receive hides every message it delivers, and each comes back when its visibility expires",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const bodies = ["b0", "b1", "b2", "b3", "b4"]
        yield* queue.send(bodies.map((body) => ({ body })))
        const first = yield* receiveUntil(bodies.length)
        expect(first.map((d) => d.body).sort()).toEqual(bodies)
        // Every one is hidden, not only the first of the batch.
        expect(yield* queue.receive({ max: 10, visibilityMs: visibility, waitMs: 0 })).toEqual([])
        yield* pass(visibility * 2)
        const again = yield* receiveUntil(bodies.length)
        expect(again.map((d) => d.body).sort()).toEqual(bodies)
        expect(again.every((d) => d.receiveCount === 2)).toBe(true)
        yield* queue.ack(again.map((d) => d.receipt))
      })
    )

    test(
      "release makes a message visible again after its delay",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "later" }])
        const [first] = yield* receiveUntil(1, 60_000)
        yield* queue.release(first!.receipt, visibility * 2)
        expect(yield* queue.receive({ max: 10, visibilityMs: visibility, waitMs: 0 })).toEqual([])
        yield* pass(visibility * 3)
        const [second] = yield* receiveUntil(1)
        expect(second!.body).toBe("later")
        yield* queue.ack([second!.receipt])
      })
    )

    test(
      "release with no delay makes the message visible at once",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "now" }])
        const [first] = yield* receiveUntil(1, 60_000)
        yield* queue.release(first!.receipt, 0)
        const [second] = yield* receiveUntil(1)
        expect(second!.body).toBe("now")
        yield* queue.ack([second!.receipt])
      })
    )

    test(
      "extend keeps a message hidden past its first timeout",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "long" }])
        const [first] = yield* receiveUntil(1)
        yield* queue.extend([first!.receipt], visibility * 4)
        yield* pass(visibility * 2)
        expect(yield* queue.receive({ max: 10, visibilityMs: visibility, waitMs: 0 })).toEqual([])
        yield* pass(visibility * 3)
        const [second] = yield* receiveUntil(1)
        expect(second!.receiveCount).toBe(2)
        yield* queue.ack([second!.receipt])
      })
    )

    test(
      "sends and acks in batches larger than one broker call",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const bodies = Array.from({ length: 25 }, (_, i) => `m${i}`)
        yield* queue.send(bodies.map((body) => ({ body })))
        const got = yield* receiveUntil(25, 60_000)
        expect(got.map((d) => d.body).sort()).toEqual([...bodies].sort())
        yield* queue.ack(got.map((d) => d.receipt))
        const depth = yield* queue.depth
        expect(depth.ready + depth.inFlight + depth.delayed).toBe(0)
      })
    )

    test(
      "dead-letters a message after maxReceives with the reason, and redrive brings it back",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "poison" }])
        const stale: Array<string> = []
        for (let i = 0; i < 2; i++) {
          const [delivery] = yield* receiveUntil(1)
          stale.push(delivery!.receipt)
          yield* pass(visibility * 2)
        }
        expect(yield* receiveAll(10)).toEqual([])
        const dead = yield* queue.deadLetters({ limit: 10 })
        expect(dead).toHaveLength(1)
        expect(dead[0]!.body).toBe("poison")
        expect(dead[0]!.reason).toMatch(/2/)
        expect((yield* queue.depth).dead).toBe(1)
        expect(yield* queue.redrive({})).toBe(1)
        const [back] = yield* receiveUntil(1)
        expect(back!.body).toBe("poison")
        expect(back!.receiveCount).toBe(1)
        // Receipts from before the redrive are stale: they do not ack the message's new delivery.
        expect(stale).not.toContain(back!.receipt)
        yield* queue.ack(stale)
        yield* queue.release(back!.receipt, 0)
        const [again] = yield* receiveUntil(1)
        expect(again!.body).toBe("poison")
        yield* queue.ack([again!.receipt])
      }),
      2
    )

    test(
      "deadLetter moves a message with the caller's reason",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "garbage" }])
        const [delivery] = yield* receiveUntil(1)
        yield* queue.deadLetter(delivery!.receipt, "MalformedMessage: body is not JSON")
        yield* pass(visibility * 2)
        expect(yield* receiveAll(10)).toEqual([])
        const [dead] = yield* queue.deadLetters({ limit: 10 })
        expect(dead!.reason).toBe("MalformedMessage: body is not JSON")
      })
    )

    test(
      "a message sent with a delay stays hidden until the delay passed, then is delivered",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "delayed" }], { delayMs: visibility * 3 })
        yield* queue.send([{ body: "at once" }])
        const first = yield* receiveAll(10)
        expect(first.map((d) => d.body)).toEqual(["at once"])
        yield* queue.ack(first.map((d) => d.receipt))
        expect(yield* receiveAll(10)).toEqual([])
        yield* pass(visibility * 4)
        const [later] = yield* receiveUntil(1)
        expect([later!.body, later!.receiveCount]).toEqual(["delayed", 1])
        yield* queue.ack([later!.receipt])
      })
    )

    test(
      "depth counts ready, in-flight and delayed messages",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "a" }, { body: "b" }, { body: "c" }])
        yield* queue.send([{ body: "d" }], { delayMs: 60_000 })
        yield* receiveUntil(1, 60_000)
        const depth = yield* queue.depth
        expect(depth).toMatchObject({ ready: 2, inFlight: 1, delayed: 1, dead: 0 })
      })
    )

    test(
      "depth reports how long the oldest ready message has waited",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        expect((yield* queue.depth).oldestReadyAgeMs).toBeNull()
        yield* queue.send([{ body: "waiting" }])
        yield* pass(visibility)
        const age = (yield* queue.depth).oldestReadyAgeMs
        if (options.reportsOldestReadyAge === false) expect(age).toBeNull()
        else expect(age).toBeGreaterThanOrEqual(visibility / 2)
      })
    )

    test(
      "rejects an oversize body with a clear error and sends nothing",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const error = yield* Effect.flip(
          queue.send([{ body: "ok" }, { body: "x".repeat(options.maxMessageBytes + 1) }])
        )
        expect(error._tag).toBe("MessageRejected")
        expect(error.message).toMatch(/bytes/)
        expect(yield* queue.receive({ max: 10, visibilityMs: visibility, waitMs: 0 })).toEqual([])
      })
    )

    test(
      "many concurrent consumers lose nothing",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const total = 200
        yield* queue.send(Array.from({ length: total }, (_, i) => ({ body: String(i) })))
        const seen: Array<string> = []
        yield* Effect.all(Array.from({ length: 8 }, () => consumeInto(queue, seen, total)), {
          concurrency: "unbounded"
        })
        expect(new Set(seen).size).toBe(total)
        // Visibility outlasts the test, so no message was handed to two consumers.
        expect(seen).toHaveLength(total)
        const depth = yield* queue.depth
        expect(depth.ready + depth.inFlight).toBe(0)
      })
    )

    if (options.sharedBetweenInstances === true) {
      test(
        "two instances on one queue share it: each message goes to one of them, and one's close gives back what it had not handed out",
        Effect.gen(function*() {
          const queue = freshQueue()
          const instance = (scope: Scope.Scope) =>
            Effect.map(
              Layer.buildWithScope(options.make({ maxReceives: 50, queue }), scope),
              Context.get(QueueAdapter.QueueAdapter)
            )
          const closing = yield* Scope.make()
          const [a, b] = [yield* instance(closing), yield* instance(yield* Effect.scope)]
          const total = 60
          yield* a.send(Array.from({ length: total }, (_, i) => ({ body: `m${i}` })))
          const seen: Array<string> = []
          yield* Effect.all([a, b, a, b].map((from) => consumeInto(from, seen, total)), { concurrency: "unbounded" })
          // Visibility outlasts the test: a message delivered twice was handed to both instances.
          expect([...seen].sort()).toEqual(Array.from({ length: total }, (_, i) => `m${i}`).sort())
          // `a` handles one message (a prefetching driver fetches its next ones meanwhile), then closes.
          yield* b.send(Array.from({ length: 10 }, (_, i) => ({ body: `n${i}` })))
          const [handled] = yield* a.receive({ max: 1, visibilityMs: 60_000, waitMs: visibility })
          yield* a.ack([handled!.receipt])
          yield* Scope.close(closing, Exit.void)
          // The rest reach `b` now, not when a prefetched message's 60 s visibility would end.
          const rest: Array<string> = []
          yield* consumeInto(b, rest, 9)
          const others = Array.from({ length: 10 }, (_, i) => `n${i}`).filter((n) => n !== handled!.body)
          expect(rest.sort()).toEqual(others.sort())
        })
      )
    }

    test(
      "passes any body through unchanged (the worker, not the driver, validates messages)",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const bodies = [`{"v":1,"job":"é ✓ 日本"}`, "not json at all", ` {"a": [1, 2]}\n\t"quoted" \\ `]
        yield* queue.send(bodies.map((body) => ({ body })))
        const got = yield* receiveUntil(bodies.length)
        expect(got.map((d) => d.body).sort()).toEqual([...bodies].sort())
        yield* queue.ack(got.map((d) => d.receipt))
      })
    )

    test(
      "a receive interrupted while the broker hands messages out gives them back at once",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const bodies = Array.from({ length: 10 }, (_, i) => `i${i}`)
        yield* queue.send(bodies.map((body) => ({ body })))
        // Interrupt receives at moments spread over their round trip (a worker draining mid-receive).
        for (let i = 0; i < 30; i++) {
          const receiving = yield* Effect.fork(queue.receive({ max: 10, visibilityMs: 60_000, waitMs: 0 }))
          yield* options.time === "test-clock" ? Effect.yieldNow() : Effect.sleep(i % 6)
          const exit = yield* Fiber.interrupt(receiving)
          if (Exit.isSuccess(exit)) yield* Effect.forEach(exit.value, (d) => queue.release(d.receipt, 0))
        }
        // None is left hidden for the 60 s visibility of an interrupted receive.
        const got = yield* receiveUntil(bodies.length, 60_000)
        expect(got.map((d) => d.body).sort()).toEqual(bodies)
        yield* queue.ack(got.map((d) => d.receipt))
      })
    )

    test(
      "a waiting receive stops when interrupted (clean shutdown) and loses no message",
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const waiting = yield* Effect.fork(queue.receive({ max: 10, visibilityMs: visibility, waitMs: visibility * 5 }))
        yield* options.time === "test-clock" ? Effect.yieldNow() : Effect.sleep(50)
        const started = Date.now()
        yield* Fiber.interrupt(waiting)
        // At once, not at the end of the wait: a draining worker must not sit out a long poll.
        if (options.time === "live") expect(Date.now() - started).toBeLessThan(visibility * 2.5)
        yield* queue.send([{ body: "after shutdown" }])
        const [delivery] = yield* receiveUntil(1)
        expect(delivery!.body).toBe("after shutdown")
        yield* queue.ack([delivery!.receipt])
      })
    )
  })
}
