/**
 * The billing rules as SQL: which companies a month bills, one chunk of a company's work records, the
 * invoice from its lines and the notification. The job and the hand-written contenders of the
 * benchmark share these statements, so they compare like with like.
 *
 * Every statement is set-based and bounded: a chunk walks the index `(company_id, worked_on, id)`
 * from its cursor, so each chunk costs the same for the largest company as for the smallest.
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import { Effect, Schema } from "effect"
import { CompanyDeactivated, InvoiceWouldNotBalance, RecordChangedAfterBilling } from "./Errors.js"

/** A billing month, `YYYY-MM`. */
export const Month = Schema.String.pipe(
  Schema.pattern(/^\d{4}-(0[1-9]|1[0-2])$/, { message: () => "a month is YYYY-MM, e.g. 2026-10" })
)

/** The first day of the month and of the next one, as `YYYY-MM-DD`. */
export const monthBounds = (month: string) => {
  const [year, m] = month.split("-").map(Number) as [number, number]
  const next = m === 12 ? `${year + 1}-01` : `${year}-${String(m + 1).padStart(2, "0")}`
  return { first: `${month}-01`, next: `${next}-01` }
}

/** Where a company's billing step stands: after the record `(workedOn, afterId)` in index order. */
export const Cursor = Schema.Struct({ workedOn: Schema.String, afterId: Schema.BigInt })

/** @since 0.1.0 */
export type Cursor = typeof Cursor.Type

/** Before the first record of the month. */
export const startCursor: Cursor = { workedOn: "", afterId: 0n }

/** The active companies with billable records in the month, heaviest first: the run's partitions. */
export const billableCompanies = (schema: string, month: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const { first, next } = monthBounds(month)
    const rows = yield* sql<{ readonly key: string; readonly weight: number }>`
      select w.company_id::text as key, count(*)::int as weight
      from ${s}.work_records w join ${s}.companies c on c.id = w.company_id
      where c.active and w.status = 'approved' and w.invoiced_month is null
        and w.worked_on >= ${first}::date and w.worked_on < ${next}::date
      group by w.company_id
      order by weight desc, w.company_id`
    return rows
  })

/** A range of days, `[from, to)` as `YYYY-MM-DD`, `null` unbounded: one unit of a split company. */
export interface DayRange {
  readonly from: string | null
  readonly to: string | null
}

/**
 * The days that cut a company's records of the month into `parts` ranges of about equal size (the
 * record dates at the 1/parts, 2/parts, ... fractions, without repeats), ascending. A company's records
 * of one day stay in one range, so a range is never smaller than a day.
 */
export const splitDays = (options: {
  readonly schema: string
  readonly month: string
  readonly company: string
  readonly parts: number
}) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const { first, next } = monthBounds(options.month)
    const fractions = Array.from({ length: options.parts - 1 }, (_, i) => (i + 1) / options.parts)
    if (fractions.length === 0) return []
    const rows = yield* sql<{ readonly day: string }>`
      select distinct d::text as day from unnest((
        select percentile_disc(${fractions}::float8[]) within group (order by worked_on)
        from ${sql(options.schema)}.work_records
        where company_id = ${options.company}::bigint and worked_on >= ${first}::date and worked_on < ${next}::date
      )) as d
      where d > ${first}::date
      order by 1`
    return rows.map((r) => r.day)
  })

/** What one chunk did. */
export interface ChunkResult {
  /** The cursor after this chunk, or `undefined` when the company's month is done. */
  readonly next: Cursor | undefined
  /** Records billed (= invoice lines written) by this chunk. */
  readonly billed: number
}

interface ChunkRow {
  readonly active: boolean | null
  readonly scanned: number
  readonly lines: number
  readonly marked: number
  readonly lastWorkedOn: string | null
  readonly lastId: string | null
  readonly unbalanced: string | null
  readonly changed: string | null
}

/**
 * Bills up to `limit` work records of `company` in `month` after `cursor`, in one statement: writes an
 * invoice line per approved, not yet billed record (the rules of the specification, in integer SQL),
 * marks those records billed, and adds the lines' sums to the company's invoice draft. Run it inside
 * a transaction (the chunk's, in `chunk` mode): a failure after the statement rolls it back.
 *
 * Fails with `CompanyDeactivated` when the company is no longer active, `RecordChangedAfterBilling`
 * when a record of the chunk that is already billed is no longer approved, and `InvoiceWouldNotBalance`
 * when the lines written differ from the records marked.
 */
