/**
 * The one-command path, small: the embedded PGlite served over the wire protocol, a pool of several
 * connections, the in-memory queue, four companies billed at once. It must pass the same checks as
 * real Postgres: billed exactly by the rules, and unchanged by running the month again.
 */
import { PgStateStore, QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Demo from "../src/Demo.js"
import * as Embedded from "../src/Embedded.js"
import * as MonthlyBilling from "../src/MonthlyBilling.js"
import { quiet } from "./fixtures.js"

describe("the embedded PGlite", () => {
  it.live("bills a month end to end, by the rules, and running it again changes nothing", () =>
    Effect.gen(function*() {
      const db = Embedded.layer({ maxConnections: 8, idleInTransactionTimeoutMs: 300_000 })
      const engine = Layer.mergeAll(PgStateStore.layer(), QueueAdapter.layerMemory()).pipe(Layer.provideMerge(db))
      const result = yield* Demo.run({
        job: MonthlyBilling.make({ schema: "billing", chunkSize: 100 }),
        schema: "billing",
        month: "2026-10",
        companies: 20,
        records: 4000,
        seed: 9,
        concurrency: 4,
        leaseDuration: "5 minutes",
        progress: false
      }).pipe(Effect.scoped, Effect.provide(engine), Effect.provide(quiet))
      expect(result.status).toBe("succeeded")
      expect(result.verification.problems).toEqual([])
      expect(result.first.invoices).toBeGreaterThan(10)
      expect(result.first.mails).toBe(result.first.invoices)
      expect(result.afterAttach).toEqual(result.first)
      expect(result.afterRerun).toEqual(result.first)
      expect(result.rerunPartitions).toBe(0)
    }), 120_000)
})
