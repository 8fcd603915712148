/**
 * Fixtures of the example's tests: a Postgres client on the `test` database at 127.0.0.1:5432 (a
 * missing server fails the test loudly), fresh schemas per test dropped afterwards, and the hand-made
 * month whose amounts the tests know exactly.
 */
import { type Errors, PgStateStore, QueueAdapter, Runner, type StateStore } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, LogLevel } from "effect"
import * as Tables from "../src/Tables.js"

export const DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"

export const pgClient = (maxConnections = 12) =>
  Layer.orDie(
    PgClient.layer({ host: "127.0.0.1", port: 5432, username: "postgres", database: "test", maxConnections })
  )

let counter = 0
/** A fresh schema name for one test. */
export const freshSchema = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`

/** Creates the billing tables in `schema`; drops it and the store's schema when the scope closes. */
export const withBilling = (schema: string, storeSchema: string) =>
  Effect.acquireRelease(
    Tables.migrate(schema),
    () =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.all([
          sql`drop schema if exists ${sql(schema)} cascade`,
          sql`drop schema if exists ${sql(storeSchema)} cascade`
        ])).pipe(Effect.orDie)
  )

export const quiet = Logger.minimumLogLevel(process.env["CW_TEST_LOGS"] ? LogLevel.Debug : LogLevel.None)

/** The Postgres store and the in-memory queue, on the client in context. */
export const engine = (
  storeSchema: string
): Layer.Layer<
  StateStore.StateStore | QueueAdapter.QueueAdapter,
  Errors.ConfigurationError | Errors.StoreUnavailable,
  SqlClient.SqlClient
> => Layer.mergeAll(PgStateStore.layer({ schema: storeSchema }), QueueAdapter.layerMemory(), quiet)

export const liveWorker = {
  leaseDuration: "3 seconds",
  pollInterval: "20 millis",
  feedInterval: "50 millis",
  sweepInterval: "500 millis",
  shutdownTimeout: "3 seconds"
} as const

/** Waits (real time) for the run to end, failing loudly after `seconds`. */
export const awaitRun = (
  runId: string,
  seconds = 60
): Effect.Effect<StateStore.RunProgress, Errors.StoreUnavailable | Errors.NotFound | Error, StateStore.StateStore> =>
  Runner.awaitTerminal(runId, { pollInterval: "50 millis" }).pipe(
    Effect.timeoutFail({
      duration: `${seconds} seconds`,
      onTimeout: () => new Error(`run ${runId} did not end in ${seconds}s`)
    })
  )

/**
 * Fresh app and store schemas (dropped when the scope closes), the billing tables in the app's, seeded
 * with the hand-made month (`seedHandMade`).
 */
export const handMadeMonth = Effect.gen(function*() {
  const app = freshSchema("mb_app")
  const store = freshSchema("mb_store")
  yield* withBilling(app, store)
  yield* seedHandMade(app)
  return { app, store }
})

/**
 * The hand-made month 2026-10. Company 1 (fee 10 %) and 2 (fee 2.5 %) are billed; 3 is inactive; 4
 * has only a pending record. The comments give each line's exact amounts and the rounding they test.
 */
export const seedHandMade = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    yield* sql`insert into ${s}.companies (id, name, fee_rate_bp, active) values
      (1, 'Ten percent', 1000, true), (2, 'Quarter', 250, true), (3, 'Gone', 500, false), (4, 'Idle', 0, true)`
    yield* sql`insert into ${s}.work_records
      (id, company_id, worker_id, worked_on, minutes, hourly_wage_yen, transport_yen, status) values
      -- wage 1000 exact; fee 100.0 -> 100
      (1, 1, 1, '2026-10-01', 60, 1000, 200, 'approved'),
      -- wage 17.17 -> 17 (half up keeps it); fee 1.7 -> 2
      (2, 1, 2, '2026-10-05', 1, 1030, 0, 'approved'),
      -- wage 17.5 -> 18 (exactly half: up); fee 1.8 -> 2
      (3, 1, 2, '2026-10-05', 1, 1050, 0, 'approved'),
      -- wage 750.75 -> 751; fee 75.1 -> 75
      (4, 1, 3, '2026-10-31', 45, 1001, 330, 'approved'),
      (5, 1, 3, '2026-10-10', 60, 1000, 0, 'cancelled'),
      (6, 1, 3, '2026-10-11', 60, 1000, 0, 'pending'),
      (7, 1, 1, '2026-09-30', 60, 1000, 0, 'approved'),
      (8, 1, 1, '2026-11-01', 60, 1000, 0, 'approved'),
      -- wage 2250 exact; fee 56.25 -> 56
      (9, 2, 4, '2026-10-02', 90, 1500, 0, 'approved'),
      -- wage 999.5 -> 1000 (exactly half: up); fee 25.0 -> 25
      (10, 2, 4, '2026-10-03', 30, 1999, 120, 'approved'),
      -- wage 20.0 (20.5 before the floor of the half-up rule: 20); fee 0.5 -> 1 (exactly half: up)
      (11, 2, 5, '2026-10-04', 1, 1200, 0, 'approved'),
      (12, 3, 6, '2026-10-04', 60, 1000, 0, 'approved'),
      (13, 4, 7, '2026-10-04', 60, 1000, 0, 'pending')`
    yield* sql`analyze ${s}.work_records`
  })

/** The lines the rules give for the hand-made month: [record, company, wage, transport, fee]. */
export const handMadeLines = [
  [1, 1, 1000, 200, 100],
  [2, 1, 17, 0, 2],
  [3, 1, 18, 0, 2],
  [4, 1, 751, 330, 75],
  [9, 2, 2250, 0, 56],
  [10, 2, 1000, 120, 25],
  [11, 2, 20, 0, 1]
] as const

/**
 * The invoices: company 1 fee 179 -> tax 17.9 -> 17 (rounded down), total 1786 + 530 + 179 + 17;
 * company 2 fee 82 -> tax 8.2 -> 8, total 3270 + 120 + 82 + 8.
 */
export const handMadeInvoices = [
  { company: 1, lines: 4, wages: 1786, transport: 530, fee: 179, tax: 17, total: 2512 },
  { company: 2, lines: 3, wages: 3270, transport: 120, fee: 82, tax: 8, total: 3480 }
]

/** Invoices of the month without their ids (which depend on insertion order). */
export const invoices = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (client) => {
    const sql = client.withoutTransforms()
    return sql<
      {
        readonly company: number
        readonly lines: number
        readonly wages: number
        readonly transport: number
        readonly fee: number
        readonly tax: number
        readonly total: number
      }
    >`
      select company_id::int as company, line_count as lines, wages_yen::int as wages,
        transport_yen::int as transport, fee_yen::int as fee, tax_yen::int as tax, total_yen::int as total
      from ${sql(schema)}.invoices where billing_month = '2026-10-01' order by company_id`
  })

/** What a run of the month wrote, without ids or keys that differ between runs: for comparisons. */
export const content = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const [row] = yield* sql<
      { readonly lines: string; readonly billed: string; readonly outbox: string; readonly mails: string }
    >`
      select
        (select md5(coalesce(string_agg(concat_ws(',', work_record_id, company_id, wage_yen, transport_yen, fee_yen), ';'
          order by work_record_id), '')) from ${s}.invoice_lines) as lines,
        (select md5(coalesce(string_agg(id::text || ':' || invoiced_month::text, ';' order by id), ''))
          from ${s}.work_records where invoiced_month is not null) as billed,
        (select coalesce(string_agg(b.company_id::text || ':' || (b.invoice_id = i.id)::text, ';' order by b.company_id), '')
          from ${s}.billing_notifications b join ${s}.invoices i using (company_id, billing_month)) as outbox,
        (select coalesce(string_agg(company_id || 'x' || n, ';' order by company_id), '') from
          (select company_id, count(*) as n from ${s}.mail_sent group by company_id) m) as mails`
    return { invoices: yield* invoices(schema), ...row! }
  })