export const billChunk = (options: {
  readonly schema: string
  readonly month: string
  readonly company: string
  readonly cursor: Cursor
  readonly limit: number
  /** The days this unit bills, when the company's month is split (default: the whole month). */
  readonly days?: DayRange | undefined
}) =>
  Effect.gen(function*() {
    const { company, cursor, limit, month, schema } = options
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const bounds = monthBounds(month)
    const dayFrom = options.days?.from ?? bounds.first
    const dayTo = options.days?.to ?? bounds.next
    const first = dayFrom > bounds.first ? dayFrom : bounds.first
    const next = dayTo < bounds.next ? dayTo : bounds.next
    // Before the range's first record, the scan starts at its first day, so a record of any id on that
    // day is billed (a bound "after the least id" would skip a record holding the least id itself).
    const after = cursor.workedOn < first
      ? sql`w.worked_on >= ${first}::date`
      : sql`(w.worked_on, w.id) > (${cursor.workedOn}::date, ${String(cursor.afterId)}::bigint)`
    const [row] = yield* sql<ChunkRow>`
      with co as (
        select fee_rate_bp, active from ${s}.companies where id = ${company}::bigint
      ), batch as (
        select w.id, w.worked_on, w.status, w.invoiced_month
        from ${s}.work_records w
        where w.company_id = ${company}::bigint
          and ${after}
          and w.worked_on < ${next}::date
        order by w.worked_on, w.id
        limit ${limit}
      ), marked as (
        -- Marking comes first and the lines follow from what it marked: a record another transaction
        -- changes meanwhile is re-checked here (the update waits for it, then looks at its latest
        -- version), so a record cancelled, moved to another company or month while the chunk runs is
        -- neither marked nor billed.
        update ${s}.work_records w set invoiced_month = ${bounds.first}::date
        from batch b cross join co
        where w.id = b.id and co.active and w.status = 'approved' and w.invoiced_month is null
          and w.company_id = ${company}::bigint and w.worked_on >= ${first}::date and w.worked_on < ${next}::date
        returning w.id, w.transport_yen, (w.minutes::bigint * w.hourly_wage_yen + 30) / 60 as wage, co.fee_rate_bp
      ), lines as (
        insert into ${s}.invoice_lines (billing_month, work_record_id, company_id, wage_yen, transport_yen, fee_yen)
        select ${bounds.first}::date, id, ${company}::bigint, wage, transport_yen, (wage * fee_rate_bp + 5000) / 10000
        from marked
        on conflict do nothing
        returning work_record_id, wage_yen, transport_yen, fee_yen
      ), sums as (
        select count(*)::int as n, coalesce(sum(wage_yen), 0) as wages, coalesce(sum(transport_yen), 0) as transport,
          coalesce(sum(fee_yen), 0) as fee
        from lines
      ), draft as (
        insert into ${s}.invoice_drafts as d (company_id, billing_month, line_count, wages_yen, transport_yen, fee_yen)
        select ${company}::bigint, ${bounds.first}::date, n, wages, transport, fee from sums where n > 0
        on conflict (company_id, billing_month) do update set
          line_count = d.line_count + excluded.line_count,
          wages_yen = d.wages_yen + excluded.wages_yen,
          transport_yen = d.transport_yen + excluded.transport_yen,
          fee_yen = d.fee_yen + excluded.fee_yen
      ), last as (
        select worked_on, id from batch order by worked_on desc, id desc limit 1
      )
      select
        (select active from co) as active,
        (select count(*)::int from batch) as scanned,
        (select n from sums) as lines,
        (select count(*)::int from marked) as marked,
        (select worked_on::text from last) as "lastWorkedOn",
        (select id::text from last) as "lastId",
        (select min(m.id)::text from marked m where m.id not in (select work_record_id from lines)) as "unbalanced",
        (select id::text || ' ' || status || ' ' || invoiced_month::text from batch
          where invoiced_month is not null and status <> 'approved' order by worked_on, id limit 1) as changed`
    if (row === undefined || row.active !== true) {
      return yield* new CompanyDeactivated({ companyId: company, month })
    }
    if (row.changed !== null) {
      const [workRecordId, status, invoicedMonth] = row.changed.split(" ") as [string, string, string]
      return yield* new RecordChangedAfterBilling({
        companyId: company,
        month,
        workRecordId,
        status,
        invoicedMonth: invoicedMonth.slice(0, 7)
      })
    }
    if (row.lines !== row.marked) {
      return yield* new InvoiceWouldNotBalance({
        companyId: company,
        month,
        recordsMarked: row.marked,
        linesWritten: row.lines,
        firstWorkRecordId: row.unbalanced ?? ""
      })
    }
    const result: ChunkResult = {
      next: row.scanned < limit || row.lastId === null
        ? undefined
        : { workedOn: row.lastWorkedOn!, afterId: BigInt(row.lastId) },
      billed: row.lines
    }
    return result
  })

