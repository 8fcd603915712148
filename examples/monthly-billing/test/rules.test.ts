/**
 * The billing rules on a hand-made month with exact amounts (rounding cases included), the error
 * classes and their recovery, re-running a finished month, and two workers against one.
 */
import { Runner, StateStore, Worker } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Schedule } from "effect"
import * as Billing from "../src/Billing.js"
import * as Expected from "../src/Expected.js"
import * as MonthlyBilling from "../src/MonthlyBilling.js"
import * as Seed from "../src/Seed.js"
import {
  awaitRun,
  content,
  engine,
  freshSchema,
  handMadeInvoices,
  handMadeLines,
  handMadeMonth,
  invoices,
  liveWorker,
  pgClient,
  withBilling
} from "./fixtures.js"

const month = "2026-10"

/** Runs the job for the month with `workers` workers in this process until the run ends. */
const bill = (job: ReturnType<typeof MonthlyBilling.make>, options: { workers?: number; rerun?: string } = {}) =>
  Effect.gen(function*() {
    for (let i = 0; i < (options.workers ?? 1); i++) {
      yield* Worker.make({ jobs: [job], ...liveWorker, workerId: `w${i + 1}` })
    }
    const { runId } = yield* Runner.start(job, { month }, { rerun: options.rerun })
    return yield* awaitRun(runId)
  }).pipe(Effect.scoped)

const failures = (runId: string) =>
  Effect.flatMap(StateStore.StateStore, (store) => store.listFailures(runId, { limit: 100 }))

