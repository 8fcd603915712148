import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Fiber, HashMap, Logger, LogLevel, Metric, MetricState, Option } from "effect"
import { Errors, Metrics, Probe, Runbook, Runner, StateStore, Worker } from "../src/index.js"
import { driveUntil, expectedItems, fastWorker, memoryEngine, recorder, runEnded, table, testJob } from "./fixtures.js"

describe("completion", () => {
  it.scoped("the completion hook runs exactly once when many workers finish together", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 24, itemsPerPartition: 4, chunkDelay: "100 millis", perWorker: 4 })
      for (const id of ["a", "b", "c", "d"]) yield* Worker.make({ jobs: [job], ...fastWorker, workerId: id })
      const { runId } = yield* Runner.start(job, { label: "race" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(rec.completions).toBe(1)
      expect(yield* table("completions")).toEqual({ [runId]: 1 })
      expect(yield* table("applied")).toEqual(expectedItems(24, 4))
      const store = yield* StateStore.StateStore
      const finalizers = (yield* store.listUnits(runId, { limit: 100 })).filter((u) => u.kind === "finalize")
      expect(finalizers.map((u) => u.status)).toEqual(["succeeded"])
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("awaitTerminal polls the run's status and reads its progress once, at the end", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 6, itemsPerPartition: 4, chunkDelay: "300 millis" })
      const store = yield* StateStore.StateStore
      let progressReads = 0
      let runReads = 0
      const counting = StateStore.StateStore.of({
        ...store,
        getRun: (runId) =>
          Effect.suspend(() => {
            runReads += 1
            return store.getRun(runId)
          }),
        progress: (runId) =>
          Effect.suspend(() => {
            progressReads += 1
            return store.progress(runId)
          })
      })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "await" })
      const waiting = yield* Effect.fork(
        Runner.awaitTerminal(runId, { pollInterval: "100 millis" }).pipe(
          Effect.provideService(StateStore.StateStore, counting)
        )
      )
      yield* driveUntil(Effect.map(Fiber.poll(waiting), Option.isSome))
      const progress = yield* Fiber.join(waiting)
      expect(runReads).toBeGreaterThan(3)
      expect(progress.run.status).toBe("succeeded")
      expect(progress.items).toBe(24)
      expect(progressReads).toBe(1)
      expect((yield* Effect.flip(Runner.awaitTerminal("no-such-run")))._tag).toBe("NotFound")
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a finisher that dies between its commit and the completion check is repaired by the sweeper", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 1, itemsPerPartition: 3 })
      // Every unit's finisher "dies" before ack: nobody calls tryFinalize after a commit.
      const probe = { at: (point: Probe.Point) => (point === "before-ack" ? Effect.interrupt : Effect.void) }
      yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(Effect.provideService(Probe.Probe, Probe.make(probe)))
      const { runId } = yield* Runner.start(job, { label: "sweep" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(rec.completions).toBe(1)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a crash inside the hook, after its writes and before the run's commit, rolls the writes back", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 2, itemsPerPartition: 2 })
      let crashes = 0
      const probe = {
        at: (point: Probe.Point) =>
          point === "after-complete" && crashes < 2
            ? Effect.suspend(() => (crashes += 1, Effect.interrupt))
            : Effect.void
      }
      yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(Effect.provideService(Probe.Probe, Probe.make(probe)))
      const { runId } = yield* Runner.start(job, { label: "hook-crash" })
      yield* driveUntil(runEnded(runId))
      expect(crashes).toBe(2)
      expect(rec.completions).toBe(3) // the hook's external effect is at-least-once...
      expect(yield* table("completions")).toEqual({ [runId]: 1 }) // ...its database writes commit once
    }).pipe(Effect.provide(memoryEngine())))
})

describe("telemetry", () => {
  it.scoped("metrics count chunks, items and failures by error tag", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { name: "metered", partitions: 2, itemsPerPartition: 6, badItems: [1000] })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "m" })
      yield* driveUntil(runEnded(runId))
      const chunks = yield* Metric.value(
        Metric.tagged(Metric.tagged(Metrics.chunks, "job", "metered"), "step", "apply")
      )
      const items = yield* Metric.value(Metric.tagged(Metric.tagged(Metrics.items, "job", "metered"), "step", "apply"))
      const failures = yield* Metric.value(
        Metric.tagged(Metric.tagged(Metrics.failures, "job", "metered"), "error_tag", "BadRecord")
      )
      expect(chunks.count).toBe(2)
      expect(items.count).toBe(6)
      expect(failures.count).toBe(1)
      const duration = yield* Metric.value(Metric.tagged(Metrics.unitDuration, "job", "metered"))
      expect(MetricState.isHistogramState(duration) && duration.count).toBeGreaterThanOrEqual(3)
    }).pipe(Effect.provide(memoryEngine())))
})

