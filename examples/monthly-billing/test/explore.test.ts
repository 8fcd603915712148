/**
 * The job explored with chunkwise's harness on real Postgres: a crash at every point a small run
 * reaches (each step of each company, each chunk), on the in-memory and the Postgres queue, must end
 * with the same invoices, lines, billed records, outbox and mails as the run without faults.
 */
import { Engine, Fault, Guarantees, Harness } from "@chunkwise/testing"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as MonthlyBilling from "../src/MonthlyBilling.js"
import * as Tables from "../src/Tables.js"
import { content, handMadeInvoices, handMadeMonth, pgClient, quiet } from "./fixtures.js"

describe("explore on Postgres", () => {
  for (const queue of ["memory", "postgres"] as const) {
    it.live(`every crash point of a month's run, ${queue} queue: zero divergences`, () =>
      Effect.gen(function*() {
        const { app, store } = yield* handMadeMonth
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        // Company 2 only, so the run stays small: two chunks of bill-records, issue-invoice and notify
        // (with 2 workers and the completion, 16 crash sites).
        yield* sql`update ${sql(app)}.companies set active = false where id = 1`
        const report = yield* Harness.explore({
          engine: Engine.postgres({ schema: store, queue }),
          job: MonthlyBilling.make({ schema: app, chunkSize: 2 }),
          params: { month: "2026-10" },
          workers: 2,
          reset: Tables.resetBilling(app),
          observe: content(app)
        })
        console.log(Harness.format(report))
        expect(report.baseline.status).toBe("succeeded")
        expect(Harness.observedOrThrow(report.baseline).invoices).toEqual([handMadeInvoices[1]])
        expect(report.sites.length).toBeGreaterThanOrEqual(12)
        Harness.assertNoDivergence(report)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(pgClient(), quiet))), 240_000)
  }
})

describe("the harness's store faults on Postgres", () => {
  it.live(
    "reach the chunk transactions a worker runs on its kept connection; the month is still billed once",
    () =>
      Effect.gen(function*() {
        const { app, store } = yield* handMadeMonth
        const trial = yield* Harness.run({
          engine: Engine.postgres({ schema: store, queue: "memory" }),
          job: MonthlyBilling.make({ schema: app, chunkSize: 2 }),
          params: { month: "2026-10" },
          workers: 2,
          seed: 3,
          faults: [Fault.storeErrors({ rate: 0.3, replyLost: true, operations: ["transaction"] })],
          observe: content(app)
        })
        expect(trial.status).toBe("succeeded")
        // Each injection is a chunk's COMMIT that applied and whose reply was lost.
        expect(trial.injections.filter((i) => i.fault.includes("store transaction failed")).length).toBeGreaterThan(0)
        Guarantees.all(trial)
        expect(Harness.observedOrThrow(trial).invoices).toEqual(handMadeInvoices)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(pgClient(), quiet))),
    120_000
  )
})
