/**
 * The independent check of a billed month: the rules of the specification computed again from the
 * source tables, in one query of another shape (numeric division and `floor`, no drafts, no cursor),
 * compared with what the run wrote, row by row. Also a snapshot of everything a run writes, to show
 * that running a month again changes nothing.
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import { monthBounds } from "./Billing.js"

/** What the check found. `problems` is empty when the month is billed exactly by the rules. */
export interface Verification {
  readonly invoices: number
  readonly lines: number
  readonly totalYen: bigint
  readonly problems: ReadonlyArray<string>
}

/**
 * Checks month `month` in `schema` against the rules: every expected line and invoice exists with the
 * expected amounts and nothing else does, exactly the billable records are marked billed, and every
 * invoice has one notification pointing at it and at least one mail. The billable records are the
 * month's approved ones of the companies active when they were billed: active now, or already billed
 * for the month (a company deactivated after its invoice was issued keeps it).
 */
export const verify = (schema: string, month: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const { first, next } = monthBounds(month)
    const count = (rows: ReadonlyArray<{ readonly n: number }>) => rows[0]?.n ?? 0
    const expectedLines = sql`
      select w.id as work_record_id, w.company_id,
        floor((w.minutes::numeric * w.hourly_wage_yen + 30) / 60) as wage_yen,
        w.transport_yen::numeric as transport_yen,
        floor((floor((w.minutes::numeric * w.hourly_wage_yen + 30) / 60) * c.fee_rate_bp + 5000) / 10000) as fee_yen
      from ${s}.work_records w join ${s}.companies c on c.id = w.company_id
      where (c.active or w.invoiced_month = ${first}::date) and w.status = 'approved'
        and w.worked_on >= ${first}::date and w.worked_on < ${next}::date`
    const expectedInvoices = sql`
      select company_id, count(*) as line_count, sum(wage_yen) as wages_yen, sum(transport_yen) as transport_yen,
        sum(fee_yen) as fee_yen, floor(sum(fee_yen) / 10) as tax_yen,
        sum(wage_yen) + sum(transport_yen) + sum(fee_yen) + floor(sum(fee_yen) / 10) as total_yen
      from (${expectedLines}) e group by company_id`
    const problems: Array<string> = []
    const report = (what: string, n: number) => {
      if (n > 0) problems.push(`${n} ${what}`)
    }
    report(
      "invoice line(s) missing or with other amounts than the rules give",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from (${expectedLines}) e
        left join ${s}.invoice_lines l on l.billing_month = ${first}::date and l.work_record_id = e.work_record_id
        where l.work_record_id is null or (l.company_id, l.wage_yen, l.transport_yen, l.fee_yen)
          is distinct from (e.company_id, e.wage_yen, e.transport_yen, e.fee_yen)`
      )
    )
    report(
      "invoice line(s) that the rules do not give",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from ${s}.invoice_lines l
        where l.billing_month = ${first}::date
          and not exists (select 1 from (${expectedLines}) e where e.work_record_id = l.work_record_id)`
      )
    )
    report(
      "invoice(s) missing or with other totals than the rules give",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from (${expectedInvoices}) e
        left join ${s}.invoices i on i.company_id = e.company_id and i.billing_month = ${first}::date
        where i.id is null or (i.line_count, i.wages_yen, i.transport_yen, i.fee_yen, i.tax_yen, i.total_yen)
          is distinct from (e.line_count, e.wages_yen, e.transport_yen, e.fee_yen, e.tax_yen, e.total_yen)`
      )
    )
    report(
      "invoice(s) that the rules do not give",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from ${s}.invoices i
        where i.billing_month = ${first}::date
          and not exists (select 1 from (${expectedInvoices}) e where e.company_id = i.company_id)`
      )
    )
    report(
      "billable record(s) not marked billed for the month",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from (${expectedLines}) e join ${s}.work_records w on w.id = e.work_record_id
        where w.invoiced_month is distinct from ${first}::date`
      )
    )
    report(
      "record(s) marked billed for the month that are not billable",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from ${s}.work_records w
        where w.invoiced_month = ${first}::date
          and not exists (select 1 from (${expectedLines}) e where e.work_record_id = w.id)`
      )
    )
    report(
      "invoice(s) without exactly one notification that points at them",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from ${s}.invoices i
        where i.billing_month = ${first}::date
          and (select count(*) from ${s}.billing_notifications b
               where b.company_id = i.company_id and b.billing_month = i.billing_month and b.invoice_id = i.id) <> 1`
      )
    )
    report(
      "notification(s) without their invoice",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from ${s}.billing_notifications b
        where b.billing_month = ${first}::date
          and not exists (select 1 from ${s}.invoices i where i.id = b.invoice_id and i.company_id = b.company_id)`
      )
    )
    report(
      "invoice(s) without a mail of their total",
      count(
        yield* sql<{ readonly n: number }>`
        select count(*)::int as n from ${s}.invoices i
        where i.billing_month = ${first}::date
          and not exists (select 1 from ${s}.mail_sent m where m.invoice_id = i.id and m.total_yen = i.total_yen)`
      )
    )
    const [totals] = yield* sql<{ readonly invoices: number; readonly lines: number; readonly total: string }>`
      select count(*)::int as invoices, coalesce(sum(line_count), 0)::int as lines,
        coalesce(sum(total_yen), 0)::text as total
      from ${s}.invoices where billing_month = ${first}::date`
    const verification: Verification = {
      invoices: totals?.invoices ?? 0,
      lines: totals?.lines ?? 0,
      totalYen: BigInt(totals?.total ?? "0"),
      problems
    }
    return verification
  })

