/**
 * Operator retry on Postgres: the dry run's plan is computed in SQL on the database's clock with the same
 * predicate as the real statement, so a worker whose clock is off plans exactly what the action does (D5).
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { afterEach, vi } from "vitest"
import { Runner, StateStore } from "../src/index.js"
import { freshSchema, pgClient, pgEngine, pgJob, withSchemas } from "./pg.js"

const HOUR = 3_600_000

/** Sets the four units' states: failed, live lease, expired lease, cancelled (times in database time). */
const shapeUnits = (store: string, runId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`
      update ${sql(store)}.units set
        status = case partition_key when 'p0' then 'failed' when 'p3' then 'cancelled' else 'leased' end,
        lease_owner = case when partition_key in ('p1', 'p2') then 'elsewhere' end,
        lease_expires_at = case partition_key
          when 'p1' then clock_timestamp() + interval '10 minutes'
          when 'p2' then clock_timestamp() - interval '10 minutes' end
      where run_id = ${runId} and kind = 'partition'`)

const unitRows = (store: string, runId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly key: string; readonly status: string; readonly token: string }>`
      select partition_key as key, status, fencing_token::text as token from ${sql(store)}.units
      where run_id = ${runId} and kind = 'partition' order by partition_key`
  )

afterEach(() => {
  vi.restoreAllMocks()
})

describe("PgStateStore.retry plans on the database's clock", () => {
  it.live("a dry run with the worker's clock an hour off plans exactly what the retry then does", () => {
    const store = freshSchema("cw_store")
    const app = freshSchema("cw_app")
    return Effect.gen(function*() {
      yield* withSchemas(store, app)
      yield* Effect.gen(function*() {
        const job = pgJob(app, { partitions: 4, size: 4 })
        const { runId } = yield* Runner.start(job, { label: "retry-plan" })
        yield* shapeUnits(store, runId)
        const stateStore = yield* StateStore.StateStore
        const all = ["p0", "p1", "p2", "p3"]
        const actor = { actor: "test", reason: "clock skew" }
        const realNow = Date.now()
        const keys = (plan: ReadonlyArray<{ readonly partitionKey: string }>) => plan.map((p) => p.partitionKey)

        // The worker's clock an hour ahead: p1's lease is live in the database, so it is not retried.
        const ahead = vi.spyOn(Date, "now").mockReturnValue(realNow + HOUR)
        const planAhead = yield* stateStore.retry(runId, { partitions: all, dryRun: true }, actor)
        ahead.mockRestore()
        // An hour behind: p2's lease expired in the database, so it is retried.
        const behind = vi.spyOn(Date, "now").mockReturnValue(realNow - HOUR)
        const planBehind = yield* stateStore.retry(runId, { partitions: all, dryRun: true }, actor)
        behind.mockRestore()
        expect(keys(planAhead)).toEqual(["p0", "p2", "p3"])
        expect(keys(planBehind)).toEqual(["p0", "p2", "p3"])
        // A dry run changes nothing.
        const before = yield* unitRows(store, runId)
        expect(before.map((r) => r.status)).toEqual(["failed", "leased", "leased", "cancelled"])

        const done = yield* stateStore.retry(runId, { partitions: all, dryRun: false }, actor)
        expect(done).toEqual(planAhead)
        const after = yield* unitRows(store, runId)
        expect(after.map((r) => r.status)).toEqual(["pending", "leased", "pending", "pending"])
        // Every retried unit is fenced (a still-running worker cannot commit); the live lease is untouched.
        expect(after.map((r, i) => Number(r.token) - Number(before[i]!.token))).toEqual([1, 0, 1, 1])
        const audit = yield* stateStore.auditLog(runId)
        expect(audit.map((a) => [a.action, (a.details as { units: Array<string> }).units])).toEqual([
          ["retry", ["p0", "p2", "p3"]]
        ])
      }).pipe(Effect.scoped, Effect.provide(pgEngine(store)))
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient())))
  })
})
