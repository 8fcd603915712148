/**
 * The deterministic data generator of the specification, in SQL (a million records take seconds):
 * company sizes follow a Zipf-like law (exponent 1.1, so the largest company holds 15–25 % of all
 * records), records fall in the month and its two neighbours, about 5 % are cancelled and 4 %
 * pending, and 1 company in 50 is inactive. The same `seed` gives the same rows on any Postgres
 * (the random numbers come from `hashtextextended`).
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import { monthBounds } from "./Billing.js"
import { BillingError } from "./Errors.js"

/** What to generate. */
export interface Options {
  readonly schema: string
  /** The month the records cluster around, `YYYY-MM`. */
  readonly month: string
  readonly companies: number
  readonly records: number
  readonly seed: number
}

/** The defaults of the one-command demo: it finishes in well under a minute on 2 cores. */
export const demoDefaults = { companies: 100, records: 50_000, seed: 42 } as const

const positive = (what: string, value: number, max: number) =>
  Number.isInteger(value) && value >= 1 && value <= max
    ? Effect.void
    : Effect.fail(
      new BillingError({ message: `${what} must be an integer from 1 to ${max} (got ${value})`, input: true })
    )

/** A uniform number in [0, 1) from 16 bits (`slice` 0..3) of a 64-bit hash. */
const slice = (hash: string, k: number) => `(((${hash}) >> ${16 * k}) & 65535)::float8 / 65536`

/**
 * Replaces the data of the billing tables in `schema` with a generated month: `companies` companies,
 * `records` work records. Every table of the run is emptied first.
 */
export const seed = (options: Options) =>
  Effect.gen(function*() {
    yield* positive("--companies", options.companies, 1_000_000)
    yield* positive("--records", options.records, 100_000_000)
    if (!Number.isInteger(options.seed)) {
      return yield* new BillingError({ message: `--seed must be an integer (got ${options.seed})`, input: true })
    }
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const s = sql(options.schema)
    const { first } = monthBounds(options.month)
    // Two 64-bit hashes per record (columns of `x`, from the seed as a parameter), cut into 16-bit slices.
    const a = "x.ha"
    const b = "x.hb"
    yield* client.withTransaction(Effect.gen(function*() {
      yield* sql`truncate ${s}.billing_notifications, ${s}.invoices, ${s}.invoice_lines, ${s}.invoice_drafts,
        ${s}.mail_sent, ${s}.work_records, ${s}.companies`
      // Company ranks are a seeded shuffle of the ids; the rank-1 company is the largest. Every 50th rank
      // (offset 25, so never the largest) is inactive.
      yield* sql`
        insert into ${s}.companies (id, name, fee_rate_bp, active)
        select g, 'Company ' || lpad(g::text, 5, '0'),
          500 + (((hashtextextended(g || ':fee', ${options.seed}) % 2001) + 2001) % 2001)::int,
          r.rank % 50 <> 25
        from generate_series(1, ${options.companies}::int) g
        join (select id, row_number() over (order by hashtextextended(id || ':rank', ${options.seed}), id) as rank
              from generate_series(1, ${options.companies}::int) id) r on r.id = g`
      yield* sql`
        with ranked as (
          select id, row_number() over (order by hashtextextended(id || ':rank', ${options.seed}), id) as rank
          from ${s}.companies
        ), weights as (
          select id, rank, 1 / power(rank, 1.1) as w, sum(1 / power(rank, 1.1)) over () as total from ranked
        ), floors as (
          select id, rank, floor(${options.records}::bigint * w / total)::bigint as n from weights
        ), counts as (
          select id as company_id,
            n + case when rank <= ${options.records}::bigint - sum(n) over () then 1 else 0 end as n
          from floors
        ), x as (
          select c.company_id, g,
            hashtextextended(c.company_id || ':' || g || ':a', ${options.seed}::bigint) as ha,
            hashtextextended(c.company_id || ':' || g || ':b', ${options.seed}::bigint) as hb
          from counts c cross join lateral generate_series(1, c.n) g
        ), shaped as (
          select x.company_id,
            (${sql.literal(slice(a, 0))}) as u_month,
            (${sql.literal(slice(a, 1))}) as u_day,
            (${sql.literal(slice(a, 2))}) as u_minutes,
            (${sql.literal(slice(a, 3))}) as u_wage,
            (${sql.literal(slice(b, 0))}) as u_transport,
            (${sql.literal(slice(b, 1))}) as u_status,
            (${sql.literal(slice(b, 2))}) as u_worker,
            ${sql.literal(b)} as h
          from x
        ), dated as (
          select *,
            (${first}::date + case when u_month < 0.15 then interval '-1 month'
                                   when u_month < 0.30 then interval '1 month' else interval '0' end)::date as m0
          from shaped
        )
        insert into ${s}.work_records
          (id, company_id, worker_id, worked_on, minutes, hourly_wage_yen, transport_yen, status)
        select row_number() over (order by worked_on, h), company_id, worker_id, worked_on, minutes, wage, transport,
          status
        from (
          select company_id,
            1 + floor(u_worker * greatest(${options.records}::bigint / 20, 1))::bigint as worker_id,
            m0 + floor(u_day * ((m0 + interval '1 month')::date - m0))::int as worked_on,
            30 + floor(u_minutes * 571)::int as minutes,
            1000 + floor(u_wage * 2001)::int as wage,
            case when u_transport < 0.3 then 0 else 100 + 10 * floor((u_transport - 0.3) / 0.7 * 191)::int end
              as transport,
            case when u_status < 0.05 then 'cancelled' when u_status < 0.09 then 'pending' else 'approved' end
              as status,
            h
          from dated
        ) r`
    }))
    yield* sql`analyze ${s}.companies`
    yield* sql`analyze ${s}.work_records`
  })