/** Everything a run of the month writes, summed and hashed: two equal snapshots mean nothing changed. */
export interface Snapshot {
  readonly invoices: number
  readonly lines: number
  readonly billedRecords: number
  readonly notifications: number
  readonly mails: number
  readonly totalYen: string
  /** md5 over every row written (invoices, lines, billed record ids, notifications, mails). */
  readonly digest: string
}

/** The snapshot of month `month` in `schema`. */
export const snapshot = (schema: string, month: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const { first } = monthBounds(month)
    const [row] = yield* sql<Snapshot>`
      select
        (select count(*)::int from ${s}.invoices where billing_month = ${first}::date) as invoices,
        (select count(*)::int from ${s}.invoice_lines where billing_month = ${first}::date) as lines,
        (select count(*)::int from ${s}.work_records where invoiced_month = ${first}::date) as "billedRecords",
        (select count(*)::int from ${s}.billing_notifications where billing_month = ${first}::date) as notifications,
        (select count(*)::int from ${s}.mail_sent where billing_month = ${first}::date) as mails,
        (select coalesce(sum(total_yen), 0)::text from ${s}.invoices where billing_month = ${first}::date)
          as "totalYen",
        md5(concat_ws('|',
          (select md5(coalesce(string_agg(concat_ws(',', id, company_id, line_count, wages_yen, transport_yen, fee_yen,
            tax_yen, total_yen), ';' order by company_id), ''))
           from ${s}.invoices where billing_month = ${first}::date),
          (select md5(coalesce(string_agg(concat_ws(',', work_record_id, company_id, wage_yen, transport_yen, fee_yen),
            ';' order by work_record_id), ''))
           from ${s}.invoice_lines where billing_month = ${first}::date),
          (select md5(coalesce(string_agg(id::text, ';' order by id), ''))
           from ${s}.work_records where invoiced_month = ${first}::date),
          (select md5(coalesce(string_agg(concat_ws(',', company_id, invoice_id), ';' order by company_id), ''))
           from ${s}.billing_notifications where billing_month = ${first}::date),
          (select md5(coalesce(string_agg(concat_ws(',', idempotency_key, company_id, invoice_id, total_yen), ';'
            order by idempotency_key), ''))
           from ${s}.mail_sent where billing_month = ${first}::date)
        )) as digest`
    return row!
  })
