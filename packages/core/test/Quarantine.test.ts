import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option, Ref, Schema } from "effect"
import { Job, MemoryDatabase, Quarantine, Runbook, Runner, StateStore, Step, Worker } from "../src/index.js"
import { driveUntil, fastWorker, memoryEngine, runEnded, table } from "./fixtures.js"

class InvalidRecord extends Schema.TaggedError<InvalidRecord>()("InvalidRecord", { id: Schema.Number }) {}
class Unexpected extends Schema.TaggedError<Unexpected>()("Unexpected", { id: Schema.Number }) {}

const Record = Schema.Struct({ id: Schema.Number, amount: Schema.Number })

const invalidRecord = Runbook.make(InvalidRecord, {
  id: "test-invalid-record",
  title: "A record does not bill",
  severity: "ticket",
  meaning: "The record's amount is negative.",
  steps: ["Fix the record, then re-run it."]
})

/**
 * `count` records per partition; the write bills each into the memory table `billed` (a count per
 * record) and fails with `InvalidRecord` for the ids in `bad` (a Ref, so a test can "fix" them).
 */
const billingJob = (options: {
  readonly count: number
  readonly partitions: ReadonlyArray<string>
  readonly bad: Ref.Ref<ReadonlySet<number>>
  readonly budget: Quarantine.Budget
  readonly runBudget?: Quarantine.Budget | undefined
  readonly chunkSize?: number | undefined
  readonly unexpected?: number | undefined
}) =>
  Job.make({
    name: "quarantine-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => options.partitions,
    errors: [invalidRecord],
    skipBudget: options.runBudget === undefined ? undefined : { items: options.runBudget },
    steps: (step) => [
      step.chunked("bill", {
        cursor: Schema.Struct({ after: Schema.Number }),
        start: { after: -1 },
        chunkSize: options.chunkSize ?? 10,
        transaction: "chunk",
        read: ({ chunkSize, cursor }) =>
          Effect.sync(() => {
            const first = cursor.after + 1
            const end = Math.min(first + chunkSize, options.count)
            const items = Array.from({ length: end - first }, (_, i) => ({ id: first + i, amount: 10 }))
            return { items, next: end >= options.count ? Step.done : { after: end - 1 } }
          }),
        write: (records, { partition }) =>
          Effect.gen(function*() {
            const db = yield* MemoryDatabase.MemoryDatabase
            const bad = yield* Ref.get(options.bad)
            for (const record of records) {
              // A write that bills some records before it meets a bad one: the rollback must undo them.
              const key = `${partition.key}-${record.id}`
              const seen = yield* db.get("billed", key)
              yield* db.put("billed", key, Option.isSome(seen) ? (seen.value as number) + 1 : 1)
              if (record.id === options.unexpected) return yield* new Unexpected({ id: record.id })
              if (bad.has(record.id)) return yield* new InvalidRecord({ id: record.id })
            }
          }),
        skip: { on: [InvalidRecord], item: Record, id: (record) => record.id, budget: options.budget }
      })
    ]
  })

const everyRecordOnce = (partitions: ReadonlyArray<string>, count: number, except: ReadonlySet<number>) =>
  Object.fromEntries(
    partitions.flatMap((p) =>
      Array.from({ length: count }, (_, id) => id).filter((id) => !except.has(id)).map((id) => [`${p}-${id}`, 1])
    )
  )

