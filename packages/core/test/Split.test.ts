import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Job, JobDefinition, MemoryDatabase, Runner, StateStore, Step, Worker } from "../src/index.js"
import { driveUntil, fastWorker, memoryEngine, runEnded, table } from "./fixtures.js"

/** `count` items per partition (ids 0..count-1); the copy step splits by id with `ranges`. */
const splitJob = (options: {
  readonly count: number
  readonly ranges: (partition: string) => ReadonlyArray<Step.Range<number>>
  readonly seen: Array<string>
}) =>
  Job.make({
    name: "split-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => [{ key: "big", weight: 10 }, { key: "small", weight: 1 }],
    steps: (step) => [
      step.chunked("copy", {
        cursor: Schema.Struct({ after: Schema.Number }),
        start: { after: -1 },
        chunkSize: 3,
        transaction: "chunk",
        split: {
          key: Schema.Number,
          ranges: ({ partition }) => Effect.succeed(options.ranges(partition.key))
        },
        process: ({ chunkSize, cursor, partition, range }) =>
          Effect.gen(function*() {
            const db = yield* MemoryDatabase.MemoryDatabase
            const first = Math.max(cursor.after + 1, range.from ?? 0)
            const end = Math.min(first + chunkSize, range.to ?? options.count, options.count)
            for (let id = first; id < end; id++) {
              const key = `${partition.key}-${id}`
              const seen = yield* db.get("copied", key)
              yield* db.put("copied", key, seen._tag === "Some" ? (seen.value as number) + 1 : 1)
            }
            options.seen.push(`${partition.key}[${range.from},${range.to})`)
            return Step.advance(
              end >= Math.min(range.to ?? options.count, options.count) ? Step.done : { after: end - 1 },
              end - first
            )
          })
      }),
      step.single("total", {
        transaction: "chunk",
        run: ({ partition }) =>
          Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.put("totals", partition.key, 1))
      })
    ],
    concurrency: { perWorker: 4 }
  })

