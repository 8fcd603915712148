/**
 * "Testing your job", the complete example of docs/guides/testing.md: a job explored at every crash
 * point, a random fault schedule, and the guarantees asserted.
 */
import { Job, MemoryDatabase, Step } from "@chunkwise/core"
import { Engine, Fault, Guarantees, Harness } from "@chunkwise/testing"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"

// The job under test: per account, add each ledger entry to the account's balance, 3 entries a chunk.
const entries: Record<string, ReadonlyArray<number>> = { acme: [5, 10, 20, 40, 80], globex: [1, 2, 3], initech: [7] }

const addToBalance = (account: string, amount: number) =>
  Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) =>
    Effect.flatMap(
      db.get("balances", account),
      (balance) => db.put("balances", account, Option.getOrElse(balance, () => 0) as number + amount)
    ))

const postBalances = Job.make({
  name: "post-balances",
  params: Schema.Struct({ day: Schema.String }),
  partitions: () => Object.keys(entries),
  steps: (step) => [
    step.chunked("post", {
      cursor: Schema.Struct({ offset: Schema.Number }),
      start: { offset: 0 },
      chunkSize: 3,
      transaction: "chunk", // the writes commit with the checkpoint: exactly once
      process: (ctx) =>
        Effect.gen(function*() {
          const mine = entries[ctx.partition.key]!
          const slice = mine.slice(ctx.cursor.offset, ctx.cursor.offset + ctx.chunkSize)
          for (const amount of slice) yield* addToBalance(ctx.partition.key, amount)
          const offset = ctx.cursor.offset + slice.length
          return Step.advance(offset >= mine.length ? Step.done : { offset }, slice.length)
        })
    })
  ]
})

// What the job leaves behind, compared with the fault-free run after every trial.
const balances = Effect.flatMap(
  MemoryDatabase.MemoryDatabase,
  (db) => Effect.map(db.rows("balances"), (rows) => Object.fromEntries(rows))
)

describe("post-balances", () => {
  it.effect("survives a crash at every point of its life", () =>
    Effect.gen(function*() {
      const report = yield* Harness.explore({
        engine: Engine.memory(),
        job: postBalances,
        params: { day: "2026-11-01" },
        observe: balances,
        kinds: ["kill", "interrupt"]
      })
      Harness.assertNoDivergence(report) // fails with Harness.format(report) when a trial diverges
      expect(Harness.observedOrThrow(report.baseline)).toEqual({ acme: 155, globex: 6, initech: 7 })
    }), 60_000)

  it.effect("keeps every guarantee under a random schedule of faults", () =>
    Effect.gen(function*() {
      for (const seed of [1, 2, 3]) {
        const trial = yield* Harness.run({
          engine: Engine.memory(),
          job: postBalances,
          params: { day: "2026-11-01" },
          workers: 2,
          seed,
          faults: [Fault.random({ rate: 0.2 }), Fault.duplicateDelivery(0.5), Fault.reorderDelivery()],
          observe: balances
        })
        expect(trial.status).toBe("succeeded")
        Guarantees.all(trial)
        expect(Harness.observedOrThrow(trial)).toEqual({ acme: 155, globex: 6, initech: 7 })
      }
    }), 60_000)
})
