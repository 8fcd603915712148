import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import { Errors, Job, MemoryDatabase, QueueAdapter, Runbook, Runner, StateStore, Step, Worker } from "../src/index.js"
import {
  BadRecord,
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

const operator = { actor: "alice", reason: "fixed the record" }

describe("failures", () => {
  it.scoped("isolate a failing partition: the others finish, the run fails with a precise record", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 4, itemsPerPartition: 9, badItems: [2004] })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "iso" })
      yield* driveUntil(runEnded(runId))
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("failed")
      expect(progress.units).toMatchObject({ succeeded: 3, failed: 1 })
      const applied = yield* table("applied")
      for (const p of [0, 1, 3]) for (let i = 0; i < 9; i++) expect(applied[String(p * 1000 + i)]).toBe(1)
      // p2's first chunk (items 0-2) committed; the chunk holding item 4 rolled back entirely.
      expect(applied["2000"]).toBe(1)
      expect(applied["2003"]).toBeUndefined()
      const store = yield* StateStore.StateStore
      const failures = yield* store.listFailures(runId, { limit: 10 })
      expect(failures).toHaveLength(1)
      expect(failures[0]).toMatchObject({
        partitionKey: "p2",
        step: "apply",
        errorTag: "BadRecord",
        runbookId: "test-bad-record",
        severity: "ticket",
        outcome: "failed",
        attempt: 1,
        cursor: JSON.stringify({ next: 3 })
      })
      // BadRecord never retries: its chunk ran once.
      expect(rec.effects.filter((e) => e.partition === "p2" && e.chunkSeq === 1)).toHaveLength(1)
      // The hook ran once, for the failed outcome.
      expect(rec.completions).toBe(1)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("retry only as the error class says: a bounded policy retries, then succeeds", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 6, flaky: { item: 4, failures: 2 } })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "flaky" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      const attempts = rec.effects.filter((e) => e.step === "apply" && e.chunkSeq === 1)
      expect(attempts.map((e) => e.attempt)).toEqual([1, 2, 3])
      expect(yield* table("applied")).toEqual(expectedItems(1, 6))
      const failures = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listFailures(runId, { limit: 10 }))
      expect(failures.map((f) => [f.errorTag, f.outcome, f.attempt])).toEqual([
        ["FlakyUpstream", "retry", 1],
        ["FlakyUpstream", "retry", 2]
      ])
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a bounded policy gives up after its last retry", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 6, flaky: { item: 1, failures: 10 } })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "gives-up" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("failed")
      // times: 3 retries after the first attempt.
      expect(rec.effects.filter((e) => e.step === "apply").map((e) => e.attempt)).toEqual([1, 2, 3, 4])
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a step that throws a plain exception is recorded as Unclassified, never retried", () =>
    Effect.gen(function*() {
      let calls = 0
      const job = Job.make({
        name: "throws",
        params: Schema.Struct({}),
        partitions: () => ["only"],
        steps: (step) => [
          step.single("boom", {
            transaction: "none",
            run: () => {
              calls += 1
              throw new Error("undefined is not a function")
            }
          })
        ]
      })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, {})
      yield* driveUntil(runEnded(runId))
      expect(calls).toBe(1)
      const [failure] = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listFailures(runId, { limit: 10 }))
      expect(failure).toMatchObject({ errorTag: "Unclassified", runbookId: "chunkwise-unclassified", severity: "page" })
      expect(failure!.message).toContain("undefined is not a function")
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("past the failure budget the run fails fast: pending partitions are cancelled, and it says why", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, {
        partitions: 12,
        itemsPerPartition: 3,
        badItems: [0, 1000, 2000],
        failureBudget: { partitions: 1 },
        perWorker: 1
      })
      yield* Worker.make({ jobs: [job], ...fastWorker, concurrency: 1 })
      const { runId } = yield* Runner.start(job, { label: "budget" })
      yield* driveUntil(runEnded(runId))
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("failed")
      expect(progress.run.reason).toContain("failure budget exceeded: 2 of 12")
      expect(progress.units.failed).toBe(2)
      expect(progress.units.cancelled).toBeGreaterThan(0)
      expect(progress.units.succeeded + progress.units.failed + progress.units.cancelled).toBe(12)
      expect(rec.completions).toBe(1)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("an operator retry re-runs the failed partition once the data is fixed, and is audited", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const bad = [1002]
      const job = testJob(rec, { partitions: 2, itemsPerPartition: 6, badItems: bad })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "op" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("failed")
      expect(rec.completions).toBe(1)

      const plan = yield* Runner.retry(runId, { dryRun: true }, operator)
      expect(plan.map((p) => p.partitionKey)).toEqual(["p1"])
      expect((yield* Runner.status(runId)).run.status).toBe("failed") // dry run changed nothing

      bad.pop() // the record is fixed
      yield* Runner.retry(runId, {}, operator)
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(yield* table("applied")).toEqual(expectedItems(2, 6))
      expect(rec.completions).toBe(2) // once per terminal outcome
      const audit = yield* Effect.flatMap(StateStore.StateStore, (s) => s.auditLog(runId))
      expect(audit).toMatchObject([{ action: "retry", actor: "alice", reason: "fixed the record" }])
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("retry --from-step restarts the step with new idempotency keys", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 3, mode: "none" })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "from-step" })
      yield* driveUntil(runEnded(runId))
      const firstKeys = rec.effects.filter((e) => e.step === "summarise").map((e) => e.key)
      const plan = yield* Runner.retry(runId, { partitions: ["p0"], fromStep: "summarise" }, operator)
      expect(plan).toMatchObject([{ partitionKey: "p0", fromStepIndex: 1, generation: 1 }])
      yield* driveUntil(runEnded(runId))
      const keys = rec.effects.filter((e) => e.step === "summarise").map((e) => e.key)
      expect(keys).toHaveLength(2)
      expect(keys[1]).not.toBe(firstKeys[0])
      expect((yield* table("summaries"))["p0"]).toBe(2)
      const bad = yield* Effect.flip(Runner.retry(runId, { fromStep: "nope" }, operator))
      expect(bad.message).toContain("apply, summarise")
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("skip lets a run complete without its failed partitions", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 3, itemsPerPartition: 3, badItems: [1001] })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "skip" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("failed")
      const skipped = yield* Runner.skip(runId, {}, operator)
      expect(skipped.map((p) => p.partitionKey)).toEqual(["p1"])
      yield* driveUntil(runEnded(runId))
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("succeeded")
      expect(progress.units).toMatchObject({ succeeded: 2, skipped: 1 })
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a run that starts failing while a chunk runs: the step fused after the chunk does not commit (D8)", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const job = Job.make({
        name: "fused-failing",
        params: Schema.Struct({}),
        partitions: () => [{ key: "p0", weight: 2 }, { key: "p1", weight: 1 }],
        steps: (step) => [
          step.chunked("apply", {
            cursor: Schema.Number,
            start: 0,
            chunkSize: 1,
            transaction: "chunk",
            process: (ctx) =>
              Effect.gen(function*() {
                if (ctx.partition.key === "p0") return yield* new BadRecord({ item: 0 })
                // p1's only chunk ends once p0's failure has used up the budget and the run is failing.
                while (Option.exists(yield* store.getRun(ctx.runId), (run) => run.status === "running")) {
                  yield* Effect.sleep("50 millis")
                }
                yield* Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.put("applied", ctx.partition.key, 1))
                return Step.advance<number>(Step.done, 1)
              })
          }),
          step.single("invoice", {
            transaction: "chunk",
            run: (ctx) =>
              Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.put("invoices", ctx.partition.key, 1))
          })
        ],
        errors: [
          Runbook.make(BadRecord, {
            id: "bad-record",
            title: "Bad record",
            severity: "ticket",
            meaning: "m",
            steps: ["s"]
          })
        ],
        failureBudget: { partitions: 0 },
        concurrency: { perWorker: 2 }
      })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, {})
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("failed")
      // p1's chunk and its fused step rolled back together, and p1 stopped where it was.
      const [p1] = (yield* store.listUnits(runId, { limit: 10 })).filter((u) => u.partitionKey === "p1")
      expect(p1).toMatchObject({ status: "cancelled", stepIndex: 0, chunks: 0 })
      expect(yield* store.ledger(runId, p1!.unitId)).toEqual([])
      expect(yield* table("applied")).toEqual({})
      expect(yield* table("invoices")).toEqual({})
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("cancel stops a run: nothing new starts and an in-flight commit is refused", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 6, itemsPerPartition: 30, chunkDelay: "1 second", perWorker: 2 })
      const worker = yield* Worker.make({ jobs: [job], ...fastWorker, concurrency: 2 })
      const { runId } = yield* Runner.start(job, { label: "cancel" })
      const store = yield* StateStore.StateStore
      yield* driveUntil(Effect.map(store.progress(runId), (p) => p.chunks >= 2 && p.units.leased > 0))
      yield* Runner.cancel(runId, operator)
      const chunksAtCancel = (yield* store.progress(runId)).chunks
      // The chunks in flight finish their effect, then their commit is refused (fenced) and rolls back.
      yield* driveUntil(Effect.map(worker.activeUnits, (n) => n === 0))
      const progress = yield* store.progress(runId)
      expect(progress.run.status).toBe("cancelled")
      expect(progress.units.cancelled).toBe(6)
      expect(progress.chunks).toBe(chunksAtCancel)
      expect(rec.completions).toBe(0)
      // What committed is exactly what the ledger says.
      const applied = Object.keys(yield* table("applied")).length
      expect(applied).toBe(progress.items)
    }).pipe(Effect.provide(memoryEngine())))
})