describe("range-split partitions", () => {
  it("rangesAt cuts the key space at the points; checkRanges accepts a tiling in any order", () => {
    expect(Step.rangesAt([10, 20])).toEqual([{ from: null, to: 10 }, { from: 10, to: 20 }, { from: 20, to: null }])
    expect(Step.rangesAt([])).toEqual([Step.everything])
    const shuffled = [{ from: 20, to: null }, { from: null, to: 10 }, { from: 10, to: 20 }]
    expect(Step.checkRanges(shuffled)).toEqual({ _tag: "Ranges", ranges: Step.rangesAt([10, 20]) })
    expect(Step.checkRanges(Step.rangesAt(["m"]))._tag).toBe("Ranges")
    expect(Step.checkRanges(Step.rangesAt([10n, 20n]))._tag).toBe("Ranges")
    expect(Step.checkRanges(Step.rangesAt([new Date("2026-01-01"), new Date("2026-02-01")]))._tag).toBe("Ranges")
  })

  it("checkRanges names what is wrong: gaps, overlaps, open ends, empty ranges, mixed or odd keys", () => {
    const problem = (ranges: ReadonlyArray<Step.Range<unknown>>) => {
      const checked = Step.checkRanges(ranges)
      return checked._tag === "Problem" ? checked.problem : "ok"
    }
    expect(problem([])).toMatch(/no ranges/)
    expect(problem([{ from: null, to: 10 }, { from: 12, to: null }])).toBe("keys from 10 to 12 are in no range")
    expect(problem([{ from: null, to: 10 }, { from: 8, to: null }])).toBe("ranges [null, 10) and [8, null) overlap")
    expect(problem([{ from: null, to: null }, { from: 5, to: null }])).toMatch(/overlap/)
    expect(problem([{ from: 0, to: 10 }, { from: 10, to: null }])).toMatch(/keys below 0 are in no range/)
    expect(problem([{ from: null, to: 10 }, { from: 10, to: 20 }])).toMatch(/keys from 20 up are in no range/)
    expect(problem([{ from: null, to: 5 }, { from: 5, to: 5 }, { from: 5, to: null }])).toMatch(
      /\[5, 5\) is empty or reversed/
    )
    expect(problem([{ from: null, to: 5 }, { from: 5, to: "x" }, { from: "x", to: null }])).toMatch(/mixes key types/)
    expect(problem([{ from: null, to: 5 }, { from: 5, to: new Date(10) }, { from: new Date(10), to: null }])).toMatch(
      /mixes key types/
    )
    expect(problem([{ from: null, to: Number.NaN }, { from: Number.NaN, to: null }])).toMatch(/does not compare/)
    expect(problem(Array.from({ length: Step.MAX_RANGES + 1 }, () => Step.everything))).toMatch(/more than 1000/)
  })

  it("Job.make refuses a split without a key schema or a ranges function", () => {
    expect(() =>
      Job.make({
        name: "bad-split",
        params: Schema.Struct({}),
        partitions: () => ["a"],
        steps: (step) => [
          step.chunked("copy", {
            cursor: Schema.Number,
            start: 0,
            transaction: "chunk",
            split: { key: undefined as never, ranges: () => Effect.succeed([]) },
            process: () => Effect.succeed(Step.done)
          })
        ]
      })
    ).toThrow(/Step "copy": split needs a key schema and a ranges function/)
  })

  it("a split step is part of the definition: adding or removing the split changes the fingerprint", () => {
    const seen: Array<string> = []
    const split = splitJob({ count: 10, ranges: () => Step.rangesAt([5]), seen })
    expect(split.definition.steps[0]!.split).toMatch(/from/)
    expect(split.definition.steps[1]!.split).toBeUndefined()
    const whole = { ...split.definition, steps: split.definition.steps.map(({ split: _, ...rest }) => rest) }
    expect(JobDefinition.fingerprint(whole)).not.toBe(split.fingerprint)
    expect(JobDefinition.changes(whole, split.definition).join()).toMatch(/step "copy" split key ranges were none/)
  })

  it.scoped("ranges of the big partition run as their own units; one range runs a partition whole", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const job = splitJob({
        count: 20,
        ranges: (key) => key === "big" ? Step.rangesAt([5, 12]) : [Step.everything],
        seen
      })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "split" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("succeeded")
      expect(progress.ranges).toMatchObject({ succeeded: 3 })
      expect(progress.units).toMatchObject({ succeeded: 2 })
      expect(progress.items).toBe(40)
      const copied = yield* table("copied")
      expect(Object.keys(copied)).toHaveLength(40)
      expect(Object.values(copied).every((n) => n === 1)).toBe(true)
      expect(yield* table("totals")).toEqual({ big: 1, small: 1 })
      expect(new Set(seen)).toEqual(new Set(["big[null,5)", "big[5,12)", "big[12,null)", "small[null,null)"]))
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("ranges that miss keys fail the partition with InvalidSplit before anything runs; the rest goes on", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const job = splitJob({
        count: 20,
        ranges: (key) => key === "big" ? [{ from: null, to: 5 }, { from: 8, to: null }] : [Step.everything],
        seen
      })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "invalid" })
      yield* driveUntil(runEnded(runId), "200 millis")
      const progress = yield* Runner.status(runId)
      expect(progress.run.status).toBe("failed")
      expect(progress.units).toMatchObject({ failed: 1, succeeded: 1 })
      expect(seen.every((s) => s.startsWith("small"))).toBe(true)
      const store = yield* StateStore.StateStore
      const failures = yield* store.listFailures(runId, { limit: 10 })
      expect(failures).toHaveLength(1)
      expect(failures[0]).toMatchObject({ errorTag: "InvalidSplit", partitionKey: "big", outcome: "failed" })
      expect(failures[0]!.message).toMatch(/split partition "big" wrongly: keys from 5 to 8 are in no range/)
      expect(failures[0]!.message).toMatch(/Step\.rangesAt/)
    }).pipe(Effect.provide(memoryEngine())))
})
