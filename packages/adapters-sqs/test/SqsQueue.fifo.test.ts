import { SqsQueue } from "@chunkwise/adapters-sqs"
import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Emulator from "./emulator.js"

// FIFO queues, as chunkwise uses them: group = unit id, deduplication id = `unitId:seq`. The checks
// hold on AWS too: a receive may return several messages of a group (AWS) or one (the emulator).
let emulator: Emulator.Emulator
beforeAll(async () => {
  emulator = await Emulator.start()
})
afterAll(() => emulator.stop())

const fifo = <A, E>(effect: Effect.Effect<A, E, QueueAdapter.QueueAdapter>) =>
  Effect.suspend(() =>
    effect.pipe(
      Effect.provide(
        SqsQueue.layer({
          ...Emulator.connection(emulator.endpoint),
          queue: `${Emulator.freshName("fifo")}.fifo`,
          ensureQueue: true,
          maxReceives: 5
        })
      )
    )
  )

const message = (group: string, n: number) => ({
  body: `${group}${n}`,
  groupId: group,
  deduplicationId: `${group}:${n}`
})

describe("SqsQueue on a FIFO queue", () => {
  it.live(
    "keeps each group in order and holds a group back while one of its messages is in flight",
    () =>
      fifo(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([message("a", 1), message("a", 2), message("a", 3), message("b", 1), message("b", 2)])
        const first = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
        const firstBodies = first.map((d) => d.body)
        // Each group starts at its head and keeps its order.
        expect(firstBodies.filter((b) => b.startsWith("a"))).toEqual(
          ["a1", "a2", "a3"].slice(0, firstBodies.filter((b) => b.startsWith("a")).length)
        )
        expect(firstBodies).toContain("a1")
        expect(firstBodies).toContain("b1")
        // Nothing behind an in-flight message of its group is delivered.
        expect(yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 0 })).toEqual([])

        const order: Array<string> = [...firstBodies]
        yield* queue.ack(first.map((d) => d.receipt))
        while (order.length < 5) {
          const got = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
          expect(got.length).toBeGreaterThan(0)
          order.push(...got.map((d) => d.body))
          yield* queue.ack(got.map((d) => d.receipt))
        }
        expect(order.filter((b) => b.startsWith("a"))).toEqual(["a1", "a2", "a3"])
        expect(order.filter((b) => b.startsWith("b"))).toEqual(["b1", "b2"])
      })),
    60_000
  )

  it.live("delivers a deduplication id sent twice once", () =>
    fifo(Effect.gen(function*() {
      const queue = yield* QueueAdapter.QueueAdapter
      yield* queue.send([{ body: "first", groupId: "unit-1", deduplicationId: "unit-1:1" }])
      yield* queue.send([{ body: "again", groupId: "unit-1", deduplicationId: "unit-1:1" }])
      yield* queue.send([{ body: "next seq", groupId: "unit-1", deduplicationId: "unit-1:2" }])
      const bodies: Array<string> = []
      for (let empty = 0; empty < 2;) {
        const got = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 1000 })
        if (got.length === 0) empty += 1
        bodies.push(...got.map((d) => d.body))
        yield* queue.ack(got.map((d) => d.receipt))
      }
      expect(bodies).toEqual(["first", "next seq"])
    })), 60_000)

  it.live(
    "release with a delay holds the group back until the released message comes again",
    () =>
      fifo(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([message("u", 1), message("u", 2)])
        const [first] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        expect(first!.body).toBe("u1")
        yield* queue.release(first!.receipt, 2000)
        // u1 is still in flight for SQS (hidden for 2 s), so u2 waits behind it.
        expect(yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs: 0 })).toEqual([])
        yield* Effect.sleep("2500 millis")
        const [again] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        expect(again!.body).toBe("u1")
        expect(again!.receiveCount).toBe(2)
        yield* queue.ack([again!.receipt])
      })),
    60_000
  )

  it.live("refuses a message without a group, or with a delay, and sends nothing", () =>
    fifo(Effect.gen(function*() {
      const queue = yield* QueueAdapter.QueueAdapter
      const noGroup = yield* Effect.flip(queue.send([message("a", 1), { body: "orphan", deduplicationId: "o:1" }]))
      expect(noGroup._tag).toBe("MessageRejected")
      expect(noGroup.message).toMatch(/message 2 of 2 .* a FIFO queue needs a groupId/)
      const noDedup = yield* Effect.flip(queue.send([{ body: "x", groupId: "g" }]))
      expect(noDedup.message).toMatch(/needs a deduplicationId/)
      const delayed = yield* Effect.flip(queue.send([message("a", 1)], { delayMs: 5000 }))
      expect(delayed.message).toMatch(/takes no per-message delay/)
      expect(yield* queue.receive({ max: 10, visibilityMs: 1000, waitMs: 1000 })).toEqual([])
    })), 60_000)

  it.live(
    "deadLetter moves a message to the FIFO dead-letter queue with the reason; redrive brings it back",
    () =>
      fifo(Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([message("poison", 1)])
        const [delivery] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        yield* queue.deadLetter(delivery!.receipt, "MalformedMessage: not JSON")
        const dead = yield* queue.deadLetters({ limit: 10 })
        expect(dead.map((d) => [d.body, d.reason, d.receiveCount])).toEqual([[
          "poison1",
          "MalformedMessage: not JSON",
          1
        ]])
        expect((yield* queue.depth).dead).toBe(1)
        expect(yield* queue.redrive({ messageIds: [dead[0]!.messageId] })).toBe(1)
        const [back] = yield* queue.receive({ max: 1, visibilityMs: 30_000, waitMs: 1000 })
        expect(back!.body).toBe("poison1")
        yield* queue.ack([back!.receipt])
        expect(yield* queue.deadLetters({ limit: 10 })).toEqual([])
      })),
    60_000
  )
})