describe("bad input", () => {
  it.effect("invalid params are refused with the job and the field, and nothing is written", () =>
    Effect.gen(function*() {
      const job = testJob(recorder(), { partitions: 1, itemsPerPartition: 1 })
      const error = yield* Effect.flip(Runner.startEncoded(job, { label: 42 }))
      expect(error._tag).toBe("InvalidParams")
      expect(error.message).toContain(`invalid params for job "test-job"`)
      expect(error.message).toContain("label")
      // A key the params schema does not know (a misspelt option) is refused, not dropped.
      const typo = yield* Effect.flip(Runner.startEncoded(job, { label: "x", lable: "y" }))
      expect(typo._tag).toBe("InvalidParams")
      expect(typo.message).toContain("lable")
      const runs = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listRuns({ limit: 10 }))
      expect(runs).toEqual([])
    }).pipe(Effect.provide(memoryEngine())))

  it.effect("starting the same run twice attaches; a re-run waits for it to end; other params under one key conflict", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 3, itemsPerPartition: 1 })
      const first = yield* Runner.start(job, { label: "x" })
      const second = yield* Runner.start(job, { label: "x" })
      expect(second).toMatchObject({ runId: first.runId, created: false, partitions: 3 })
      expect(first.created).toBe(true)
      // A re-run of the same params waits for the first run to end: both at once would do the work twice.
      const early = yield* Effect.flip(Runner.start(job, { label: "x" }, { rerun: "approved-late" }))
      expect(early).toMatchObject({ _tag: "RunAlreadyActive", activeRunId: first.runId, activeStatus: "running" })
      expect(early.message).toContain("Wait for it to end (or cancel it)")
      expect(yield* Effect.flatMap(StateStore.StateStore, (s) => s.listRuns({ limit: 10 }))).toHaveLength(1)
      yield* Runner.cancel(first.runId, { actor: "test", reason: "re-run it" })
      const rerun = yield* Runner.start(job, { label: "x" }, { rerun: "approved-late" })
      expect(rerun.runId).not.toBe(first.runId)
      expect(rerun.created).toBe(true)
      const keyed = Job.make({
        name: "keyed",
        params: Schema.Struct({ month: Schema.String, note: Schema.String }),
        runKey: (p) => p.month,
        partitions: () => ["a"],
        steps: (step) => [step.single("s", { transaction: "none", run: () => Effect.void })]
      })
      yield* Runner.start(keyed, { month: "2026-10", note: "a" })
      const conflict = yield* Effect.flip(Runner.start(keyed, { month: "2026-10", note: "b" }))
      expect(conflict._tag).toBe("RunKeyConflict")
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("malformed messages and unknown jobs are dead-lettered with a reason; the worker keeps running", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 2, itemsPerPartition: 3 })
      const queue = yield* QueueAdapter.QueueAdapter
      yield* queue.send([
        { body: "not json" },
        { body: JSON.stringify({ v: 1, job: "test-job", runId: 7 }) },
        { body: JSON.stringify({ v: 1, job: "nobody", runId: "run_x", unitId: "u", seq: 1 }) }
      ])
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "poison" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      const dead = yield* queue.deadLetters({ limit: 10 })
      expect(dead.map((d) => d.reason.split(":")[0])).toEqual(["MalformedMessage", "MalformedMessage", "UnknownJob"])
      expect(dead[0]!.reason).toContain("not JSON")
      expect(dead[1]!.reason).toContain("runId")
      expect(dead[2]!.reason).toContain(`unknown job "nobody"`)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a cursor that no longer decodes fails the unit with CursorUndecodable", () =>
    Effect.gen(function*() {
      const make = (cursor: Schema.Schema<{ readonly n: number }, { readonly n: number }>, stopAt: number) =>
        Job.make({
          name: "cursor-change",
          params: Schema.Struct({}),
          partitions: () => ["only"],
          steps: (step) => [
            step.chunked("count", {
              cursor,
              start: { n: 0 },
              transaction: "none",
              process: ({ cursor }) => Effect.succeed(cursor.n >= stopAt ? Step.done : { n: cursor.n + 1 })
            })
          ]
        })
      // v1 stores n = 5 and then is stopped by a failure; v2 only accepts n < 3.
      const v1 = make(Schema.Struct({ n: Schema.Number }), 100)
      const store = yield* StateStore.StateStore
      const { runId } = yield* Runner.start(v1, {})
      const [message] = yield* store.feed({ maxOutstanding: 10, redeliverAfterMs: 60_000 })
      yield* commitManually(message!, { stepIndex: 0, chunkSeq: 1, cursor: { n: 5 } }, false)
      const v2 = make(Schema.Struct({ n: Schema.Number.pipe(Schema.lessThan(3)) }), 100)
      expect(v2.fingerprint).toBe(v1.fingerprint) // refinements do not change the stored definition
      yield* Worker.make({ jobs: [v2], ...fastWorker })
      yield* driveUntil(runEnded(runId))
      const [failure] = yield* store.listFailures(runId, { limit: 10 })
      expect(failure).toMatchObject({ errorTag: "CursorUndecodable", runbookId: "chunkwise-cursor-undecodable" })
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a run started by an incompatible definition is refused with what changed, after the grace", () =>
    Effect.gen(function*() {
      const make = (mode: "chunk" | "none") =>
        Job.make({
          name: "evolving",
          params: Schema.Struct({}),
          partitions: () => ["only"],
          steps: (step) => [step.single("s", { transaction: mode, run: () => Effect.void })]
        })
      const { runId } = yield* Runner.start(make("none"), {})
      yield* Worker.make({ jobs: [make("chunk")], ...fastWorker, definitionMismatchGrace: "1 minute" })
      yield* driveUntil(runEnded(runId), "1 second", 200)
      const [failure] = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listFailures(runId, { limit: 10 }))
      expect(failure!.errorTag).toBe("DefinitionChanged")
      expect(failure!.message).toContain(`step "s" transaction mode was "none", now "chunk"`)
    }).pipe(Effect.provide(memoryEngine())))
})

