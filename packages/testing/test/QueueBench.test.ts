import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import * as QueueBench from "../src/QueueBench.js"

/** A handler that counts the messages it handled. */
const counting = () => {
  let handled = 0
  return { handler: Effect.sync(() => void (handled += 1)), handled: () => handled }
}

/** The message of the defect an exit died with. */
const refusal = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit) ? (Cause.squash(exit.cause) as Error).message : "succeeded"

describe("QueueBench", () => {
  it.effect("drain handles and acks every message once, with at most `concurrency` in hand", () =>
    Effect.gen(function*() {
      const queue = yield* QueueAdapter.QueueAdapter
      yield* QueueBench.fill(2_500)
      let inHand = 0
      let most = 0
      let handled = 0
      const ms = yield* QueueBench.drain({
        messages: 2_500,
        concurrency: 7,
        waitMs: 10,
        handler: Effect.acquireUseRelease(
          Effect.sync(() => (inHand += 1, most = Math.max(most, inHand))),
          () => Effect.sync(() => void (handled += 1)).pipe(Effect.zipLeft(Effect.yieldNow())),
          () => Effect.sync(() => void (inHand -= 1))
        )
      })
      expect(ms).toBeGreaterThan(0)
      expect(handled).toBe(2_500)
      expect(most).toBeLessThanOrEqual(7)
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 0 })
    }).pipe(Effect.provide(QueueAdapter.layerMemory())))

  it.effect("drainBatches handles and acks every message once", () =>
    Effect.gen(function*() {
      const queue = yield* QueueAdapter.QueueAdapter
      yield* QueueBench.fill(2_345)
      const { handled, handler } = counting()
      const ms = yield* QueueBench.drainBatches({
        messages: 2_345,
        consumers: 3,
        batchSize: 10,
        waitMs: 10,
        handler
      })
      expect(ms).toBeGreaterThan(0)
      expect(handled()).toBe(2_345)
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 0 })
    }).pipe(Effect.provide(QueueAdapter.layerMemory())))

  it.effect("a count that is not a whole number of at least 1 is refused with its name", () =>
    Effect.gen(function*() {
      const batches = yield* Effect.exit(
        QueueBench.drainBatches({ messages: 10, consumers: 0, batchSize: 10, handler: Effect.void })
      )
      expect(refusal(batches)).toBe(
        "QueueBench.drainBatches: consumers must be a whole number of at least 1 (got 0)"
      )
      const drain = yield* Effect.exit(QueueBench.drain({ messages: 10, concurrency: 2.5, handler: Effect.void }))
      expect(refusal(drain)).toBe("QueueBench.drain: concurrency must be a whole number of at least 1 (got 2.5)")
    }).pipe(Effect.provide(QueueAdapter.layerMemory())))
})