describe("item-level skips with quarantine", () => {
  it("Job.make refuses skips that are not explicit and safe: unregistered class, mode none, bad budget", () => {
    const base = {
      cursor: Schema.Struct({ after: Schema.Number }),
      start: { after: -1 },
      read: () => Effect.succeed({ items: [] as Array<typeof Record.Type>, next: Step.done }),
      write: () => Effect.void
    }
    const skip = { on: [InvalidRecord], item: Record, id: (r: typeof Record.Type) => r.id, budget: 1 }
    expect(() =>
      Job.make({
        name: "j",
        params: Schema.Struct({}),
        partitions: () => ["a"],
        steps: (step) => [step.chunked("bill", { ...base, transaction: "chunk", skip })]
      })
    ).toThrow(/step "bill" sets aside items that fail with "InvalidRecord", which is not in errors/)
    expect(() => Step.chunked("bill", { ...base, transaction: "none", skip })).toThrow(
      /skip needs transaction "chunk"/
    )
    expect(() => Step.chunked("bill", { ...base, transaction: "chunk", skip: { ...skip, budget: -1 } })).toThrow(
      /Step "bill": skip.budget must be a count >= 0 or a percentage like "0.5%" \(got -1\)/
    )
    expect(() => Step.chunked("bill", { ...base, transaction: "chunk", skip: { ...skip, budget: "120%" } })).toThrow(
      /skip.budget must be a count/
    )
    expect(() => Step.chunked("bill", { ...base, transaction: "chunk", skip: { ...skip, on: [] } })).toThrow(
      /skip.on must list the error classes/
    )
    expect(() =>
      Job.make({
        name: "j",
        params: Schema.Struct({}),
        partitions: () => ["a"],
        errors: [invalidRecord],
        skipBudget: { items: "lots" as Quarantine.Budget },
        steps: (step) => [step.chunked("bill", { ...base, transaction: "chunk", skip })]
      })
    ).toThrow(/Job "j": skipBudget.items must be a count >= 0 or a percentage/)
  })

  it.effect("isolate finds the bad items by probing halves, one live probe at a time", () =>
    Effect.gen(function*() {
      let live = 0
      let most = 0
      const probe = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function*() {
          live += 1
          most = Math.max(most, live)
          const exit = yield* Effect.exit(effect)
          live -= 1
          return exit
        })
      const bad = new Set([3, 40, 41])
      const items = Array.from({ length: 64 }, (_, i) => i)
      const write = (some: ReadonlyArray<number>) => {
        const first = some.find((i) => bad.has(i))
        return first === undefined ? Effect.void : Effect.fail(new InvalidRecord({ id: first }))
      }
      const found = yield* Quarantine.isolate({
        items,
        write,
        probe,
        skippable: (cause) => Quarantine.skippableIn(new Set(["InvalidRecord"]), cause),
        firstFailed: true
      })
      expect(found.bad.map((b) => b.item)).toEqual([3, 40, 41])
      expect(found.good).toEqual(items.filter((i) => !bad.has(i)))
      expect(found.probes).toBeLessThan(40)
      expect(most).toBe(1)
      // Another error in a probe fails the isolation with it.
      const other = yield* Effect.exit(Quarantine.isolate({
        items,
        write: (some) => some.includes(7) ? Effect.fail(new Unexpected({ id: 7 })) : write(some),
        probe,
        skippable: (cause) => Quarantine.skippableIn(new Set(["InvalidRecord"]), cause),
        firstFailed: true
      }))
      expect(Exit.isFailure(other) && JSON.stringify(other.cause)).toMatch(/Unexpected/)
    }))

  it.scoped("bad items are set aside, the rest of their chunk commits once, and status counts them", () =>
    Effect.gen(function*() {
      const bad = yield* Ref.make<ReadonlySet<number>>(new Set([4, 5, 23]))
      const job = billingJob({ count: 30, partitions: ["acme", "globex"], bad, budget: 5 })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "skips" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("succeeded")
      expect(progress.units).toMatchObject({ succeeded: 2, failed: 0 })
      expect(progress.items).toBe(60)
      expect(progress.quarantine).toEqual({ quarantined: 6, retry: 0, resolved: 0 })
      expect(yield* table("billed")).toEqual(everyRecordOnce(["acme", "globex"], 30, new Set([4, 5, 23])))
      const held = yield* Runner.quarantine(runId)
      expect(held.map((e) => `${e.partitionKey}-${e.itemId}`)).toEqual([
        "acme-23",
        "acme-4",
        "acme-5",
        "globex-23",
        "globex-4",
        "globex-5"
      ])
      expect(held[0]).toMatchObject({
        step: "bill",
        item: { id: 23, amount: 10 },
        errorTag: "InvalidRecord",
        runbookId: "test-invalid-record",
        status: "quarantined",
        attempts: 1,
        cursor: { after: 19 },
        range: null
      })
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a partition over its budget fails, and the chunk that went over commits nothing", () =>
    Effect.gen(function*() {
      const bad = yield* Ref.make<ReadonlySet<number>>(new Set([2, 14, 15]))
      const job = billingJob({ count: 30, partitions: ["acme"], bad, budget: 2 })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "budget" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("failed")
      expect(progress.units).toMatchObject({ failed: 1 })
      // The first chunk (0..9) committed with item 2 set aside; the second (10..19) went over: nothing of it.
      expect(yield* table("billed")).toEqual(
        Object.fromEntries([0, 1, 3, 4, 5, 6, 7, 8, 9].map((id) => [`acme-${id}`, 1]))
      )
      expect((yield* Runner.quarantine(runId)).map((e) => e.itemId)).toEqual(["2"])
      const store = yield* StateStore.StateStore
      const failures = yield* store.listFailures(runId, { limit: 10 })
      expect(failures.map((f) => [f.errorTag, f.outcome])).toEqual([["SkipBudgetExceeded", "failed"]])
      expect(failures[0]!.message).toMatch(
        /step "bill" of partition "acme" would set aside 3 items in the partition, over its skip budget of 2 .*items: 14, 15; first error: InvalidRecord/
      )
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a run budget in percent counts every partition's items", () =>
    Effect.gen(function*() {
      const bad = yield* Ref.make<ReadonlySet<number>>(new Set([1, 2, 3]))
      // Each partition may skip 5, but the run only 10% of what it handled: 3 of 10 goes over at once.
      const job = billingJob({ count: 10, partitions: ["a", "b"], bad, budget: 5, runBudget: "10%" })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "run-budget" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("failed")
      expect(progress.quarantine.quarantined).toBe(0)
      expect(yield* table("billed")).toEqual({})
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("an operator re-runs quarantined items after a fix: they write once and the run ends again", () =>
    Effect.gen(function*() {
      const bad = yield* Ref.make<ReadonlySet<number>>(new Set([4, 5, 23]))
      const job = billingJob({ count: 30, partitions: ["acme", "globex"], bad, budget: 5 })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "rerun" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const actor = { actor: "ops", reason: "records 4 and 5 fixed" }
      // Only 4 and 5 are fixed: 23 fails again and stays quarantined.
      yield* Ref.set(bad, new Set([23]))
      const dry = yield* Runner.retryQuarantine(runId, { partitions: ["acme"], dryRun: true }, actor)
      expect(dry).toEqual([expect.objectContaining({ partitionKey: "acme", step: "bill", items: 3 })])
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      const planned = yield* Runner.retryQuarantine(runId, {}, actor)
      expect(planned.map((p) => [p.partitionKey, p.items])).toEqual(
        expect.arrayContaining([["acme", 3], ["globex", 3]])
      )
      expect((yield* Runner.status(runId)).run.status).toBe("running")
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("succeeded")
      expect(progress.units).toMatchObject({ succeeded: 2 })
      expect(progress.quarantine).toEqual({ quarantined: 2, retry: 0, resolved: 4 })
      expect(yield* table("billed")).toEqual(everyRecordOnce(["acme", "globex"], 30, new Set([23])))
      const still = yield* Runner.quarantine(runId, { status: ["quarantined"] })
      expect(still.map((e) => [e.partitionKey, e.itemId, e.attempts])).toEqual([["acme", "23", 2], ["globex", "23", 2]])
      // Fixed for good: the second re-run resolves the last ones.
      yield* Ref.set(bad, new Set())
      yield* Runner.retryQuarantine(runId, {}, actor)
      yield* driveUntil(runEnded(runId), "200 millis")
      expect((yield* Runner.status(runId)).quarantine).toEqual({ quarantined: 0, retry: 0, resolved: 6 })
      expect(yield* table("billed")).toEqual(everyRecordOnce(["acme", "globex"], 30, new Set()))
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("an error that is not skippable fails the chunk as usual, even during isolation", () =>
    Effect.gen(function*() {
      const bad = yield* Ref.make<ReadonlySet<number>>(new Set([3]))
      const job = billingJob({ count: 10, partitions: ["acme"], bad, budget: 5, unexpected: 8 })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "unexpected" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("failed")
      expect(progress.quarantine.quarantined).toBe(0)
      expect(yield* table("billed")).toEqual({})
      const store = yield* StateStore.StateStore
      const failures = yield* store.listFailures(runId, { limit: 10 })
      expect(failures.map((f) => f.errorTag)).toEqual(["Unclassified"])
      expect(failures[0]!.cause).toMatch(/Unexpected/)
    }).pipe(Effect.provide(memoryEngine())))
})