describe("configuration errors fail fast", () => {
  it("Job.make rejects a cursor that does not survive JSON, duplicate steps and bad budgets", () => {
    const base = {
      name: "bad",
      params: Schema.Struct({}),
      partitions: () => ["a"]
    }
    expect(() =>
      Job.make({
        ...base,
        steps: (step) => [
          step.chunked("s", {
            cursor: Schema.Struct({ id: Schema.BigIntFromSelf }),
            start: { id: 0n },
            transaction: "chunk",
            process: () => Effect.succeed(Step.done)
          })
        ]
      })
    ).toThrow(/does not encode|round-trip|not JSON/)
    expect(() =>
      Job.make({
        ...base,
        steps: (step) => [
          step.single("s", { transaction: "none", run: () => Effect.void }),
          step.single("s", { transaction: "none", run: () => Effect.void })
        ]
      })
    ).toThrow(`two steps are named "s"`)
    expect(() =>
      Job.make({
        ...base,
        failureBudget: { partitions: "150%" },
        steps: (step) => [step.single("s", { transaction: "none", run: () => Effect.void })]
      })
    ).toThrow(/failureBudget/)
    expect(() =>
      Job.make({
        ...base,
        failureBudget: { partitions: "%" as `${number}%` },
        steps: (step) => [step.single("s", { transaction: "none", run: () => Effect.void })]
      })
    ).toThrow(/failureBudget.partitions must be a count >= 0 or a percentage like "1%" \(got "%"\)/)
    expect(() =>
      Job.make({
        ...base,
        errors: [{
          errorClass: Errors.LeaseLost,
          runbook: {
            ...Job.runbookFor(testJob(recorder(), { partitions: 1, itemsPerPartition: 1 }), "LeaseLost"),
            id: "mine"
          }
        }],
        steps: (step) => [step.single("s", { transaction: "none", run: () => Effect.void })]
      })
    ).toThrow(/chunkwise built-in/)
  })

  it.effect("a chunk step on the in-memory store with a SqlClient in context is refused at start-up", () =>
    Effect.gen(function*() {
      const job = testJob(recorder(), { partitions: 1, itemsPerPartition: 1 })
      const error = yield* Effect.flip(Effect.scoped(Worker.make({ jobs: [job] })))
      expect(error._tag).toBe("ConfigurationError")
      expect(error.message).toContain("PgStateStore")
      expect(error.message).toContain(`transaction: "none"`)
    }).pipe(
      Effect.provide(Layer.merge(memoryEngine(), Layer.succeed(SqlClient.SqlClient, {} as SqlClient.SqlClient)))
    ))

  it.effect("two jobs with one name are refused", () =>
    Effect.gen(function*() {
      const job = testJob(recorder(), { partitions: 1, itemsPerPartition: 1 })
      const error = yield* Effect.flip(Effect.scoped(Worker.make({ jobs: [job, job] })))
      expect(error.message).toContain(`two jobs are named "test-job"`)
    }).pipe(Effect.provide(memoryEngine())))
})