/**
 * Issues the company's invoice for the month from its draft: tax and total by the rules. Idempotent:
 * running it again leaves the invoice as it is; after a re-run of the month billed more records, it
 * brings the invoice up to the draft. A company without lines gets no invoice.
 */
export const issueInvoice = (options: { readonly schema: string; readonly month: string; readonly company: string }) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(options.schema)
    const { first } = monthBounds(options.month)
    yield* sql`
      insert into ${s}.invoices as i
        (company_id, billing_month, line_count, wages_yen, transport_yen, fee_yen, tax_yen, total_yen)
      select company_id, billing_month, line_count, wages_yen, transport_yen, fee_yen, fee_yen * 10 / 100,
        wages_yen + transport_yen + fee_yen + fee_yen * 10 / 100
      from ${s}.invoice_drafts
      where company_id = ${options.company}::bigint and billing_month = ${first}::date and line_count > 0
      on conflict (company_id, billing_month) do update set
        line_count = excluded.line_count, wages_yen = excluded.wages_yen, transport_yen = excluded.transport_yen,
        fee_yen = excluded.fee_yen, tax_yen = excluded.tax_yen, total_yen = excluded.total_yen
      where (i.line_count, i.wages_yen, i.transport_yen, i.fee_yen)
        is distinct from (excluded.line_count, excluded.wages_yen, excluded.transport_yen, excluded.fee_yen)`
  })

/**
 * Writes the invoice's notification to the outbox (idempotent by its primary key) and hands it to the
 * mail sender with `idempotencyKey`. Runs outside a transaction (mode `none`): each write is
 * idempotent on its own, so running it again after a crash changes nothing.
 */
export const notify = (options: {
  readonly schema: string
  readonly month: string
  readonly company: string
  readonly idempotencyKey: string
}) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(options.schema)
    const { first } = monthBounds(options.month)
    const [invoice] = yield* sql<{ readonly id: string; readonly total: string }>`
      with inv as (
        select id, total_yen from ${s}.invoices
        where company_id = ${options.company}::bigint and billing_month = ${first}::date
      ), outbox as (
        insert into ${s}.billing_notifications (company_id, billing_month, invoice_id)
        select ${options.company}::bigint, ${first}::date, id from inv
        on conflict do nothing
      )
      select id::text as id, total_yen::text as total from inv`
    if (invoice === undefined) return
    yield* sendInvoiceMail({ ...options, invoiceId: invoice.id, totalYen: invoice.total })
  })

/**
 * The example's fake mail sender: it "sends" by writing a row keyed by the caller's idempotency key,
 * as a real provider deduplicates by the key it is given. A repeated call with the same key sends nothing.
 */
export const sendInvoiceMail = (mail: {
  readonly schema: string
  readonly month: string
  readonly company: string
  readonly idempotencyKey: string
  readonly invoiceId: string
  readonly totalYen: string
}) =>
  Effect.flatMap(SqlClient.SqlClient, (client) => {
    const sql = client.withoutTransforms()
    return sql`
      insert into ${sql(mail.schema)}.mail_sent (idempotency_key, company_id, billing_month, invoice_id, total_yen)
      values (${mail.idempotencyKey}, ${mail.company}::bigint, ${monthBounds(mail.month).first}::date,
        ${mail.invoiceId}::bigint, ${mail.totalYen}::bigint)
      on conflict (idempotency_key) do nothing`
  })