describe("monthly billing on Postgres", () => {
  it.live("bills the hand-made month exactly by the rules", () =>
    Effect.gen(function*() {
      const { app, store } = yield* handMadeMonth
      const job = MonthlyBilling.make({ schema: app, chunkSize: 2 })
      const progress = yield* bill(job).pipe(Effect.provide(engine(store)))
      expect(progress.run.status).toBe("succeeded")
      expect(progress.run.partitionCount).toBe(2) // company 3 is inactive, 4 has nothing billable
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      const lines = yield* sql<
        { readonly r: number; readonly c: number; readonly w: number; readonly t: number; readonly f: number }
      >`
        select work_record_id::int as r, company_id::int as c, wage_yen as w, transport_yen as t, fee_yen as f
        from ${sql(app)}.invoice_lines where billing_month = '2026-10-01' order by work_record_id`
      expect(lines.map((l) => [l.r, l.c, l.w, l.t, l.f])).toEqual(handMadeLines.map((l) => [...l]))
      expect(yield* invoices(app)).toEqual(handMadeInvoices)
      const billed = yield* sql<{ readonly id: number }>`
        select id::int as id from ${sql(app)}.work_records where invoiced_month = '2026-10-01' order by id`
      expect(billed.map((b) => b.id)).toEqual([1, 2, 3, 4, 9, 10, 11])
      const outbox = yield* sql<{ readonly c: number }>`
        select b.company_id::int as c from ${sql(app)}.billing_notifications b
        join ${sql(app)}.invoices i on i.id = b.invoice_id and i.company_id = b.company_id order by 1`
      expect(outbox.map((o) => o.c)).toEqual([1, 2])
      const mails = yield* sql<{ readonly c: number; readonly total: number }>`
        select company_id::int as c, total_yen::int as total from ${sql(app)}.mail_sent order by 1`
      expect(mails).toEqual([{ c: 1, total: 2512 }, { c: 2, total: 3480 }])
      // The independent computation agrees, and still does once a billed company is deactivated: its
      // invoice was right when it was issued.
      expect((yield* Expected.verify(app, month)).problems).toEqual([])
      yield* sql`update ${sql(app)}.companies set active = false where id = 2`
      expect((yield* Expected.verify(app, month)).problems).toEqual([])
    }).pipe(Effect.scoped, Effect.provide(pgClient())), 60_000)

  it.live("a record cancelled while its chunk runs is neither marked nor billed", () =>
    Effect.gen(function*() {
      const { app } = yield* handMadeMonth
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      const s = sql(app)
      // Another transaction cancels record 2 and holds its lock while the chunk reads and bills.
      const [locked, release] = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
      const cancelling = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
        yield* sql`update ${s}.work_records set status = 'cancelled' where id = 2`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(release)
      })))
      yield* Deferred.await(locked)
      const chunk = yield* Effect.fork(sql.withTransaction(
        Billing.billChunk({ schema: app, month, company: "1", cursor: Billing.startCursor, limit: 100 })
      ))
      // Until the chunk waits for record 2's lock (a condition, not a guessed duration).
      yield* sql<{ readonly waiting: number }>`
        select count(*)::int as waiting from pg_stat_activity
        where wait_event_type = 'Lock' and state = 'active' and pid <> pg_backend_pid()
          and query like ${`%${app}%work_records%`}`
        .pipe(
          Effect.repeat({ until: ([row]) => row!.waiting > 0, schedule: Schedule.spaced("10 millis") })
        )
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(cancelling)
      expect((yield* Fiber.join(chunk)).billed).toBe(3)
      const rows = yield* sql<
        { readonly id: number; readonly status: string; readonly billed: boolean; readonly line: boolean }
      >`
        select w.id::int as id, w.status, w.invoiced_month is not null as billed, l.work_record_id is not null as line
        from ${s}.work_records w left join ${s}.invoice_lines l on l.work_record_id = w.id
        where w.id in (1, 2, 3, 4) order by w.id`
      expect(rows.map((r) => [r.id, r.status, r.billed, r.line])).toEqual([
        [1, "approved", true, true],
        [2, "cancelled", false, false],
        [3, "approved", true, true],
        [4, "approved", true, true]
      ])
      const [draft] = yield* sql<{ readonly lines: number }>`select line_count as lines from ${s}.invoice_drafts`
      expect(draft!.lines).toBe(3)
    }).pipe(Effect.scoped, Effect.provide(pgClient())), 60_000)

  it.live(
    "a record of any id on the month's first day is billed, the least bigint too (the first chunk starts at the day)",
    () =>
      Effect.gen(function*() {
        const { app } = yield* handMadeMonth
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        yield* sql`insert into ${sql(app)}.work_records
        (id, company_id, worker_id, worked_on, minutes, hourly_wage_yen, transport_yen, status)
        values (-9223372036854775808, 1, 1, '2026-10-01', 60, 1000, 0, 'approved'),
          (-7, 1, 1, '2026-10-01', 60, 1000, 0, 'approved'), (0, 1, 1, '2026-10-01', 60, 1000, 0, 'approved')`
        const result = yield* sql.withTransaction(
          Billing.billChunk({ schema: app, month, company: "1", cursor: Billing.startCursor, limit: 100 })
        )
        expect(result.billed).toBe(7)
        const billed = yield* sql<{ readonly id: string }>`
        select work_record_id::text as id from ${sql(app)}.invoice_lines order by work_record_id`
        expect(billed.map((b) => b.id)).toEqual(["-9223372036854775808", "-7", "0", "1", "2", "3", "4"])
      }).pipe(Effect.scoped, Effect.provide(pgClient())),
    60_000
  )

  it.live(
    "running a finished month again changes nothing: attached, or as an explicit re-run",
    () =>
      Effect.gen(function*() {
        const app = freshSchema("mb_app")
        const store = freshSchema("mb_store")
        yield* withBilling(app, store)
        yield* Seed.seed({ schema: app, month, companies: 12, records: 1500, seed: 7 })
        const job = MonthlyBilling.make({ schema: app, chunkSize: 50 })
        yield* Effect.gen(function*() {
          const first = yield* bill(job)
          expect(first.run.status).toBe("succeeded")
          const before = yield* Expected.snapshot(app, month)
          expect(before.invoices).toBeGreaterThan(5)
          const again = yield* Runner.start(job, { month })
          expect(again).toMatchObject({ runId: first.run.runId, created: false, status: "succeeded" })
          expect(yield* Expected.snapshot(app, month)).toEqual(before)
          const rerun = yield* bill(job, { rerun: "again" })
          expect(rerun.run.status).toBe("succeeded")
          expect(rerun.run.partitionCount).toBe(0)
          expect(yield* Expected.snapshot(app, month)).toEqual(before)
          expect((yield* Expected.verify(app, month)).problems).toEqual([])
        }).pipe(Effect.provide(engine(store)))
      }).pipe(Effect.scoped, Effect.provide(pgClient())),
    90_000
  )

  it.live(
    "two workers billing the largest companies as ranges of days give the same result as one billing them whole",
    () =>
      Effect.gen(function*() {
        const one = freshSchema("mb_one")
        const two = freshSchema("mb_two")
        const storeOne = freshSchema("mb_store")
        const storeTwo = freshSchema("mb_store")
        yield* withBilling(one, storeOne)
        yield* withBilling(two, storeTwo)
        for (const schema of [one, two]) {
          yield* Seed.seed({ schema, month, companies: 20, records: 3000, seed: 11 })
        }
        const a = yield* bill(MonthlyBilling.make({ schema: one, chunkSize: 40 }), { workers: 1 }).pipe(
          Effect.provide(engine(storeOne))
        )
        const b = yield* bill(MonthlyBilling.make({ schema: two, chunkSize: 40, splitRecords: 150 }), { workers: 2 })
          .pipe(Effect.provide(engine(storeTwo)))
        expect([a.run.status, b.run.status]).toEqual(["succeeded", "succeeded"])
        expect(a.ranges.succeeded).toBe(0)
        expect(b.ranges.succeeded).toBeGreaterThanOrEqual(4)
        expect(yield* content(two)).toEqual(yield* content(one))
        expect((yield* Expected.verify(two, month)).problems).toEqual([])
      }).pipe(Effect.scoped, Effect.provide(pgClient())),
    90_000
  )

  it.live(
    "a company deactivated mid-run fails alone with its runbook, and is billed after a retry",
    () =>
      Effect.gen(function*() {
        const { app, store } = yield* handMadeMonth
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        const job = MonthlyBilling.make({ schema: app, chunkSize: 2 })
        yield* Effect.gen(function*() {
          // The partitions are frozen when the run starts; the company is deactivated before it is billed.
          const { runId } = yield* Runner.start(job, { month })
          yield* sql`update ${sql(app)}.companies set active = false where id = 1`
          const ended = yield* Effect.scoped(Effect.zipRight(
            Worker.make({ jobs: [job], ...liveWorker }),
            awaitRun(runId)
          ))
          expect(ended.run.status).toBe("failed")
          expect(ended.units.succeeded).toBe(1)
          const [failure] = yield* failures(runId)
          expect(failure).toMatchObject({
            partitionKey: "1",
            step: "bill-records",
            errorTag: "CompanyDeactivated",
            runbookId: "billing-company-deactivated",
            outcome: "failed"
          })
          expect(yield* invoices(app)).toEqual([handMadeInvoices[1]])
          // The runbook's fix: reactivate, then retry the partition.
          yield* sql`update ${sql(app)}.companies set active = true where id = 1`
          yield* Runner.retry(runId, { partitions: ["1"] }, { actor: "test", reason: "reactivated" })
          const retried = yield* Effect.scoped(Effect.zipRight(
            Worker.make({ jobs: [job], ...liveWorker }),
            awaitRun(runId)
          ))
          expect(retried.run.status).toBe("succeeded")
          expect(yield* invoices(app)).toEqual(handMadeInvoices)
          expect((yield* Expected.verify(app, month)).problems).toEqual([])
        }).pipe(Effect.provide(engine(store)))
      }).pipe(Effect.scoped, Effect.provide(pgClient())),
    60_000
  )

  it.live(
    "a billed record that was cancelled, and a stray invoice line, stop their company with their runbooks",
    () =>
      Effect.gen(function*() {
        const { app, store } = yield* handMadeMonth
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        const s = sql(app)
        const job = MonthlyBilling.make({ schema: app, chunkSize: 10 })
        yield* Effect.gen(function*() {
          expect((yield* bill(job)).run.status).toBe("succeeded")
          // Record 2 of company 1 is cancelled after billing; record 6 is approved late, so company 1 is
          // billed again by an explicit re-run.
          yield* sql`update ${s}.work_records set status = 'cancelled' where id = 2`
          yield* sql`update ${s}.work_records set status = 'approved' where id = 6`
          // Company 2 gets a late record too, and an invoice line for it already exists (written outside the job).
          yield* sql`insert into ${s}.work_records values (14, 2, 9, '2026-10-20', 60, 1000, 0, 'approved', null)`
          yield* sql`insert into ${s}.invoice_lines values ('2026-10-01', 14, 2, 1000, 0, 25)`
          const before = yield* Expected.snapshot(app, month)
          const rerun = yield* bill(job, { rerun: "late-approvals" })
          expect(rerun.run.status).toBe("failed")
          const found = yield* failures(rerun.run.runId)
          expect(found.map((f) => [f.partitionKey, f.errorTag, f.runbookId]).sort()).toEqual([
            ["1", "RecordChangedAfterBilling", "billing-record-changed-after-billing"],
            ["2", "InvoiceWouldNotBalance", "billing-invoice-would-not-balance"]
          ])
          expect(found.find((f) => f.partitionKey === "1")!.message).toContain("work record 2 of company 1")
          // Both chunks rolled back: nothing changed.
          expect(yield* Expected.snapshot(app, month)).toEqual(before)
        }).pipe(Effect.provide(engine(store)))
      }).pipe(Effect.scoped, Effect.provide(pgClient())),
    60_000
  )
})
