import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Option, Schema } from "effect"
import { Job, MemoryDatabase, Runner, Step, Worker } from "../src/index.js"
import { driveUntil, fastWorker, memoryEngine, runEnded } from "./fixtures.js"

/** One partition of `items` items; an item costs `costMs(item)` of (simulated) chunk time. */
const timedJob = (
  items: number,
  costMs: (item: number) => number,
  chunking: Pick<Step.ProcessOptions<unknown, { readonly next: number }, unknown, never>, "chunkSize" | "chunkTime">,
  sizes: Array<number>
) =>
  Job.make({
    name: "timed",
    params: Schema.Struct({}),
    partitions: () => ["only"],
    steps: (step) => [
      step.chunked("work", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        transaction: "chunk",
        ...chunking,
        process: (ctx) =>
          Effect.gen(function*() {
            sizes.push(ctx.chunkSize)
            const db = yield* MemoryDatabase.MemoryDatabase
            const end = Math.min(ctx.cursor.next + ctx.chunkSize, items)
            let cost = 0
            for (let i = ctx.cursor.next; i < end; i++) {
              cost += costMs(i)
              const seen = yield* db.get("applied", String(i))
              yield* db.put("applied", String(i), Option.getOrElse(seen, () => 0) as number + 1)
            }
            yield* Effect.sleep(cost)
            return Step.advance(end >= items ? Step.done : { next: end }, end - ctx.cursor.next)
          })
      })
    ]
  })

const runToEnd = (job: Job.Any) =>
  Effect.gen(function*() {
    yield* Worker.make({ jobs: [job], ...fastWorker, leaseDuration: "60 seconds" })
    const { runId } = yield* Runner.start(job as Job.Job<{}, never>, {})
    yield* driveUntil(runEnded(runId), "2 seconds", 5_000)
    const applied = yield* Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.rows("applied"))
    return { status: (yield* Runner.status(runId)).run.status, applied }
  })

describe("chunk sizes", () => {
  it.scoped("adapt to the chunk time: grow to fit it, shrink when the database slows, stay within bounds", () =>
    Effect.gen(function*() {
      const sizes: Array<number> = []
      // 10 ms an item for the first 1,500 items, then 40 ms (the database got slower).
      const job = timedJob(3000, (i) => (i < 1500 ? 10 : 40), {
        chunkSize: { min: 10, max: 1000 },
        chunkTime: "1 second"
      }, sizes)
      const { applied, status } = yield* runToEnd(job)
      expect(status).toBe("succeeded")
      expect(applied).toHaveLength(3000)
      expect(applied.every(([, n]) => n === 1)).toBe(true)
      expect(sizes[0]).toBe(10)
      expect(Math.min(...sizes)).toBeGreaterThanOrEqual(10)
      expect(Math.max(...sizes)).toBeLessThanOrEqual(1000)
      // Fast phase: it doubles from 10 until a chunk takes between half the target and the target.
      const fast = sizes.slice(0, sizes.findIndex((_, k) => sizes.slice(0, k + 1).reduce((a, b) => a + b, 0) > 1500))
      expect(fast.slice(0, 4)).toEqual([10, 20, 40, 80])
      expect(fast.slice(-3).every((n) => n * 10 >= 500 && n * 10 <= 1000)).toBe(true)
      // Slow phase: 4x the cost per item: the chunk that overshot shrinks the next to fit 0.9 s again.
      expect(sizes.slice(-3).every((n) => n >= 20 && n <= 25)).toBe(true)
    }).pipe(Effect.provide(memoryEngine())))

  it.scoped("a time box: at most N items or T, whichever comes first", () =>
    Effect.gen(function*() {
      const sizes: Array<number> = []
      const job = timedJob(2000, () => 10, { chunkSize: 500, chunkTime: "2 seconds" }, sizes)
      const { applied, status } = yield* runToEnd(job)
      expect(status).toBe("succeeded")
      expect(applied).toHaveLength(2000)
      // 500 items take 5 s, over the 2 s box: the next chunks take what fits (180 = 1.8 s).
      expect(sizes[0]).toBe(500)
      expect(sizes.slice(1, 4)).toEqual([180, 180, 180])
      expect(Math.max(...sizes)).toBeLessThanOrEqual(500)
    }).pipe(Effect.provide(memoryEngine())))

  it("bad chunking settings are refused with the option and the fix", () => {
    const cursor = Schema.Struct({ next: Schema.Number })
    const base = { cursor, start: { next: 0 }, process: () => Effect.succeed(Step.done) }
    expect(() => Step.chunked("a", { ...base, transaction: "chunk", chunkSize: { min: 50, max: 10 }, chunkTime: 100 }))
      .toThrow(/chunkSize bounds must be positive integers with min <= max \(got min 50, max 10\)/)
    expect(() => Step.chunked("b", { ...base, transaction: "chunk", chunkSize: { min: 1, max: 10 } }))
      .toThrow(/chunkSize bounds need chunkTime/)
    expect(() => Step.chunked("c", { ...base, transaction: "none", chunkSize: 100, chunkTime: "1 second" }))
      .toThrow(/chunkTime needs transaction "chunk"/)
    expect(() => Step.chunked("d", { ...base, transaction: "chunk", chunkSize: 100, chunkTime: -5 }))
      .toThrow(/chunkTime must be a positive duration/)
    expect(() => Step.chunked("e", { ...base, transaction: "chunk", chunkSize: 0 }))
      .toThrow(/chunkSize must be a positive integer \(got 0\)/)
    // What the types allow only from JavaScript or a computed value: a typo names the option.
    const typo = "5 secs" as Duration.DurationInput
    expect(() => Step.chunked("f", { ...base, transaction: "chunk", chunkSize: 100, chunkTime: typo }))
      .toThrow(/Step "f": chunkTime must be a duration such as "30 seconds".*\(got "5 secs"\)/)
    expect(() => Step.chunked("g", { ...base, transaction: "chunk", timeout: typo }))
      .toThrow(/Step "g": timeout must be a duration such as/)
    expect(() => Step.single("h", { transaction: "chunk", timeout: 0, run: () => Effect.void }))
      .toThrow(/Step "h": timeout must be a positive duration/)
    // A mode other than the two would run as "none" and lose exactly-once.
    const mode = "Chunk" as "chunk"
    expect(() => Step.chunked("i", { ...base, transaction: mode })).toThrow(
      /transaction must be "chunk" .* \(got "Chunk"\)/
    )
    expect(() => Step.single("j", { transaction: mode, run: () => Effect.void })).toThrow(/transaction must be "chunk"/)
  })
})
