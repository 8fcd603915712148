import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { Engine, Fault, Guarantees, Harness } from "../src/index.js"
import { counting, observeCounts, skipping } from "./jobs.js"

const engine = Engine.memory()

describe("Harness on the in-memory engine", () => {
  it.effect(
    "explores every crash point of a run that keeps the guarantees: zero divergences",
    () =>
      Effect.gen(function*() {
        const report = yield* Harness.explore({
          engine,
          job: counting({ partitions: 3, items: 5, chunkSize: 2, mode: "chunk" }),
          params: { label: "explore" },
          observe: observeCounts,
          kinds: ["kill", "interrupt"]
        })
        console.log(Harness.format(report))
        expect(report.sites.length).toBeGreaterThan(30)
        expect(report.tried).toBe(report.sites.length * 2)
        Harness.assertNoDivergence(report)
      }),
    180_000
  )

  it.effect(
    "catches a non-idempotent step: writes in mode none diverge at the point that breaks them",
    () =>
      Effect.gen(function*() {
        const report = yield* Harness.explore({
          engine,
          job: counting({ partitions: 2, items: 4, chunkSize: 2, mode: "none" }),
          params: { label: "buggy" },
          observe: observeCounts
        })
        console.log(Harness.format(report))
        expect(report.divergences.length).toBeGreaterThan(0)
        const first = report.divergences[0]!
        expect(first.reasons.join("\n")).toMatch(/observed state differs/)
        expect(first.faults[0]).toMatchObject({
          _tag: "Crash",
          point: expect.stringMatching(/after-effect|after-commit/)
        })
        // The reported fault reproduces the divergence.
        const again = yield* Harness.run({
          engine,
          job: counting({ partitions: 2, items: 4, chunkSize: 2, mode: "none" }),
          params: { label: "buggy" },
          observe: observeCounts,
          faults: first.faults,
          seed: first.seed,
          trial: 99
        })
        expect(Harness.compare(report.baseline, again)).toEqual(first.reasons)
      }),
    180_000
  )

  it.effect(
    "a trial records hits, executions and faults, and the guarantees hold under a random schedule",
    () =>
      Effect.gen(function*() {
        for (const seed of [1, 2, 3, 4, 5]) {
          const trial = yield* Harness.run({
            engine,
            job: counting({ partitions: 4, items: 6, chunkSize: 2, mode: "chunk" }),
            params: { label: "random" },
            workers: 2,
            seed,
            faults: [
              Fault.random({ rate: 0.15, max: 4 }),
              Fault.duplicateDelivery(0.3),
              Fault.reorderDelivery("3 seconds"),
              Fault.visibilityExpiry(0.2),
              Fault.storeErrors({ rate: 0.02, operations: ["renewLeases", "feed", "claim", "release"] }),
              Fault.storeErrors({ rate: 0.05, replyLost: true, operations: ["transaction"] }),
              Fault.queueErrors({ rate: 0.05 })
            ],
            observe: observeCounts
          })
          expect(trial.status, `seed ${seed}`).toBe("succeeded")
          expect(trial.injections.length, `seed ${seed}`).toBeGreaterThan(0)
          Guarantees.all(trial)
          const { applied, completions } = Harness.observedOrThrow(trial)
          expect(Object.values(applied).every((n) => n === 1), `seed ${seed}`).toBe(true)
          expect(Object.keys(applied)).toHaveLength(24)
          expect(completions).toEqual({ run: 1 })
        }
      }),
    120_000
  )

  it.effect(
    "claims whose replies are lost half the time are repeated with their ids: no unit fails as a CrashLoop",
    () =>
      Effect.gen(function*() {
        for (const seed of [1, 2, 3, 4, 5]) {
          const trial = yield* Harness.run({
            engine,
            job: counting({ partitions: 4, items: 4, chunkSize: 2, mode: "chunk" }),
            params: { label: "claims-lost" },
            workers: 2,
            seed,
            faults: [Fault.storeErrors({ rate: 0.5, replyLost: true, operations: ["claim"] })],
            observe: observeCounts
          })
          expect(trial.status, `seed ${seed}`).toBe("succeeded")
          Guarantees.all(trial)
          const { applied } = Harness.observedOrThrow(trial)
          expect(Object.values(applied).every((n) => n === 1), `seed ${seed}`).toBe(true)
          expect(Object.keys(applied)).toHaveLength(16)
        }
      }),
    120_000
  )

  it.effect(
    "a split partition's ranges run in parallel, each once, and its next step starts once they are all done",
    () =>
      Effect.gen(function*() {
        const trial = yield* Harness.run({
          engine,
          job: counting({ partitions: 3, items: 12, chunkSize: 2, mode: "chunk", rangeSize: 4 }),
          params: { label: "split" },
          workers: 2,
          observe: observeCounts
        })
        expect(trial.status).toBe("succeeded")
        Guarantees.all(trial)
        const { applied, completions, summaries } = Harness.observedOrThrow(trial)
        expect(Object.keys(applied)).toHaveLength(36)
        expect(Object.values(applied).every((n) => n === 1)).toBe(true)
        expect(summaries).toEqual({ p0: 1, p1: 1, p2: 1 })
        expect(completions).toEqual({ run: 1 })
        // Every range ran as its own unit (3 per partition), and the summary of a partition started only
        // after the last chunk of its last range ended.
        const ranges = new Set(trial.executions.filter((e) => e.step === "apply").map((e) => e.partition))
        expect(ranges.size).toBe(9)
        for (const key of ["p0", "p1", "p2"]) {
          const summary = trial.executions.find((e) => e.step === "summarise" && e.partition === key)!
          const lastApply = Math.max(
            ...trial.executions.filter((e) => e.partition.startsWith(`${key} range`)).map((e) => e.end)
          )
          expect(summary.start).toBeGreaterThan(lastApply)
        }
      }),
    60_000
  )

  it.effect(
    "explores every crash point of a split run: zero divergences (the barrier is repaired after a crash)",
    () =>
      Effect.gen(function*() {
        const report = yield* Harness.explore({
          engine,
          job: counting({ partitions: 2, items: 4, chunkSize: 2, mode: "chunk", rangeSize: 2 }),
          params: { label: "explore-split" },
          observe: observeCounts,
          kinds: ["kill", "interrupt"]
        })
        console.log(Harness.format(report))
        expect(report.sites.length).toBeGreaterThan(15)
        Harness.assertNoDivergence(report)
      }),
    180_000
  )

  it.effect(
    "explores every crash point of a run that sets bad items aside: the good ones apply once, the bad never",
    () =>
      Effect.gen(function*() {
        const job = skipping({ partitions: 2, items: 6, chunkSize: 3, bad: [1, 4] })
        const report = yield* Harness.explore({
          engine,
          job,
          params: { label: "explore-skips" },
          observe: observeCounts,
          kinds: ["kill", "interrupt"]
        })
        console.log(Harness.format(report))
        expect(report.baseline.status).toBe("succeeded")
        expect(Option.getOrThrow(report.baseline.observed)).toMatchObject({
          applied: Object.fromEntries(["p0", "p1"].flatMap((p) => [0, 2, 3, 5].map((i) => [`${p}-${i}`, 1])))
        })
        expect(report.sites.length).toBeGreaterThan(15)
        Harness.assertNoDivergence(report)
      }),
    180_000
  )

  it.effect("a zombie cannot commit: its chunk is redone by the worker that took over, once", () =>
    Effect.gen(function*() {
      const trial = yield* Harness.run({
        engine,
        job: counting({ partitions: 1, items: 6, chunkSize: 2, mode: "chunk" }),
        params: { label: "zombie" },
        workers: 2,
        faults: [Fault.zombie({ partition: "p0", step: "apply", chunkSeq: 1 })],
        observe: observeCounts
      })
      expect(trial.status).toBe("succeeded")
      expect(trial.injections.map((i) => i.fault)).toEqual([
        "freeze the worker past its lease before the commit of p0 / step apply / chunk 1"
      ])
      const chunk1 = trial.executions.filter((e) => e.step === "apply" && e.chunkSeq === 1)
      expect(chunk1).toHaveLength(2)
      expect(new Set(chunk1.map((e) => e.worker)).size).toBe(2)
      Guarantees.all(trial)
      expect(Object.values(Harness.observedOrThrow(trial).applied)).toEqual([1, 1, 1, 1, 1, 1])
    }))

  it.effect(
    "after a crash a unit runs its steps unfused: a step that keeps killing the worker keeps the chunk before it",
    () =>
      Effect.gen(function*() {
        // The summary (fused into the last chunk's transaction) kills its worker three times. Fused every
        // time, each kill would roll the last chunk back too: three crashes without progress, CrashLoop.
        const trial = yield* Harness.run({
          engine,
          job: counting({ partitions: 1, items: 2, chunkSize: 2, mode: "chunk" }),
          params: { label: "crashing-summary" },
          faults: [1, 2, 3].map((occurrence) =>
            Fault.kill("before-effect", { partition: "p0", step: "summarise", occurrence })
          ),
          observe: observeCounts
        })
        expect(trial.injections).toHaveLength(3)
        expect(trial.status).toBe("succeeded")
        // The chunk ran fused once (rolled back by the first kill), then alone, and was kept.
        expect(trial.executions.filter((e) => e.step === "apply")).toHaveLength(2)
        Guarantees.all(trial)
        expect(Harness.observedOrThrow(trial)).toMatchObject({
          applied: { "p0-0": 1, "p0-1": 1 },
          summaries: { p0: 1 }
        })
      })
  )
})
