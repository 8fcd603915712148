/**
 * The billing database: the tables of the domain specification (exactly as specified), plus what the
 * example adds for itself (the per-invoice drafts a chunk accumulates, and the fake mail sender's
 * table), created by numbered, append-only migrations in their own schema.
 *
 * @since 0.1.0
 */
import { Migrator, SqlClient } from "@effect/sql"
import { Effect } from "effect"
import { BillingError } from "./Errors.js"

const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/

/** Checks a schema name; every statement interpolates it as an identifier. */
export const checkSchema = (schema: string): Effect.Effect<string, BillingError> =>
  SCHEMA_PATTERN.test(schema)
    ? Effect.succeed(schema)
    : Effect.fail(
      new BillingError({
        message: `schema "${schema}" must be a lower-case identifier (letters, digits, _), e.g. "billing"; ` +
          `set BILLING_SCHEMA to one`,
        input: true
      })
    )

/** The migrations, by key (`<n>_<name>`, the Migrator's pattern). Never edit one that shipped: add the next. */
export const migrations = (schema: string): Record<string, Effect.Effect<void, unknown, SqlClient.SqlClient>> => ({
  // The specification's tables, column for column.
  "1_tables": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    yield* sql`
      create table ${s}.companies (
        id          bigint primary key,
        name        text    not null,
        fee_rate_bp integer not null check (fee_rate_bp between 0 and 10000),
        active      boolean not null default true
      )`
    yield* sql`
      create table ${s}.work_records (
        id              bigint primary key,
        company_id      bigint  not null references ${s}.companies(id),
        worker_id       bigint  not null,
        worked_on       date    not null,
        minutes         integer not null check (minutes > 0),
        hourly_wage_yen integer not null check (hourly_wage_yen > 0),
        transport_yen   integer not null default 0 check (transport_yen >= 0),
        status          text    not null check (status in ('approved','pending','cancelled')),
        invoiced_month  date
      )`
    yield* sql`create index work_records_company_month on ${s}.work_records (company_id, worked_on, id)`
    yield* sql`
      create table ${s}.invoices (
        id            bigserial primary key,
        company_id    bigint  not null references ${s}.companies(id),
        billing_month date    not null,
        line_count    integer not null,
        wages_yen     bigint  not null,
        transport_yen bigint  not null,
        fee_yen       bigint  not null,
        tax_yen       bigint  not null,
        total_yen     bigint  not null,
        unique (company_id, billing_month)
      )`
    yield* sql`
      create table ${s}.invoice_lines (
        billing_month  date    not null,
        work_record_id bigint  not null references ${s}.work_records(id),
        company_id     bigint  not null,
        wage_yen       integer not null,
        transport_yen  integer not null,
        fee_yen        integer not null,
        primary key (billing_month, work_record_id)
      )`
    yield* sql`
      create table ${s}.billing_notifications (
        company_id    bigint not null,
        billing_month date   not null,
        invoice_id    bigint not null,
        primary key (company_id, billing_month)
      )`
  }),
  // The example's own tables. A draft holds an invoice's running totals: each billing chunk adds its
  // lines' sums in its own transaction, so issuing an invoice never scans the month's lines (they are
  // keyed by month, not by company). The mail sender keeps its idempotency key in its own table.
  "2_drafts_and_mail": Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    yield* sql`
      create table ${s}.invoice_drafts (
        company_id    bigint not null,
        billing_month date   not null,
        line_count    integer not null,
        wages_yen     bigint not null,
        transport_yen bigint not null,
        fee_yen       bigint not null,
        primary key (company_id, billing_month)
      )`
    yield* sql`
      create table ${s}.mail_sent (
        idempotency_key text primary key,
        company_id      bigint not null,
        billing_month   date   not null,
        invoice_id      bigint not null,
        total_yen       bigint not null,
        sent_at         timestamptz not null default clock_timestamp()
      )`
  })
})

/**
 * Creates or upgrades the billing tables in `schema`. Safe when several processes start at once: one
 * transaction holds an advisory lock on the schema while the migrator runs.
 */
export const migrate = (schema: string) =>
  Effect.gen(function*() {
    yield* checkSchema(schema)
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const table = `${schema}.billing_migrations`
    yield* client.withTransaction(Effect.gen(function*() {
      yield* sql`select pg_advisory_xact_lock(hashtext(${"billing:" + schema}))`
      yield* sql`create schema if not exists ${sql(schema)}`
      yield* sql`create table if not exists ${sql(table)} (
        migration_id integer primary key,
        created_at timestamptz not null default now(),
        name text not null
      )`
      yield* Migrator.make({})({ loader: Migrator.fromRecord(migrations(schema)), table }).pipe(
        Effect.provideService(SqlClient.SqlClient, sql)
      )
    })).pipe(
      Effect.mapError((e) => new BillingError({ message: `migrating schema "${schema}" failed: ${e.message}` }))
    )
  })

/** Empties what a run writes and marks every record unbilled again (tests and the benchmark). */
export const resetBilling = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    yield* sql`truncate ${s}.billing_notifications, ${s}.invoices, ${s}.invoice_lines, ${s}.invoice_drafts, ${s}.mail_sent`
    yield* sql`update ${s}.work_records set invoiced_month = null where invoiced_month is not null`
  })
