import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Schema, Scope, TestClock } from "effect"
import { Errors, Job, Probe, QueueAdapter, Runner, StateStore, Worker } from "../src/index.js"
import {
  closeDriven,
  crashOnce,
  driveUntil,
  expectedItems,
  fastWorker,
  memoryEngine,
  recorder,
  runEnded,
  table,
  testJob
} from "./fixtures.js"

/**
 * A one-partition job whose chunk always fails with an error the built-in runbook retries 5 times, after
 * about 1 s, 2 s, 4 s, 8 s and 16 s (in-process under `inProcessRetryLimit`); `attempts` lists each
 * execution's `ctx.attempt`.
 */
const alwaysTransient = (name: string) => {
  const attempts: Array<number> = []
  const job = Job.make({
    name,
    params: Schema.Struct({}),
    partitions: () => ["p0"],
    steps: (step) => [
      step.chunked("apply", {
        cursor: Schema.Number,
        start: 0,
        chunkSize: 1,
        transaction: "chunk",
        process: (ctx) =>
          Effect.suspend(() => {
            attempts.push(ctx.attempt)
            return Effect.fail(new Errors.DatabaseTransient({ sqlState: "40001", message: "try again" }))
          })
      })
    ]
  })
  return { attempts, job }
}

describe("Worker on the in-memory engine", () => {
  it.scoped("runs every partition's steps and applies every item exactly once", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 5, itemsPerPartition: 10 })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "a" })
      yield* driveUntil(runEnded(runId))
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("succeeded")
      expect(progress.units.succeeded).toBe(5)
      expect(progress.items).toBe(50)
      expect(yield* table("applied")).toEqual(expectedItems(5, 10))
      expect(yield* table("summaries")).toEqual({ p0: 1, p1: 1, p2: 1, p3: 1, p4: 1 })
      expect(yield* table("completions")).toEqual({ [runId]: 1 })
      expect(rec.completions).toBe(1)
      // 10 items in chunks of 3 is 4 chunks per partition, then the single step: 5 ledger keys each.
      const store = yield* StateStore.StateStore
      const units = yield* store.listUnits(runId, { limit: 100 })
      for (const unit of units.filter((u) => u.kind === "partition")) {
        const keys = yield* store.ledger(runId, unit.unitId)
        expect(keys).toHaveLength(5)
        expect(new Set(keys).size).toBe(5)
      }
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("resumes from the checkpoint after a crash at any chunk boundary", () =>
    Effect.gen(function*() {
      for (const point of ["before-effect", "after-effect", "after-commit", "before-ack"] as const) {
        for (const crashAt of [0, 1, 3]) {
          const result = yield* Effect.gen(function*() {
            const rec = recorder()
            const job = testJob(rec, { partitions: 2, itemsPerPartition: 10 })
            const crash = crashOnce((p, info) =>
              p === point && info.unitId !== "" && (p === "before-ack" || info.chunkSeq === crashAt) &&
              info.step === (p === "before-ack" ? "" : "apply")
            )
            yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(Effect.provideService(Probe.Probe, crash.probe))
            const { runId } = yield* Runner.start(job, { label: "crash" })
            yield* driveUntil(runEnded(runId), "500 millis")
            return {
              crashed: crash.crashed(),
              run: (yield* Runner.status(runId)).run,
              applied: yield* table("applied"),
              rec
            }
          }).pipe(Effect.scoped, Effect.provide(memoryEngine()))
          expect(result.crashed, `${point}@${crashAt}`).toBe(true)
          expect(result.run.status, `${point}@${crashAt}`).toBe("succeeded")
          expect(result.applied, `${point}@${crashAt}`).toEqual(expectedItems(2, 10))
          expect(result.rec.completions).toBe(1)
        }
      }
    }))

  it.scoped("gives a chunk the same idempotency key on every attempt, with a growing attempt number", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 6, mode: "none" })
      let crashes = 0
      const probe = {
        at: (p: Probe.Point, info: Probe.Info) =>
          p === "after-effect" && info.step === "apply" && info.chunkSeq === 1 && crashes < 2
            ? Effect.suspend(() => {
              crashes += 1
              return Effect.interrupt
            })
            : Effect.void
      }
      yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(Effect.provideService(Probe.Probe, Probe.make(probe)))
      const { runId } = yield* Runner.start(job, { label: "keys" })
      yield* driveUntil(runEnded(runId))
      const second = rec.effects.filter((e) => e.step === "apply" && e.chunkSeq === 1)
      expect(second.map((e) => e.attempt)).toEqual([1, 2, 3])
      expect(new Set(second.map((e) => e.key)).size).toBe(1)
      const keys = rec.effects.filter((e) => e.step === "apply").map((e) => e.key)
      expect(new Set(keys).size).toBe(2) // chunks 0 and 1 of 6 items / 3
      expect(keys[0]).toMatch(/^cw1_[a-z2-7]{52}$/)
      // In mode "none" the effect ran again, so its (non-idempotent) writes show it: that is the contract.
      expect((yield* table("applied"))["3"]).toBe(3)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("never runs one partition twice at once, under duplicate deliveries and several workers", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 4, itemsPerPartition: 12, chunkDelay: "300 millis", perWorker: 8 })
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "w1", concurrency: 8 })
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "w2", concurrency: 8 })
      const { runId } = yield* Runner.start(job, { label: "dup" })
      const store = yield* StateStore.StateStore
      const queue = yield* QueueAdapter.QueueAdapter
      yield* driveUntil(Effect.map(store.progress(runId), (p) => p.units.leased > 0))
      // Duplicate every message a few times, as an at-least-once broker may.
      const units = yield* store.listUnits(runId, { limit: 100 })
      const dupes = units.flatMap((u) =>
        Array.from({ length: 3 }, () => ({
          body: JSON.stringify({ v: 1, job: job.name, runId, unitId: u.unitId, seq: u.enqueueSeq })
        }))
      )
      yield* queue.send(dupes)
      yield* driveUntil(runEnded(runId))
      expect(rec.maxConcurrentPerPartition).toBe(1)
      expect(yield* table("applied")).toEqual(expectedItems(4, 12))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(rec.completions).toBe(1)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("drains on shutdown: releases leases, and another worker finishes with nothing doubled", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 3, itemsPerPartition: 30, chunkDelay: "200 millis" })
      const { runId } = yield* Runner.start(job, { label: "drain" })
      const store = yield* StateStore.StateStore
      const scope = yield* Scope.make()
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "first" }).pipe(Scope.extend(scope))
      yield* driveUntil(Effect.map(store.progress(runId), (p) => p.chunks >= 6))
      yield* closeDriven(scope)
      const afterDrain = yield* store.listUnits(runId, { limit: 100 })
      expect(afterDrain.filter((u) => u.status === "leased")).toEqual([])
      expect(afterDrain.some((u) => u.status === "pending")).toBe(true)
      const before = (yield* store.progress(runId)).chunks

      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "second" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(yield* table("applied")).toEqual(expectedItems(3, 30))
      // No chunk was abandoned: a drain lets the chunk in flight commit, so no attempt repeats.
      expect(rec.effects.filter((e) => e.attempt > 1)).toEqual([])
      expect(before).toBeGreaterThanOrEqual(6)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("abandons a chunk that outlives the shutdown deadline; its writes roll back", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 6, chunkDelay: "20 seconds" })
      const { runId } = yield* Runner.start(job, { label: "abandon" })
      const store = yield* StateStore.StateStore
      const scope = yield* Scope.make()
      yield* Worker.make({ jobs: [job], ...fastWorker, leaseDuration: "60 seconds" }).pipe(Scope.extend(scope))
      yield* driveUntil(Effect.map(store.progress(runId), (p) => p.units.leased === 1))
      yield* closeDriven(scope)
      const [unit] = yield* store.listUnits(runId, { limit: 10 })
      expect(unit!.status).toBe("pending")
      expect(unit!.attempt).toBe(2)
      expect(yield* table("applied")).toEqual({})

      yield* Worker.make({ jobs: [job], ...fastWorker, leaseDuration: "60 seconds" })
      yield* driveUntil(runEnded(runId), "1 second")
      expect(yield* table("applied")).toEqual(expectedItems(1, 6))
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("abandons a unit past its chunk's commit without counting that chunk as an attempt", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 6 })
      const { runId } = yield* Runner.start(job, { label: "abandon-after-commit" })
      const store = yield* StateStore.StateStore
      const scope = yield* Scope.make()
      // The first chunk commits, then the unit is held past the shutdown deadline before its next chunk.
      const held = Probe.make({
        at: (point, info) => point === "after-commit" && info.chunkSeq === 0 ? Effect.sleep("20 seconds") : Effect.void
      })
      yield* Worker.make({ jobs: [job], ...fastWorker, leaseDuration: "60 seconds" }).pipe(
        Effect.provideService(Probe.Probe, held),
        Scope.extend(scope)
      )
      yield* driveUntil(Effect.map(store.progress(runId), (p) => p.chunks === 1))
      yield* closeDriven(scope)
      const [unit] = yield* store.listUnits(runId, { limit: 10 })
      // Given back at the chunk after the committed one, still on its first attempt.
      expect(unit).toMatchObject({ status: "pending", chunkSeq: 1, attempt: 1 })

      yield* Worker.make({ jobs: [job], ...fastWorker, leaseDuration: "60 seconds" })
      yield* driveUntil(runEnded(runId), "1 second")
      expect(yield* table("applied")).toEqual(expectedItems(1, 6))
      // Each chunk ran once, on its first attempt.
      expect(rec.effects.filter((e) => e.step === "apply").map((e) => [e.chunkSeq, e.attempt])).toEqual([[0, 1], [
        1,
        1
      ]])
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("counts a chunk's attempts on across in-process retries, a retry from the store and a drain", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const { attempts, job } = alwaysTransient("attempts")
      const { runId } = yield* Runner.start(job, {})
      // Waits under 1.5 s are taken in-process; the longer ones go back to the store as retries.
      const options = { jobs: [job], ...fastWorker, inProcessRetryLimit: "1.5 seconds" } as const
      const scope = yield* Scope.make()
      yield* Worker.make(options).pipe(Scope.extend(scope))
      // The worker stops while the unit waits out, in-process, the retry after its first attempt.
      yield* driveUntil(
        Effect.map(store.listFailures(runId, { limit: 10 }), (failures) => failures.length === 1),
        "10 millis"
      )
      yield* Scope.close(scope, Exit.void)
      expect(attempts).toEqual([1])
      yield* Worker.make(options)
      yield* driveUntil(runEnded(runId), "1 second")
      // One execution per attempt the policy allows, numbered on: none repeated after a retry from the
      // store or the drain.
      expect(attempts).toEqual([1, 2, 3, 4, 5, 6])
      expect((yield* Runner.status(runId)).run.status).toBe("failed")
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a drain does not wait out a retry's backoff: the unit goes back at once, not as a crash", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const { job } = alwaysTransient("drain-backoff")
      const { runId } = yield* Runner.start(job, {})
      const scope = yield* Scope.make()
      yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(Scope.extend(scope))
      yield* driveUntil(Effect.map(store.listFailures(runId, { limit: 10 }), (failures) => failures.length > 0))
      // The unit sleeps in its backoff; the worker stops.
      const steps = yield* closeDriven(scope, "10 millis")
      expect(steps).toBeLessThan(50) // well under the first backoff (1 s), let alone the shutdown timeout
      const [unit] = yield* store.listUnits(runId, { limit: 10 })
      expect(unit).toMatchObject({ status: "pending", leaseOwner: null, crashesSinceProgress: 0 })
    }).pipe(Effect.provide(memoryEngine())))
})