describe("runbooks", () => {
  it("render Markdown for every error class of a job, registered and built-in", () => {
    const job = testJob(recorder(), { partitions: 1, itemsPerPartition: 1 })
    const markdown = Runbook.render([{ job: job.name, runbooks: [...job.runbooks.values()] }])
    expect(markdown).toContain("## test-job")
    expect(markdown).toContain("### A record cannot be applied")
    expect(markdown).toContain("- id: `test-bad-record`")
    expect(markdown).toContain("retried up to 3 times")
    for (const builtin of Runbook.builtins) expect(markdown).toContain(`- id: \`${builtin.runbook.id}\``)
    expect(() =>
      Runbook.make(Runbook.builtins[0]!.errorClass, {
        id: "Bad Id",
        title: "t",
        severity: "info",
        meaning: "m",
        steps: ["s"]
      })
    )
      .toThrow(/lower-case letters/)
  })
})

describe("alerts", () => {
  it.scoped("every failure writes one structured line carrying its runbook and the retry command", () =>
    Effect.gen(function*() {
      const lines: Array<{ message: unknown; level: string; annotations: Record<string, unknown> }> = []
      const capture = Logger.make(({ annotations, logLevel, message }) => {
        lines.push({ message, level: logLevel.label, annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
      })
      const rec = recorder()
      const job = testJob(rec, { partitions: 2, itemsPerPartition: 3, badItems: [1001] })
      yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
        Effect.provide(Logger.minimumLogLevel(LogLevel.Info))
      )
      const { runId } = yield* Runner.start(job, { label: "alert" })
      yield* driveUntil(runEnded(runId))
      const alerts = lines.filter((l) => l.annotations["alert"] === "chunkwise.failure")
      expect(alerts).toHaveLength(1)
      expect(alerts[0]!.level).toBe("ERROR")
      expect(alerts[0]!.annotations).toMatchObject({
        runbookId: "test-bad-record",
        runbookTitle: "A record cannot be applied",
        severity: "ticket",
        errorTag: "BadRecord",
        partition: "p1",
        step: "apply",
        runId,
        retryCommand: `chunkwise retry ${runId} --partition "p1" --reason "..."`
      })
    }).pipe(Effect.provide(memoryEngine())))
})

describe("commit outcome unknown (D3)", () => {
  it.scoped("a commit that applied but whose reply was lost is neither doubled nor skipped", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 2, itemsPerPartition: 9 })
      const real = yield* StateStore.StateStore
      let lost = 0
      // The commit reaches the store, then the connection drops before the reply (every third chunk).
      const flaky: StateStore.StateStoreShape = {
        ...real,
        transaction: (effect) =>
          Effect.flatMap(real.transaction(effect), (value) =>
            ++lost % 3 === 0
              ? Effect.fail(new Errors.CommitOutcomeUnknown({ message: "connection reset after COMMIT" }))
              : Effect.succeed(value))
      }
      const worker = yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(
        Effect.provideService(StateStore.StateStore, flaky)
      )
      const { runId } = yield* Runner.start(job, { label: "reply-lost" })
      yield* driveUntil(runEnded(runId))
      // The finalize unit's own lost reply is retried after the run ended: let it settle.
      yield* driveUntil(Effect.map(worker.activeUnits, (n) => n === 0))
      expect(lost).toBeGreaterThanOrEqual(3)
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(yield* table("applied")).toEqual(expectedItems(2, 9))
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a claim whose reply was lost is repeated with its id: no crash counted, nothing doubled", () =>
    Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { partitions: 3, itemsPerPartition: 4 })
      const real = yield* StateStore.StateStore
      const calls = new Map<string, number>()
      let lastLost = 0
      // The claim reaches the store, then its reply is lost, for every claim in the first 8 s: longer
      // than a delivery repeats its claim (half the 10 s lease), so the first deliveries give up and the
      // next ones (after the visibility timeout) repeat the kept ids on expired leases.
      const flaky: StateStore.StateStoreShape = {
        ...real,
        claim: (request) =>
          Effect.flatMap(Effect.zip(real.claim(request), Clock.currentTimeMillis), ([result, now]) => {
            calls.set(request.message.unitId, (calls.get(request.message.unitId) ?? 0) + 1)
            if (now >= 8_000) return Effect.succeed(result)
            lastLost = now
            return Effect.fail(
              new Errors.StoreUnavailable({ operation: "claim", message: "connection reset after the claim committed" })
            )
          })
      }
      yield* Worker.make({ jobs: [job], ...fastWorker }).pipe(Effect.provideService(StateStore.StateStore, flaky))
      const { runId } = yield* Runner.start(job, { label: "claim-reply-lost" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(yield* table("applied")).toEqual(expectedItems(3, 4))
      const partitions = (yield* real.listUnits(runId, { limit: 10 })).filter((u) => u.kind === "partition")
      expect(partitions.map((u) => [u.attempt, u.crashesSinceProgress])).toEqual([[1, 0], [1, 0], [1, 0]])
      expect(lastLost).toBeGreaterThan(4_000)
      // Each partition's first delivery repeated its claim, then gave up, and a later one took it.
      expect([...calls.values()].filter((n) => n >= 5)).toHaveLength(3)
    }).pipe(Effect.provide(memoryEngine())))
})
