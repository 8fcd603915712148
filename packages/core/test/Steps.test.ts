import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { Job, MemoryDatabase, Probe, Runner, StateStore, Step, Worker } from "../src/index.js"
import {
  commitManually,
  driveUntil,
  expectedItems,
  fastWorker,
  memoryEngine,
  recorder,
  runEnded,
  table,
  testJob
} from "./fixtures.js"

describe("steps", () => {
  it.scoped("read + write steps pass items through, a slow chunk times out, and custom keys are used", () =>
    Effect.gen(function*() {
      const written: Array<{ items: ReadonlyArray<number>; key: string }> = []
      let slowOnce = true
      const job = Job.make({
        name: "read-write",
        params: Schema.Struct({ size: Schema.Number }),
        partitions: () => ["only"],
        steps: (step) => [
          step.chunked("copy", {
            cursor: Schema.Struct({ after: Schema.Number }),
            start: { after: -1 },
            chunkSize: 4,
            transaction: "chunk",
            timeout: "2 seconds",
            idempotencyKey: ({ chunkSeq, partition, step }) => `${partition}/${step}/${chunkSeq}`,
            read: ({ chunkSize, cursor, params }) =>
              Effect.gen(function*() {
                const items = Array.from({ length: chunkSize }, (_, i) => cursor.after + 1 + i).filter((n) =>
                  n < params.size
                )
                if (items.includes(5) && slowOnce) {
                  slowOnce = false
                  yield* Effect.sleep("10 seconds")
                }
                return { items, next: items.length < chunkSize ? Step.done : { after: items[items.length - 1]! } }
              }),
            write: (items, ctx) =>
              Effect.gen(function*() {
                const db = yield* MemoryDatabase.MemoryDatabase
                for (const n of items) yield* db.put("copied", String(n), n)
                written.push({ items, key: ctx.idempotencyKey })
              })
          })
        ]
      })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { size: 10 })
      yield* driveUntil(runEnded(runId), "500 millis")
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(written.map((w) => w.items)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
      expect(written.map((w) => w.key)).toEqual(["only/copy/0", "only/copy/1", "only/copy/2"])
      expect(Object.keys(yield* table("copied"))).toHaveLength(10)
      const progress = yield* Runner.status(runId)
      expect(progress.items).toBe(10)
      const [failure] = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listFailures(runId, { limit: 10 }))
      expect(failure).toMatchObject({ errorTag: "StepTimeout", outcome: "retry", attempt: 1 })
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a zombie whose lease expired mid-chunk cannot commit; the new holder applies the chunk once", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 6, chunkDelay: "15 seconds" })
      const { runId } = yield* Runner.start(job, { label: "zombie" })
      // The zombie's heartbeat hangs (a long GC pause, a partition from the store): its lease lapses.
      const frozen = { at: (point: Probe.Point) => (point === "heartbeat" ? Effect.never : Effect.void) }
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "zombie" }).pipe(
        Effect.provideService(Probe.Probe, Probe.make(frozen))
      )
      const store = yield* StateStore.StateStore
      yield* driveUntil(Effect.map(store.progress(runId), (p) => p.units.leased === 1))
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "healthy" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      // Both ran the first chunk's effect; only one commit applied it.
      expect(rec.effects.filter((e) => e.chunkSeq === 0 && e.step === "apply").length).toBeGreaterThanOrEqual(2)
      expect(yield* table("applied")).toEqual(expectedItems(1, 6))
      const [unit] = yield* store.listUnits(runId, { limit: 1 })
      expect(yield* store.ledger(runId, unit!.unitId)).toHaveLength(3)
      const failures = yield* store.listFailures(runId, { limit: 10 })
      expect(failures.map((f) => [f.errorTag, f.outcome])).toContainEqual(["LeaseLost", "abandoned"])
    }).pipe(Effect.provide(memoryEngine())))
})

describe("feeding", () => {
  it.effect("sends the heaviest partitions first and keeps at most maxOutstanding out", () =>
    Effect.gen(function*() {
      const job = Job.make({
        name: "weighted",
        params: Schema.Struct({}),
        partitions: () => [{ key: "small", weight: 1 }, { key: "huge", weight: 1000 }, { key: "mid", weight: 50 }],
        steps: (step) => [step.single("s", { transaction: "none", run: () => Effect.void })]
      })
      const store = yield* StateStore.StateStore
      const { runId } = yield* Runner.start(job, {})
      const keyOf = (unitId: string) =>
        Effect.map(store.listUnits(runId, { limit: 10 }), (us) => us.find((u) => u.unitId === unitId)!.partitionKey)
      const first = yield* store.feed({ maxOutstanding: 2, redeliverAfterMs: 60_000 })
      expect(yield* Effect.forEach(first, (m) => keyOf(m.unitId))).toEqual(["huge", "mid"])
      expect(yield* store.feed({ maxOutstanding: 2, redeliverAfterMs: 60_000 })).toEqual([])
      // One finishes: the feeder tops up with the next.
      yield* commitManually(first[0]!, { stepIndex: 1, chunkSeq: 0, cursor: null }, true)
      const next = yield* store.feed({ maxOutstanding: 2, redeliverAfterMs: 60_000 })
      expect(yield* Effect.forEach(next, (m) => keyOf(m.unitId))).toEqual(["small"])
      // A message older than redeliverAfter whose unit nobody holds is sent again, with a newer seq.
      const resent = yield* store.feed({ maxOutstanding: 10, redeliverAfterMs: 0 })
      expect(resent.map((m) => m.seq)).toEqual([2, 2])
      const stale = yield* store.claim({ message: first[1]!, workerId: "w", leaseMs: 1, jobConcurrency: undefined })
      expect(stale).toEqual({ _tag: "Ack", reason: "stale-message" })
      expect(Option.isSome(yield* store.getRun(runId))).toBe(true)
    }).pipe(Effect.provide(memoryEngine())))
})