describe("Worker options", () => {
  it.scoped("a bad setting is refused at start with the option and the fix, before anything runs", () =>
    Effect.gen(function*() {
      const job = testJob(recorder(), { partitions: 1, itemsPerPartition: 1 })
      const refused = (options: Partial<Worker.Options<[typeof job]>>) =>
        Effect.flip(Worker.make({ jobs: [job], ...fastWorker, ...options }))
      // A zero lease failed every unit as a CrashLoop; a zero cap sent nothing, silently.
      expect((yield* refused({ leaseDuration: 0 })).message).toMatch(
        /Worker: leaseDuration must be at least 1000 ms \(got 0\)/
      )
      expect((yield* refused({ maxOutstanding: 0 })).message).toMatch(
        /Worker: maxOutstanding must be a positive integer \(got 0\)/
      )
      const typo = "10 sec" as Duration.DurationInput
      expect((yield* refused({ shutdownTimeout: typo })).message).toMatch(
        /Worker: shutdownTimeout must be a duration such as "30 seconds".*\(got "10 sec"\)/
      )
      expect((yield* refused({ pollInterval: -5 })).message).toMatch(/Worker: pollInterval must be a positive duration/)
      // Effect reads a negative or NaN duration as zero; where zero is allowed, it must not slip through.
      expect((yield* refused({ shutdownTimeout: -5 })).message).toMatch(/shutdownTimeout must be a positive duration/)
      expect((yield* refused({ shutdownTimeout: Number.NaN })).message).toMatch(/got NaN/)
      expect(yield* refused({ leaseDuration: 0 })).toBeInstanceOf(Errors.ConfigurationError)
    }).pipe(Effect.provide(memoryEngine())))
})

describe("new work in the same process", () => {
  it.scoped("a run started beside a worker starts at once, not on the feeder's next tick", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 2, itemsPerPartition: 3 })
      yield* Worker.make({ jobs: [job], ...fastWorker, feedInterval: "1 hour" })
      yield* TestClock.adjust("1 second")
      const { runId } = yield* Runner.start(job, { label: "at-once" })
      // 50 steps of 100 ms: far less than the feed interval.
      yield* driveUntil(runEnded(runId), "100 millis", 50)
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
    }).pipe(Effect.provide(memoryEngine())))
})
