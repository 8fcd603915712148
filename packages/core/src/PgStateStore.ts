/**
 * The production state store on Postgres, written against `@effect/sql`'s `SqlClient`: provide the
 * `PgClient` layer your service already has. Every chunk costs one statement inside the chunk's
 * transaction (the compare-and-set checkpoint with its ledger row, D3) and none outside it.
 *
 * - Tables live in their own schema (default `chunkwise`), created and migrated by `migrate` under an
 *   advisory lock, so many workers may start at once (D14).
 * - Times are the database's (`clock_timestamp()`), never the worker's (D5).
 * - Store SQL runs without the client's name transforms and reads int8 as text (D15).
 * - In a `chunk`-mode step, the user's SQL on the same `SqlClient` joins the chunk transaction (D4).
 *
 * @since 0.1.0
 */
import { SqlClient, type SqlError, type Statement } from "@effect/sql"
import { Migrator } from "@effect/sql"
import { Cause, Chunk, Effect, Exit, Layer, Option } from "effect"
import * as Errors from "./Errors.js"
import { sqlStateOf } from "./internal/classify.js"
import { outsideTransaction } from "./internal/outsideTransaction.js"
import { migrations } from "./internal/pgMigrations.js"
import { commitWith, makeSession } from "./internal/pgSession.js"
import { storeUnavailable as unavailable } from "./internal/storeUnavailable.js"
import { rerunSeparator } from "./Job.js"
import type { JobDefinition } from "./JobDefinition.js"
import * as Quarantine from "./Quarantine.js"
import type * as Runbook from "./Runbook.js"
import type {
  Actor,
  AuditEntry,
  ChunkAttempt,
  ChunkCommit,
  ClaimResult,
  FailureRecord,
  JoinOutcome,
  Lease,
  RunRecord,
  RunStatus,
  Selection,
  StateStoreShape,
  UnitRecord,
  UnitStatus
} from "./StateStore.js"
import { databaseIdentity, emptyCounts, isTerminalRun, plannedUnit, StateStore } from "./StateStore.js"

/** Options of the Postgres store. */
export interface Options {
  /** The schema that holds chunkwise's tables (default `chunkwise`): a plain lower-case identifier. */
  readonly schema?: string | undefined
  /** Run the migrations at start-up (default true); with false, start-up only checks the version. */
  readonly migrate?: boolean | undefined
}

const SCHEMA_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/

const schemaOf = (options: Options) =>
  Effect.gen(function*() {
    const schema = options.schema ?? "chunkwise"
    if (!SCHEMA_PATTERN.test(schema)) {
      return yield* new Errors.ConfigurationError({
        message:
          `PgStateStore: schema "${schema}" must be a lower-case identifier (letters, digits, _), e.g. "chunkwise"`
      })
    }
    return schema
  })

/**
 * The chunk's commit refused because its transaction had already failed (25P02): a step caught an SQL
 * error inside it. That is the step's bug (D12's `TransactionAborted`), not the store being unavailable.
 */
const stepBrokeTransaction = <A>(statement: Effect.Effect<A, SqlError.SqlError>) =>
  Effect.catchIf(
    statement,
    (error) => sqlStateOf(error) === "25P02",
    (error) => Effect.fail(new Errors.TransactionAborted({ message: error.message }))
  )

/** The newest migration this code knows. */
const LATEST = 24

/**
 * Creates or upgrades the store's schema. Safe when many processes start at once: one transaction
 * holds an advisory lock on the schema while the migrator runs (D14). Refuses a database that is at a
 * newer migration than this code knows.
 */
export const migrate = (options: Options = {}) =>
  Effect.gen(function*() {
    const schema = yield* schemaOf(options)
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const table = `${schema}.chunkwise_migrations`
    const run = Effect.gen(function*() {
      yield* sql`select pg_advisory_xact_lock(hashtext(${"chunkwise:" + schema}))`
      yield* sql`create schema if not exists ${sql(schema)}`
      yield* sql`create table if not exists ${sql(table)} (
        migration_id integer primary key,
        created_at timestamptz not null default now(),
        name text not null
      )`
      const [row] = yield* sql<{ readonly latest: number | null }>`select max(migration_id) as latest from ${
        sql(table)
      }`
      if (row !== undefined && row.latest !== null && row.latest > LATEST) {
        return yield* new Errors.ConfigurationError({
          message: `PgStateStore: schema "${schema}" is at migration ${row.latest}, newer than this code knows ` +
            `(${LATEST}). Deploy a chunkwise version that knows it; never run older workers against a newer schema.`
        })
      }
      if (options.migrate === false) {
        if (row === undefined || row.latest !== LATEST) {
          return yield* new Errors.ConfigurationError({
            message: `PgStateStore: schema "${schema}" is at migration ${row?.latest ?? "none"}, this code needs ` +
              `${LATEST}. Run PgStateStore.migrate (or start with migrate: true).`
          })
        }
        return
      }
      yield* Migrator.make({})({ loader: Migrator.fromRecord(migrations(schema)), table }).pipe(
        Effect.provideService(SqlClient.SqlClient, sql)
      )
    })
    yield* client.withTransaction(run).pipe(
      Effect.catchTags({
        SqlError: (e) => Effect.fail(unavailable("migrate")(e)),
        MigrationError: (e) =>
          Effect.fail(new Errors.ConfigurationError({ message: `PgStateStore: migration failed: ${e.message}` }))
      })
    )
  })

// ---- row shapes, as selected (times in epoch ms, int8 as text)

const UNIT_COLUMNS = `u.run_id as "runId", u.unit_id as "unitId", u.job, u.kind, u.partition_key as "partitionKey",
  u.weight, u.status, u.step_index as "stepIndex", u.cursor, u.chunk_seq as "chunkSeq", u.generation, u.attempt,
  u.crashes_since_progress as "crashesSinceProgress", u.fencing_token::text as "fencingToken",
  u.lease_owner as "leaseOwner", (extract(epoch from u.lease_expires_at) * 1000)::float8 as "leaseExpiresAt",
  u.enqueue_seq as "enqueueSeq", (extract(epoch from u.enqueued_at) * 1000)::float8 as "enqueuedAt",
  (extract(epoch from u.retry_at) * 1000)::float8 as "retryAt", u.chunks::text as chunks, u.items::text as items,
  (extract(epoch from u.started_at) * 1000)::float8 as "startedAt",
  (extract(epoch from u.finished_at) * 1000)::float8 as "finishedAt", u.last_error_tag as "lastErrorTag",
  u.parent_unit_id as "parentUnitId", u.range`

const RUN_COLUMNS = `r.run_id as "runId", r.job, r.run_key as "runKey", r.params, r.definition, r.fingerprint, r.status,
  r.partition_count as "partitionCount", r.failure_budget::text as "failureBudget", r.finalize_seq as "finalizeSeq",
  (extract(epoch from r.created_at) * 1000)::float8 as "createdAt",
  (extract(epoch from r.updated_at) * 1000)::float8 as "updatedAt",
  (extract(epoch from r.finished_at) * 1000)::float8 as "finishedAt", r.reason`

type Row = Record<string, unknown>

const num = (value: unknown): number => (typeof value === "number" ? value : Number(value))
const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : num(value))

const toUnit = (row: Row): UnitRecord => ({
  runId: row["runId"] as string,
  unitId: row["unitId"] as string,
  job: row["job"] as string,
  kind: row["kind"] as UnitRecord["kind"],
  partitionKey: row["partitionKey"] as string,
  weight: num(row["weight"]),
  status: row["status"] as UnitStatus,
  stepIndex: num(row["stepIndex"]),
  cursor: row["cursor"] ?? null,
  chunkSeq: num(row["chunkSeq"]),
  generation: num(row["generation"]),
  attempt: num(row["attempt"]),
  crashesSinceProgress: num(row["crashesSinceProgress"]),
  fencingToken: num(row["fencingToken"]),
  leaseOwner: (row["leaseOwner"] as string | null) ?? null,
  leaseExpiresAt: numOrNull(row["leaseExpiresAt"]),
  enqueueSeq: num(row["enqueueSeq"]),
  enqueuedAt: numOrNull(row["enqueuedAt"]),
  retryAt: numOrNull(row["retryAt"]),
  chunks: num(row["chunks"]),
  items: num(row["items"]),
  startedAt: numOrNull(row["startedAt"]),
  finishedAt: numOrNull(row["finishedAt"]),
  lastErrorTag: (row["lastErrorTag"] as string | null) ?? null,
  parentUnitId: (row["parentUnitId"] as string | null) ?? null,
  range: row["range"] ?? null
})

/** A run from its row; `prefix` names its columns where they share a row with a unit's (the claim's). */
const toRun = (row: Row, prefix = ""): RunRecord => ({
  runId: row[`${prefix}runId`] as string,
  job: row[`${prefix}job`] as string,
  runKey: row[`${prefix}runKey`] as string,
  params: row[`${prefix}params`],
  definition: row[`${prefix}definition`] as JobDefinition,
  fingerprint: row[`${prefix}fingerprint`] as string,
  status: row[`${prefix}status`] as RunStatus,
  partitionCount: num(row[`${prefix}partitionCount`]),
  failureBudget: num(row[`${prefix}failureBudget`]),
  finalizeSeq: num(row[`${prefix}finalizeSeq`]),
  createdAt: num(row[`${prefix}createdAt`]),
  updatedAt: num(row[`${prefix}updatedAt`]),
  finishedAt: numOrNull(row[`${prefix}finishedAt`]),
  reason: (row[`${prefix}reason`] as string | null) ?? null
})

const toFailure = (row: Row): FailureRecord => ({
  runId: row["runId"] as string,
  unitId: row["unitId"] as string,
  partitionKey: row["partitionKey"] as string,
  step: row["step"] as string,
  errorTag: row["errorTag"] as string,
  message: row["message"] as string,
  cause: row["cause"] as string,
  cursor: (row["cursor"] as string | null) ?? null,
  attempt: num(row["attempt"]),
  runbookId: row["runbookId"] as string,
  severity: row["severity"] as Runbook.Severity,
  outcome: row["outcome"] as FailureRecord["outcome"],
  at: num(row["at"])
})

/** @effect/sql reports a failed COMMIT as a defect carrying an SqlError. */
const isSqlError = (defect: unknown): defect is SqlError.SqlError =>
  typeof defect === "object" && defect !== null && (defect as { readonly _tag?: unknown })._tag === "SqlError"

/** A parameter in Postgres's text form, as a statement sent by `commitWith` takes it. */
const asText = (value: unknown): string | null => value === null || value === undefined ? null : String(value)

/** The message Postgres gave with an error (a function's RAISE text), under the SqlError. */
const serverMessageOf = (error: SqlError.SqlError): string =>
  String((error.cause as { readonly message?: unknown } | undefined)?.message ?? error.message)

/** Boxes a user error so the transaction can tell it from the store's own SQL errors. */
class UserFailure {
  constructor(readonly error: unknown) {}
}

/** Makes the store; runs the migrations first unless `migrate: false`. */
export const make = (options: Options = {}): Effect.Effect<
  StateStoreShape,
  Errors.ConfigurationError | Errors.StoreUnavailable,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const schema = yield* schemaOf(options)
    yield* migrate(options)
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const s = sql(schema)
    const units = sql.literal(UNIT_COLUMNS)
    const runs = sql.literal(RUN_COLUMNS)
    const ms = (value: number) => sql`(${value}::float8 * interval '1 millisecond')`
    /**
     * The one statement of every chunk, written out once: the tagged template compiles its sixteen
     * fragments on every call, about a tenth of the chunk's statement CPU in the worker. Parameterised
     * like every other statement; the schema is a checked plain identifier (`SCHEMA_PATTERN`).
     */
    const commitStatement = (fn: "commit_chunk" | "commit_fused" | "commit_chunk_last") =>
      `select "${schema}".${fn}($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16) as status`
    const commitChunkStatement = commitStatement("commit_chunk")
    /** A chunk with the single step fused after it: refused unless the run is running (migration 19). */
    const commitFusedStatement = commitStatement("commit_fused")
    /** Either of the two as the last statement of its transaction, sent with the COMMIT (migration 24). */
    const commitLastStatement = commitStatement("commit_chunk_last")
    /**
     * A statement of the chunk's commit, run on its transaction's connection directly: the statement
     * API's work around it (a scope, the connection's lookup, the row transform's) was a fifth of the
     * store's Node CPU per chunk. It keeps its `sql.execute` span, a leaf: opened with `useSpan`, which
     * does not provide it as the parent of what runs inside (nothing does), 5 µs of CPU less than
     * `withSpan` with its attributes. Outside a transaction (a `none`-mode step's commit) it is an
     * ordinary statement.
     */
    const onChunkConnection = <A extends object>(statement: string, params: ReadonlyArray<unknown>) =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
        transaction._tag === "None"
          ? sql.unsafe<A>(statement, params)
          : inStatementSpan(
            statement,
            transaction.value[0].execute(statement, params, undefined) as Effect.Effect<
              ReadonlyArray<A>,
              SqlError.SqlError
            >
          ))
    /** `effect`, which runs `statement` on a connection directly, in the statement's `sql.execute` span. */
    const inStatementSpan = <A, E>(statement: string, effect: Effect.Effect<A, E>) =>
      Effect.useSpan("sql.execute", { kind: "client", captureStackTrace: false }, (span) => {
        span.attribute("db.system.name", "postgresql")
        span.attribute("db.operation.name", "execute")
        span.attribute("db.query.text", statement)
        return effect
      })
    /** Store writes that must survive a chunk's rollback run outside any transaction (D4). */
    const detached = outsideTransaction
    /** A store transaction; a failed COMMIT (a defect in @effect/sql) becomes an ordinary SqlError. */
    const tx = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      client.withTransaction(effect).pipe(
        Effect.catchSomeDefect((defect) =>
          isSqlError(defect)
            ? Option.some(Effect.fail(defect))
            : Option.none()
        )
      )
    /** `StateStoreShape.transaction`: `withTransaction`, its errors told apart as the port says. */
    const transaction: StateStoreShape["transaction"] = (effect) =>
      Effect.suspend(() => {
        // How the step ended tells whose a SqlError defect is: @effect/sql turns a failed COMMIT or
        // ROLLBACK into one, in place of the step's exit.
        let step: Exit.Exit<unknown, unknown> | undefined
        return client.withTransaction(
          Effect.mapError(effect, (error) => new UserFailure(error)).pipe(
            Effect.onExit((exit) => Effect.sync(() => (step = exit)))
          )
        ).pipe(
          Effect.mapError((error) =>
            error instanceof UserFailure
              ? error.error as never
              : unavailable("transaction")(error)
          ),
          Effect.catchSomeDefect((defect) => {
            if (!isSqlError(defect) || step === undefined) return Option.none()
            // The step succeeded, then COMMIT failed: its outcome is unknown (D3).
            if (Exit.isSuccess(step)) {
              return Option.some(Effect.fail(new Errors.CommitOutcomeUnknown({ message: defect.message })))
            }
            // The step died of this error itself: its defect stands.
            if (Chunk.some(Cause.defects(step.cause), (own) => own === defect)) return Option.none()
            // The step failed, then ROLLBACK failed (its connection lost): nothing committed; the step's
            // own failure stands, as it would had the ROLLBACK gone through.
            return Option.some(
              Effect.failCause(Cause.map(step.cause, (error) => (error as UserFailure).error as never))
            )
          })
        )
      })
    /** The store's own SQL errors become `StoreUnavailable`, naming the operation; other errors pass. */
    const op = <A, E extends { readonly _tag: string }>(
      operation: string,
      effect: Effect.Effect<A, E>
    ): Effect.Effect<A, Exclude<E, SqlError.SqlError> | Errors.StoreUnavailable> =>
      Effect.mapError(effect, (error) =>
        error._tag === "SqlError"
          ? unavailable(operation)(error as unknown as SqlError.SqlError)
          : error as Exclude<E, SqlError.SqlError>)

    /**
     * Why a chunk's compare-and-set matched no row, as the error that says so: fenced by a newer claim or
     * an operator action, the lease expired, or the checkpoint already moved (a commit whose reply was lost).
     */
    const whyNotMoved = (lease: Lease) =>
      Effect.gen(function*() {
        const [now] = yield* op(
          "commitChunk",
          sql<Row>`
          select fencing_token::text as token, status, lease_owner as owner,
            (lease_expires_at > clock_timestamp()) as live
          from ${s}.units where run_id = ${lease.runId} and unit_id = ${lease.unitId}`
        )
        if (
          now === undefined || num(now["token"]) !== lease.fencingToken || now["owner"] !== lease.workerId ||
          now["status"] !== "leased"
        ) {
          return yield* leaseLost(lease, "fenced by a newer claim or an operator action")
        }
        if (now["live"] !== true) return yield* leaseLost(lease, "the lease expired before the commit")
        return yield* new Errors.CheckpointMoved({ runId: lease.runId, unitId: lease.unitId })
      })

    const getRun = (runId: string) =>
      Effect.map(
        sql<Row>`select ${runs} from ${s}.runs r where r.run_id = ${runId}`,
        (rows) => Option.map(Option.fromNullable(rows[0]), toRun)
      )
    const requireRun = (runId: string) =>
      Effect.flatMap(
        op("getRun", getRun(runId)),
        Option.match({
          onNone: () => Effect.fail(new Errors.NotFound({ what: "run", id: runId })),
          onSome: Effect.succeed
        })
      )
    const leaseLost = (lease: Lease, reason: string) =>
      new Errors.LeaseLost({ runId: lease.runId, unitId: lease.unitId, reason })
    const audit = (runId: string, action: AuditEntry["action"], actor: Actor, details: unknown) =>
      sql`insert into ${s}.audit (actor, action, run_id, reason, details)
          values (${actor.actor}, ${action}, ${runId}, ${actor.reason}, ${JSON.stringify(details)}::jsonb)`

    /** A CTE that frees the job slot this lease holds, if any (D16); it runs in the statement that ends the unit. */
    const freeSlot = (lease: Lease) =>
      sql`free_slot as (
        update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
        where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken})`
    /**
     * The `units.attempt` a unit goes back with (a SET expression): `spent` (0 or 1) past the greater of
     * its own count and the worker's, or its own when it has moved past the chunk the worker counted
     * (that chunk committed).
     */
    const attemptAfter = (at: ChunkAttempt | undefined, spent: number) =>
      at === undefined
        ? sql`attempt + ${spent}::integer`
        : sql`case when step_index = ${at.stepIndex}::integer and chunk_seq = ${at.chunkSeq}::integer
            then greatest(attempt, ${at.attempt}::integer) + ${spent}::integer else attempt end`
    /** Jobs whose `concurrency.total` slot rows exist, by the cap they were made for. */
    const slotsMade = new Map<string, number>()
    /** Makes the job's slot rows 1..total once per process (a lower total later leaves the extra rows unused). */
    const ensureSlots = (job: string, total: number) =>
      slotsMade.get(job) === total ? Effect.void : Effect.zipRight(
        sql`insert into ${s}.job_slots (job, slot) select ${job}, g from generate_series(1, ${total}::int) g
            on conflict do nothing`,
        Effect.sync(() => void slotsMade.set(job, total))
      )

    /**
     * Takes the run row's lock first in an operator's transaction: the order a unit's last commit takes
     * its locks in (the run, then its unit), so neither waits on the other in a cycle.
     */
    const lockRun = (runId: string) => sql`select 1 from ${s}.runs where run_id = ${runId} for no key update`

    /**
     * Moves a running or failing run with nothing left to run to `finalizing`, with its finalize unit:
     * the try_finalize function (migration 10), which checks under the run row's lock.
     */
    const finalizeIfComplete = (runId: string) =>
      Effect.map(
        sql<{ readonly unitId: string | null }>`select ${s}.try_finalize(${runId}) as "unitId"`,
        ([row]) => row?.unitId !== null && row?.unitId !== undefined
      )

    /**
     * The split barrier (D7's pattern): moves each waiting partition that `which` selects (alias `p`)
     * and whose current ranges are all terminal on, by one compare-and-set. Run after the ranges'
     * commits, so the last finisher sees every range; `u.status = 'waiting'` is re-checked under the row
     * lock, so of two finishers only one moves the partition.
     */
    const joinWaiting = (which: Statement.Fragment) =>
      sql<{ readonly unitId: string; readonly status: UnitStatus }>`
        with parents as (
          select p.run_id, p.unit_id, p.generation, p.step_index,
            jsonb_array_length(r.definition -> 'steps') as steps
          from ${s}.units p join ${s}.runs r on r.run_id = p.run_id
          where p.status = 'waiting' and ${which}),
        ranges as (
          select p.run_id, p.unit_id,
            count(*) filter (where c.status not in ('succeeded', 'skipped', 'failed', 'cancelled')) as open,
            count(*) filter (where c.status = 'failed') as failed,
            count(*) filter (where c.status = 'cancelled') as cancelled,
            (array_agg(c.last_error_tag) filter (where c.status = 'failed'))[1] as tag
          from parents p join ${s}.units c
            on c.run_id = p.run_id and c.parent_unit_id = p.unit_id and c.generation = p.generation
          group by p.run_id, p.unit_id),
        moved as (
          select p.run_id, p.unit_id,
            case when k.failed > 0 then 'failed' when k.cancelled > 0 then 'cancelled'
              when p.step_index + 1 >= p.steps then 'succeeded' else 'pending' end as status,
            k.tag, k.failed + k.cancelled = 0 as advance
          from parents p join ranges k on k.run_id = p.run_id and k.unit_id = p.unit_id
          where k.open = 0)
        update ${s}.units u set status = m.status,
          step_index = u.step_index + case when m.advance then 1 else 0 end,
          chunk_seq = case when m.advance then 0 else u.chunk_seq end,
          cursor = case when m.advance then null else u.cursor end,
          attempt = 1, crashes_since_progress = 0, retry_at = null, enqueued_at = null,
          fencing_token = u.fencing_token + case when m.advance then 0 else 1 end,
          last_error_tag = case when m.status = 'failed' then m.tag else u.last_error_tag end,
          finished_at = case when m.status = 'pending' then null else clock_timestamp() end
        from moved m
        where u.run_id = m.run_id and u.unit_id = m.unit_id and u.status = 'waiting'
        returning u.unit_id as "unitId", u.status`
    /** Cancels the current ranges of the partitions `ids` (an operator moved the partitions themselves). */
    const cancelRanges = (runId: string, ids: ReadonlyArray<string>) =>
      sql`
        with cancelled as (
          update ${s}.units c set status = 'cancelled', fencing_token = c.fencing_token + 1, lease_owner = null,
            lease_expires_at = null, finished_at = clock_timestamp()
          from ${s}.units p
          where p.run_id = ${runId} and p.unit_id in ${sql.in(ids)} and c.run_id = p.run_id
            and c.parent_unit_id = p.unit_id and c.generation = p.generation
            and c.status in ('pending', 'leased')
          returning c.unit_id)
        update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
        where run_id = ${runId} and unit_id in (select unit_id from cancelled)`

    /** Re-opens a finished (or finalizing) run for another round; cancels its pending finalize unit. */
    /**
     * A chunk's quarantine changes, after its compare-and-set in the same transaction (D17): items set
     * aside are upserted, a re-run's resolved ones marked, then the budgets are checked with this chunk
     * counted. Chunks that set items aside take a lock per run first, so two of them never both pass a
     * budget that only one fits in.
     */
    const recordQuarantine = (commit: ChunkCommit, change: NonNullable<ChunkCommit["quarantine"]>) =>
      Effect.gen(function*() {
        const { lease, step } = commit
        if (change.budgets !== undefined && change.items.length > 0) {
          yield* sql`select pg_advisory_xact_lock(hashtextextended(${`chunkwise.quarantine:${schema}:${lease.runId}`}, 0))`
        }
        if (change.items.length > 0) {
          yield* sql`
            insert into ${s}.quarantine (run_id, step, partition_key, item_id, unit_id, item, cursor, range, error_tag,
              message, runbook_id)
            select u.run_id, ${step}, u.partition_key, x.item_id, u.unit_id, coalesce(x.item, 'null'::jsonb),
              ${change.cursor === null ? null : JSON.stringify(change.cursor)}::jsonb,
              ${
            change.range === null ? null : JSON.stringify(change.range)
          }::jsonb, x.error_tag, x.message, x.runbook_id
            from ${s}.units u, jsonb_to_recordset(${
            JSON.stringify(change.items.map((i) => ({
              item_id: i.itemId,
              item: i.item,
              error_tag: i.errorTag,
              message: i.message,
              runbook_id: i.runbookId
            })))
          }::jsonb) as x(item_id text, item jsonb, error_tag text, message text, runbook_id text)
            where u.run_id = ${lease.runId} and u.unit_id = ${lease.unitId}
            on conflict (run_id, step, partition_key, item_id) do update set status = 'quarantined',
              attempts = ${s}.quarantine.attempts + 1, item = excluded.item, error_tag = excluded.error_tag,
              message = excluded.message, runbook_id = excluded.runbook_id, updated_at = clock_timestamp()`
        }
        if (change.resolved !== undefined && change.resolved.length > 0) {
          yield* sql`
            update ${s}.quarantine q set status = 'resolved', updated_at = clock_timestamp()
            from ${s}.units u
            where u.run_id = ${lease.runId} and u.unit_id = ${lease.unitId} and q.run_id = u.run_id
              and q.step = ${step} and q.partition_key = u.partition_key and q.item_id in ${sql.in(change.resolved)}
              and q.status = 'retry'`
        }
        if (change.budgets === undefined || change.items.length === 0) return
        const [counts] = yield* sql<Row>`
          with me as (
            select partition_key, coalesce(parent_unit_id, unit_id) as partition_unit from ${s}.units
            where run_id = ${lease.runId} and unit_id = ${lease.unitId})
          select
            (select count(*) from ${s}.quarantine q, me where q.run_id = ${lease.runId} and q.step = ${step}
              and q.partition_key = me.partition_key and q.status in ('quarantined', 'retry'))::text as "partitionSkipped",
            (select coalesce(sum(l.items), 0) from ${s}.ledger l, me where l.run_id = ${lease.runId} and l.step = ${step}
              and l.unit_id in (select unit_id from ${s}.units where run_id = ${lease.runId}
                and (unit_id = me.partition_unit or parent_unit_id = me.partition_unit)))::text as "partitionHandled",
            (select count(*) from ${s}.quarantine where run_id = ${lease.runId}
              and status in ('quarantined', 'retry'))::text as "runSkipped",
            (select coalesce(sum(items), 0) from ${s}.units where run_id = ${lease.runId})::text as "runHandled",
            (select partition_key from me) as "partitionKey"`
        const over = Quarantine.overBudget({
          budgets: change.budgets,
          partition: { skipped: num(counts!["partitionSkipped"]), handled: num(counts!["partitionHandled"]) },
          run: { skipped: num(counts!["runSkipped"]), handled: num(counts!["runHandled"]) },
          step,
          partitionKey: counts!["partitionKey"] as string,
          items: change.items
        })
        if (over !== undefined) return yield* over
      })

    /** The SQL condition of a quarantine filter on `q`. */
    const quarantineFilter = (filter: Quarantine.Filter) =>
      sql.and([
        sql`true`,
        ...(filter.step === undefined ? [] : [sql`q.step = ${filter.step}`]),
        ...(filter.partitions === undefined ? [] : [
          filter.partitions.length === 0 ? sql`false` : sql`q.partition_key in ${sql.in(filter.partitions)}`
        ]),
        ...(filter.status === undefined ? [] : [
          filter.status.length === 0 ? sql`false` : sql`q.status in ${sql.in(filter.status)}`
        ])
      ])

    /** A run's base key as its run key gives it: for runs a worker before migration 23 started, which have none. */
    const baseKeyFromRunKey = sql`split_part(run_key, ${rerunSeparator}, 1)`
    /**
     * Fails with `RunAlreadyActive` while a run of `job` with `baseKey` other than `runId` has not ended.
     * Takes an advisory lock on the base key first, held to the transaction's end, so starts and re-opens
     * of one base key go one at a time and each sees the runs committed before it.
     */
    const refuseBesideActive = (run: { job: string; baseKey: string; runId: string; runKey: string }) =>
      Effect.gen(function*() {
        yield* sql`select pg_advisory_xact_lock(hashtext(${`chunkwise:run:${run.job}:${run.baseKey}`}))`
        const [active] = yield* sql<{ readonly runId: string; readonly status: string }>`
          select run_id as "runId", status from ${s}.runs
          where job = ${run.job} and run_id <> ${run.runId} and status not in ('succeeded', 'failed', 'cancelled')
            and (base_key = ${run.baseKey}
              -- A run a worker of the version before migration 23 started has no base key: its key says it.
              or (base_key is null and ${baseKeyFromRunKey} = ${run.baseKey}))
          limit 1`
        if (active !== undefined) {
          return yield* new Errors.RunAlreadyActive({
            job: run.job,
            runKey: run.runKey,
            activeRunId: active.runId,
            activeStatus: active.status
          })
        }
      })
    /** An ended run re-opens only while no other run of its params is active (as `createRun` refuses one). */
    const refuseReopenBesideActive = (run: RunRecord) =>
      isTerminalRun(run.status)
        ? Effect.flatMap(
          sql<{ readonly baseKey: string }>`
            select coalesce(base_key, ${baseKeyFromRunKey}) as "baseKey" from ${s}.runs
            where run_id = ${run.runId}`,
          ([row]) => refuseBesideActive({ ...run, baseKey: row!.baseKey })
        )
        : Effect.void

    const reopen = (runId: string) =>
      Effect.gen(function*() {
        yield* sql`
          update ${s}.units u set status = 'cancelled', fencing_token = fencing_token + 1, lease_owner = null,
            lease_expires_at = null, finished_at = clock_timestamp()
          from ${s}.runs r
          where r.run_id = ${runId} and u.run_id = r.run_id and r.status = 'finalizing'
            and u.unit_id = 'finalize-' || r.finalize_seq and u.status in ('pending', 'leased')`
        yield* sql`
          update ${s}.runs set
            finalize_seq = finalize_seq + 1,
            status = 'running', reason = null, finished_at = null, updated_at = clock_timestamp()
          where run_id = ${runId} and status not in ('enumerating', 'running')`
      })

    /**
     * Units an operator action selects, each with `eligible` evaluated in SQL by `eligible` (the same
     * fragment the action's UPDATE uses, on the database's clock, D5). `lock` takes the rows `FOR UPDATE`,
     * so no claim can change them between the plan and the action: the plan is what the action does.
     */
    const selectUnits = (
      runId: string,
      selection: Selection,
      defaultStatuses: ReadonlyArray<UnitStatus>,
      eligible: Statement.Fragment,
      lock: boolean
    ) =>
      Effect.gen(function*() {
        const forUpdate = lock ? sql`for update of u` : sql``
        const rows = selection.partitions === undefined
          ? yield* sql<Row>`select ${units}, (${eligible}) as eligible from ${s}.units u
              where u.run_id = ${runId} and u.kind = 'partition' and u.status in ${sql.in(defaultStatuses)}
              order by u.partition_key ${forUpdate}`
          : selection.partitions.length === 0
          ? []
          : yield* sql<Row>`select ${units}, (${eligible}) as eligible from ${s}.units u
              where u.run_id = ${runId} and u.kind = 'partition' and u.partition_key in ${sql.in(selection.partitions)}
              order by u.partition_key ${forUpdate}`
        const found = rows.map((row) => ({ unit: toUnit(row), eligible: row["eligible"] === true }))
        const missing = (selection.partitions ?? []).find((key) => !found.some((f) => f.unit.partitionKey === key))
        if (missing !== undefined) return yield* new Errors.NotFound({ what: `partition of run ${runId}`, id: missing })
        return found
      })
    /** Retry leaves a unit alone while a worker holds a live lease on it (the database's clock decides). */
    const retryable = sql`not (u.status = 'leased' and u.lease_expires_at > clock_timestamp())`
    /** Skip takes any unit that has not already succeeded or been skipped. */
    const skippable = sql`u.status not in ('succeeded', 'skipped')`

    const store: StateStoreShape = {
      kind: "postgres",
      database: {
        identity: op("databaseIdentity", databaseIdentity(client)),
        idleInTransactionTimeoutMs: op(
          "idleInTransactionTimeout",
          Effect.map(
            sql<{ readonly ms: string }>`
              select (extract(epoch from current_setting('idle_in_transaction_session_timeout')::interval) * 1000)::text as ms`,
            (rows) => Number(rows[0]?.ms ?? 0)
          )
        )
      },

      probe: (effect) =>
        Effect.gen(function*() {
          yield* op("probe", sql`savepoint chunkwise_probe`)
          const exit = yield* Effect.exit(effect)
          yield* op("probe", sql`rollback to savepoint chunkwise_probe`)
          yield* op("probe", sql`release savepoint chunkwise_probe`)
          return exit
        }),

      transaction,
      session: makeSession(client, transaction),

      createRun: (input) =>
        op(
          "createRun",
          Effect.gen(function*() {
            const existing = yield* getRun(input.runId)
            if (Option.isSome(existing)) return { run: existing.value, created: false }
            const inserted = yield* tx(Effect.gen(function*() {
              yield* refuseBesideActive(input)
              return yield* sql`
                insert into ${s}.runs (run_id, job, run_key, base_key, params, definition, fingerprint, status)
                values (${input.runId}, ${input.job}, ${input.runKey}, ${input.baseKey},
                  ${JSON.stringify(input.params)}::jsonb, ${JSON.stringify(input.definition)}::jsonb,
                  ${input.fingerprint}, 'enumerating')
                on conflict (run_id) do nothing
                returning run_id`
            }))
            const run = yield* getRun(input.runId)
            return { run: Option.getOrThrow(run), created: inserted.length > 0 }
          })
        ),

      insertUnits: (runId, inputs) =>
        inputs.length === 0 ? Effect.void : op(
          "insertUnits",
          Effect.asVoid(sql`
            insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight)
            select ${runId}, x.unit_id, r.job, 'partition', x.partition_key, x.weight
            from jsonb_to_recordset(${
            JSON.stringify(inputs.map((u) => ({ unit_id: u.unitId, partition_key: u.partitionKey, weight: u.weight })))
          }::jsonb)
              as x(unit_id text, partition_key text, weight float8)
            join ${s}.runs r on r.run_id = ${runId}
            on conflict do nothing`)
        ),

      openRun: (runId, budget) =>
        Effect.gen(function*() {
          const [row] = yield* op(
            "openRun",
            sql<{ readonly n: string }>`
            select count(*)::text as n from ${s}.units where run_id = ${runId} and kind = 'partition'`
          )
          const count = num(row?.n ?? 0)
          yield* op(
            "openRun",
            sql`
            update ${s}.runs set status = 'running', partition_count = ${count},
              failure_budget = ${budget(count)}, updated_at = clock_timestamp()
            where run_id = ${runId} and status = 'enumerating'`
          )
          yield* op("openRun", finalizeIfComplete(runId))
          return yield* requireRun(runId)
        }),

      getRun: (runId) => op("getRun", getRun(runId)),

      listRuns: ({ job, limit }) =>
        op(
          "listRuns",
          Effect.map(
            job === undefined
              ? sql<Row>`select ${runs} from ${s}.runs r order by r.created_at desc limit ${limit}`
              : sql<
                Row
              >`select ${runs} from ${s}.runs r where r.job = ${job} order by r.created_at desc limit ${limit}`,
            (rows) => rows.map((row) => toRun(row))
          )
        ),

      progress: (runId) =>
        Effect.gen(function*() {
          const run = yield* requireRun(runId)
          const rows = yield* op(
            "progress",
            sql<Row>`
            select kind, status, step_index as "stepIndex", count(*)::text as n, sum(chunks)::text as chunks,
              sum(items)::text as items
            from ${s}.units where run_id = ${runId} and kind <> 'finalize'
            group by kind, status, step_index`
          )
          const counts = emptyCounts()
          const ranges = emptyCounts()
          const atStep: Array<number> = run.definition.steps.map(() => 0)
          let chunks = 0
          let items = 0
          for (const row of rows) {
            const status = row["status"] as UnitStatus
            const n = num(row["n"])
            const stepIndex = num(row["stepIndex"])
            chunks += num(row["chunks"])
            items += num(row["items"])
            if (row["kind"] === "range") {
              ranges[status] += n
              continue
            }
            if (row["kind"] === "items") continue
            counts[status] += n
            if ((status === "pending" || status === "leased" || status === "waiting") && stepIndex < atStep.length) {
              atStep[stepIndex]! += n
            }
          }
          const held = Quarantine.emptyCounts()
          const quarantined = yield* op(
            "progress",
            sql<Row>`select status, count(*)::text as n from ${s}.quarantine where run_id = ${runId} group by status`
          )
          for (const row of quarantined) held[row["status"] as Quarantine.Status] += num(row["n"])
          return { run, units: counts, atStep, ranges, quarantine: held, chunks, items }
        }),

      listUnits: (runId, { limit, status }) =>
        op(
          "listUnits",
          Effect.map(
            status === undefined
              ? sql<Row>`select ${units} from ${s}.units u where u.run_id = ${runId} order by u.unit_id limit ${limit}`
              : status.length === 0
              ? Effect.succeed([])
              : sql<Row>`select ${units} from ${s}.units u where u.run_id = ${runId} and u.status in ${sql.in(status)}
                order by u.unit_id limit ${limit}`,
            (rows) => rows.map(toUnit)
          )
        ),

      listFailures: (runId, { limit }) =>
        op(
          "listFailures",
          Effect.map(
            sql<Row>`
            select * from (
              select id, run_id as "runId", unit_id as "unitId", partition_key as "partitionKey", step,
                error_tag as "errorTag", message, cause, cursor, attempt, runbook_id as "runbookId", severity, outcome,
                (extract(epoch from at) * 1000)::float8 as at
              from ${s}.failures where run_id = ${runId} order by id desc limit ${limit}) f
            order by id`,
            (rows) => rows.map(toFailure)
          )
        ),

      report: (runId, options) =>
        Effect.gen(function*() {
          const progress = yield* store.progress(runId)
          const [cells, byStep, slowest, groups] = yield* op(
            "report",
            Effect.all([
              sql<Row>`
                select status, step_index as "stepIndex", count(*)::int as units from ${s}.units
                where run_id = ${runId} and kind = 'partition' group by status, step_index`,
              sql<Row>`
                select step, count(*)::text as chunks,
                  count(*) filter (where committed_at > clock_timestamp() - ${ms(options.windowMs)})::text as recent
                from ${s}.ledger where run_id = ${runId} group by step`,
              sql<Row>`
                select partition_key as "partitionKey", status, step_index as "stepIndex",
                  (extract(epoch from (coalesce(finished_at, clock_timestamp()) - started_at)) * 1000)::float8
                    as "durationMs",
                  chunks::text as chunks, items::text as items
                from ${s}.units where run_id = ${runId} and kind = 'partition' and started_at is not null
                order by coalesce(finished_at, clock_timestamp()) - started_at desc, partition_key
                limit ${options.slowest}`,
              sql<Row>`
                select f.error_tag as "errorTag", f.runbook_id as "runbookId", f.severity,
                  count(*)::text as failures, count(distinct f.partition_key)::text as partitions,
                  (array_agg(f.message order by f.id desc))[1] as "lastMessage",
                  (extract(epoch from max(f.at)) * 1000)::float8 as "lastAt",
                  (select count(*) from ${s}.units u where u.run_id = ${runId} and u.kind = 'partition'
                    and u.status = 'failed' and u.last_error_tag = f.error_tag)::text as "failedPartitions"
                from ${s}.failures f where f.run_id = ${runId}
                group by f.error_tag, f.runbook_id, f.severity
                order by count(*) desc, f.error_tag`
            ])
          )
          const [clock] = yield* op(
            "report",
            sql<{ readonly now: number }>`select (extract(epoch from clock_timestamp()) * 1000)::float8 as now`
          )
          return {
            progress,
            cells: cells.map((r) => ({
              status: r["status"] as UnitStatus,
              stepIndex: num(r["stepIndex"]),
              units: num(r["units"])
            })),
            chunksByStep: Object.fromEntries(byStep.map((r) => [r["step"] as string, num(r["chunks"])])),
            recentChunks: byStep.reduce((n, r) => n + num(r["recent"]), 0),
            windowMs: options.windowMs,
            now: num(clock?.now ?? Date.now()),
            slowest: slowest.map((r) => ({
              partitionKey: r["partitionKey"] as string,
              status: r["status"] as UnitStatus,
              stepIndex: num(r["stepIndex"]),
              durationMs: Math.max(0, Math.round(num(r["durationMs"]))),
              chunks: num(r["chunks"]),
              items: num(r["items"])
            })),
            failureGroups: groups.map((r) => ({
              errorTag: r["errorTag"] as string,
              runbookId: r["runbookId"] as string,
              severity: r["severity"] as Runbook.Severity,
              failures: num(r["failures"]),
              partitions: num(r["partitions"]),
              failedPartitions: num(r["failedPartitions"]),
              lastMessage: r["lastMessage"] as string,
              lastAt: num(r["lastAt"])
            }))
          }
        }),

      backlog: op(
        "backlog",
        Effect.map(
          sql<Row>`
            select
              count(*) filter (where u.status = 'pending' and (u.retry_at is null or u.retry_at <= clock_timestamp()))::text
                as ready,
              count(*) filter (where u.status = 'pending' and u.retry_at > clock_timestamp())::text as delayed,
              count(*) filter (where u.status = 'leased' and u.lease_expires_at > clock_timestamp())::text as running,
              count(*) filter (where u.status = 'leased' and u.lease_expires_at <= clock_timestamp())::text
                as "expiredLeases"
            from ${s}.units u join ${s}.runs r on r.run_id = u.run_id
            where u.status in ('pending', 'leased')
              and case when u.kind = 'finalize' then r.status = 'finalizing' else r.status = 'running' end`,
          ([row]) => ({
            ready: num(row?.["ready"] ?? 0),
            delayed: num(row?.["delayed"] ?? 0),
            running: num(row?.["running"] ?? 0),
            expiredLeases: num(row?.["expiredLeases"] ?? 0)
          })
        )
      ),

      ledger: (runId, unitId) =>
        op(
          "ledger",
          Effect.map(
            sql<{ readonly key: string }>`
            select idempotency_key as key from ${s}.ledger where run_id = ${runId} and unit_id = ${unitId}
            order by committed_at, step, chunk_seq`,
            (rows) => rows.map((r) => r.key)
          )
        ),

      auditLog: (runId) =>
        op(
          "auditLog",
          Effect.map(
            sql<
              Row
            >`select (extract(epoch from at) * 1000)::float8 as at, actor, action, run_id as "runId", reason, details
            from ${s}.audit where run_id = ${runId} order by id`,
            (rows) =>
              rows.map((r): AuditEntry => ({
                at: num(r["at"]),
                actor: r["actor"] as string,
                action: r["action"] as AuditEntry["action"],
                runId: r["runId"] as string,
                reason: r["reason"] as string,
                details: r["details"]
              }))
          )
        ),

      feed: ({ maxOutstanding, redeliverAfterMs }) =>
        op(
          "feed",
          Effect.gen(function*() {
            // One statement, its own transaction: one feeder at a time across all workers (the others
            // skip this tick) by a transaction-level advisory lock taken before anything is counted or
            // picked. The statement's snapshot predates the lock, so a feeder that waited for another's
            // commit may count that one's messages short and send up to one batch over the cap; it can
            // never pick the same unit, since FOR UPDATE re-checks each picked row's latest version.
            // Each part reads through an index (migration 15) and stops early: the count stops at the cap,
            // the never-sent units come in feed order from theirs, and the stale ones (sent, no live
            // lease, message older than redeliverAfter) from the sent units' age (bounded by the
            // statement's time: a volatile clock cannot bound an index scan); the best of both halves,
            // in feed order, are the best of all.
            const rows = yield* sql<Row>`
              with lock as (
                select pg_try_advisory_xact_lock(hashtext(${"chunkwise:feed:" + schema})) as ok),
              outstanding as (
                select count(*) as n from (
                  select 1 from ${s}.units
                  where (select ok from lock) and status = 'pending'
                    and enqueued_at > statement_timestamp() - ${ms(redeliverAfterMs)}
                  limit ${maxOutstanding}) sent
                union all
                select count(*) as n from (
                  select 1 from ${s}.units
                  where (select ok from lock) and status = 'leased' and enqueued_at is not null
                    and lease_expires_at > clock_timestamp()
                  limit ${maxOutstanding}) running),
              room as (select greatest(0, ${maxOutstanding} - (select sum(n) from outstanding))::bigint as n),
              unsent as (
                select u.run_id, u.unit_id, u.kind, u.weight from ${s}.units u join ${s}.runs r on r.run_id = u.run_id
                where (select ok from lock) and u.status = 'pending' and u.enqueued_at is null
                  and case when u.kind = 'finalize' then r.status = 'finalizing' else r.status = 'running' end
                  and (u.retry_at is null or u.retry_at <= clock_timestamp())
                order by (u.kind = 'finalize') desc, u.weight desc, u.unit_id
                limit (select n from room)
                for update of u skip locked),
              stale as (
                select u.run_id, u.unit_id, u.kind, u.weight from ${s}.units u join ${s}.runs r on r.run_id = u.run_id
                where (select ok from lock) and u.status in ('pending', 'leased')
                  and u.enqueued_at <= statement_timestamp() - ${ms(redeliverAfterMs)}
                  and case when u.kind = 'finalize' then r.status = 'finalizing' else r.status = 'running' end
                  and case when u.status = 'pending' then u.retry_at is null or u.retry_at <= clock_timestamp()
                           else u.lease_expires_at <= clock_timestamp() end
                order by (u.kind = 'finalize') desc, u.weight desc, u.unit_id
                limit (select n from room)
                for update of u skip locked),
              candidates as (
                select run_id, unit_id from (select * from unsent union all select * from stale) c
                order by (kind = 'finalize') desc, weight desc, unit_id
                limit (select n from room))
              update ${s}.units u set enqueue_seq = u.enqueue_seq + 1, enqueued_at = clock_timestamp()
              from candidates c where u.run_id = c.run_id and u.unit_id = c.unit_id
              returning u.job, u.run_id as "runId", u.unit_id as "unitId", u.enqueue_seq as seq, u.weight,
                (u.kind = 'finalize') as finalize`
            return [...rows]
              .sort((a, b) =>
                Number(b["finalize"]) - Number(a["finalize"]) || num(b["weight"]) - num(a["weight"]) ||
                String(a["unitId"]).localeCompare(String(b["unitId"]))
              )
              .map((r) => ({
                v: 1 as const,
                job: r["job"] as string,
                runId: r["runId"] as string,
                unitId: r["unitId"] as string,
                seq: num(r["seq"])
              }))
          })
        ),

      claim: ({ claimId, jobConcurrency, leaseMs, message, workerId }) =>
        op(
          "claim",
          Effect.gen(function*() {
            // A job-wide cap (D16): the claim takes a free slot row of the job in the same call, FOR UPDATE
            // SKIP LOCKED, so concurrent claims never wait on each other nor share a slot (claim_unit,
            // migration 12: a function, so its plans are cached per connection).
            if (jobConcurrency !== undefined) yield* ensureSlots(message.job, jobConcurrency)
            // claim_unit_row (migrations 18 and 22): the unit's row and its run's, planned once per
            // connection; a claim repeated with its id gets its own lease back.
            const rows = yield* sql<Row>`
              select * from ${s}.claim_unit_row(${message.runId}, ${message.unitId}, ${message.seq}, ${workerId},
                ${leaseMs}, ${message.job}, ${jobConcurrency ?? null}::integer, ${claimId ?? null}::text)`
            const row = rows[0]
            if (row !== undefined) {
              const unit = toUnit(row)
              return {
                _tag: "Claimed",
                unit,
                run: toRun(row, "run."),
                lease: { runId: unit.runId, unitId: unit.unitId, workerId, fencingToken: unit.fencingToken }
              } satisfies ClaimResult
            }
            const [why] = yield* sql<Row>`
              select u.status, u.enqueue_seq as "enqueueSeq", u.kind, r.status as "runStatus",
                greatest(0, extract(epoch from (u.lease_expires_at - clock_timestamp())) * 1000)::float8 as "leaseLeftMs",
                (u.retry_at > clock_timestamp()) as "notDue"
              from ${s}.units u join ${s}.runs r on r.run_id = u.run_id
              where u.run_id = ${message.runId} and u.unit_id = ${message.unitId}`
            return diagnose(why, message.seq)
          })
        ),

      commitChunk: (commit) =>
        Effect.gen(function*() {
          const { lease } = commit
          const params = [
            lease.runId,
            lease.unitId,
            lease.fencingToken,
            lease.workerId,
            commit.from.stepIndex,
            commit.from.chunkSeq,
            commit.to.stepIndex,
            commit.to.chunkSeq,
            commit.to.cursor === null ? null : JSON.stringify(commit.to.cursor),
            commit.items,
            commit.unitDone,
            commit.idempotencyKey,
            commit.step,
            commit.leaseMs,
            commit.fused?.idempotencyKey ?? null,
            commit.fused?.step ?? null
          ]
          // The last call of a session transaction: the checkpoint and the COMMIT in one round trip, where
          // the store can (migration 24's function raises where commit_chunk returns a refusal).
          const transaction = commit.last === true
            ? yield* Effect.serviceOption(SqlClient.TransactionConnection)
            : Option.none()
          const final = Option.isSome(transaction)
            ? commitWith(transaction.value[0], transaction.value[1], commitLastStatement, params.map(asText))
            : undefined
          if (final !== undefined) {
            if (commit.quarantine !== undefined) yield* op("commitChunk", recordQuarantine(commit, commit.quarantine))
            const rows = yield* op(
              "commitChunk",
              inStatementSpan(commitLastStatement, final).pipe(
                Effect.catchTag("SqlError", (error): Effect.Effect<
                  never,
                  | SqlError.SqlError
                  | Errors.LeaseLost
                  | Errors.CheckpointMoved
                  | Errors.RunStopped
                  | Errors.TransactionAborted
                  | Errors.StoreUnavailable
                > => {
                  switch (sqlStateOf(error)) {
                    case "CW001": // Rolled back: read why on the connection, now outside any transaction.
                      return whyNotMoved(lease)
                    case "CW002":
                      return Effect.fail(new Errors.RunStopped({ runId: lease.runId, status: serverMessageOf(error) }))
                    default:
                      return stepBrokeTransaction(Effect.fail(error))
                  }
                })
              )
            )
            return { runStatus: rows[0]?.["status"] as RunStatus }
          }
          // The compare-and-set lives in the commit_chunk function (migrations 3 to 17): one call, a cached
          // plan; the commit that ends the run's last open unit also finalizes the run (migrations 10 and
          // 14: other ends leave the check to a pending unit they lock as a witness).
          const rows = yield* op(
            "commitChunk",
            stepBrokeTransaction(onChunkConnection<{ readonly status: string | null }>(
              commit.fused === undefined ? commitChunkStatement : commitFusedStatement,
              params
            ))
          )
          const status = rows[0]?.status
          if (status?.startsWith("refused:")) {
            return yield* new Errors.RunStopped({ runId: lease.runId, status: status.slice("refused:".length) })
          }
          if (status !== null && status !== undefined) {
            if (commit.quarantine !== undefined) yield* op("commitChunk", recordQuarantine(commit, commit.quarantine))
            return { runStatus: status as RunStatus }
          }
          // Zero rows: say why, and fail inside the transaction so the chunk's writes roll back (D3).
          return yield* whyNotMoved(lease)
        }),

      renewLeases: (workerId, leases, leaseMs) =>
        leases.length === 0 ? Effect.succeed([]) : op(
          "renewLeases",
          Effect.map(
            sql<{ readonly unitId: string }>`
              with renewed as (
                update ${s}.units u set lease_expires_at = clock_timestamp() + ${ms(leaseMs)}
                from jsonb_to_recordset(${
              JSON.stringify(leases.map((l) => ({ run_id: l.runId, unit_id: l.unitId, token: l.fencingToken })))
            }::jsonb)
                  as x(run_id text, unit_id text, token bigint)
                where u.run_id = x.run_id and u.unit_id = x.unit_id and u.fencing_token = x.token
                  and u.lease_owner = ${workerId} and u.status = 'leased' and u.lease_expires_at > clock_timestamp()
                returning u.run_id, u.unit_id, u.fencing_token, u.lease_expires_at),
              slots as (
                -- a held job slot lives as long as its unit's lease (D16)
                update ${s}.job_slots j set expires_at = r.lease_expires_at from renewed r
                where j.run_id = r.run_id and j.unit_id = r.unit_id and j.fencing_token = r.fencing_token)
              select unit_id as "unitId" from renewed`,
            (rows) => rows.map((r) => r.unitId)
          )
        ),

      release: (lease, { abandonedChunk, at }) =>
        op(
          "release",
          Effect.asVoid(sql`
          with ${freeSlot(lease)}
          update ${s}.units set status = 'pending', lease_owner = null, lease_expires_at = null,
            attempt = ${attemptAfter(at, abandonedChunk ? 1 : 0)}
          where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken}
            and lease_owner = ${lease.workerId} and status = 'leased'`)
        ),

      recordFailure: (f) =>
        detached(op(
          "recordFailure",
          Effect.asVoid(sql`
          insert into ${s}.failures (run_id, unit_id, partition_key, step, error_tag, message, cause, cursor, attempt,
            runbook_id, severity, outcome, at)
          values (${f.runId}, ${f.unitId}, ${f.partitionKey}, ${f.step}, ${f.errorTag}, ${f.message}, ${f.cause},
            ${f.cursor}, ${f.attempt}, ${f.runbookId}, ${f.severity}, ${f.outcome}, to_timestamp(${f.at / 1000}))`)
        )),

      failUnit: (lease, disposition) =>
        detached(Effect.gen(function*() {
          const result = yield* op(
            "failUnit",
            tx(Effect.gen(function*() {
              // Serialise failures of one run, so the budget counts every one of them. No key update, like
              // every other run lock: FOR UPDATE would also block the key-share lock that a quarantine
              // row's foreign key takes in a chunk's commit, a deadlock with that chunk's witness lock.
              const [run] = yield* sql<{ readonly status: RunStatus }>`
              with ${freeSlot(lease)}
              select status from ${s}.runs where run_id = ${lease.runId} for no key update`
              const updated = disposition._tag === "RetryLater"
                ? yield* sql<{ readonly kind: string; readonly parent: string | null }>`
                  update ${s}.units set status = 'pending',
                    attempt = ${attemptAfter(disposition.at, 1)}, lease_owner = null,
                    lease_expires_at = null, enqueued_at = null, last_error_tag = ${disposition.errorTag},
                    retry_at = clock_timestamp() + ${ms(disposition.delayMs)}
                  where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken}
                    and lease_owner = ${lease.workerId} and status = 'leased'
                  returning kind, parent_unit_id as parent`
                : yield* sql<{ readonly kind: string; readonly parent: string | null }>`
                  update ${s}.units set status = 'failed', lease_owner = null, lease_expires_at = null,
                    last_error_tag = ${disposition.errorTag}, finished_at = clock_timestamp()
                  where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken}
                    and lease_owner = ${lease.workerId} and status = 'leased'
                  returning kind, parent_unit_id as parent`
              if (run === undefined || updated.length === 0) return undefined
              if (disposition._tag !== "Failed") return run.status
              const { kind, parent } = updated[0]!
              // A range that fails fails its partition at once: the partition is what operators and budgets count.
              const partitionFailed = parent === null ? kind === "partition" : (yield* sql`
                update ${s}.units set status = 'failed', fencing_token = fencing_token + 1,
                  last_error_tag = ${disposition.errorTag}, finished_at = clock_timestamp()
                where run_id = ${lease.runId} and unit_id = ${parent} and status = 'waiting'
                returning unit_id`).length > 0
              if (!partitionFailed || run.status !== "running") return run.status
              const [failing] = yield* sql<{ readonly status: RunStatus }>`
              with counts as (
                select count(*) as failed from ${s}.units
                where run_id = ${lease.runId} and kind = 'partition' and status = 'failed')
              update ${s}.runs r set status = 'failing', updated_at = clock_timestamp(),
                reason = 'failure budget exceeded: ' || c.failed || ' of ' || r.partition_count ||
                  ' partitions failed (the budget allows ' || r.failure_budget || ')'
              from counts c
              where r.run_id = ${lease.runId} and r.status = 'running' and c.failed > r.failure_budget
              returning r.status`
              if (failing === undefined) return run.status
              yield* sql`
              update ${s}.units set status = 'cancelled', fencing_token = fencing_token + 1,
                finished_at = clock_timestamp()
              where run_id = ${lease.runId} and kind <> 'finalize' and status = 'pending'`
              yield* joinWaiting(sql`p.run_id = ${lease.runId}`)
              return failing.status
            }))
          )
          if (result === undefined) return yield* leaseLost(lease, "fenced before the failure was recorded")
          return { runStatus: result }
        })),

      splitUnit: ({ lease, ranges, stepIndex }) =>
        Effect.gen(function*() {
          const rows = yield* op(
            "splitUnit",
            sql<{ readonly unitId: string }>`
            with ${freeSlot(lease)}, parent as (
              update ${s}.units set status = 'waiting', lease_owner = null, lease_expires_at = null
              where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken}
                and lease_owner = ${lease.workerId} and status = 'leased' and lease_expires_at > clock_timestamp()
                and step_index = ${stepIndex} and chunk_seq = 0
              returning run_id, unit_id, job, partition_key, generation, step_index)
            insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight, step_index, generation,
              parent_unit_id, range)
            select p.run_id, x.unit_id, p.job, 'range', p.partition_key, x.weight, p.step_index, p.generation,
              p.unit_id, x.range
            from parent p, jsonb_to_recordset(${
              JSON.stringify(ranges.map((r) => ({ unit_id: r.unitId, weight: r.weight, range: r.range })))
            }::jsonb) as x(unit_id text, weight float8, range jsonb)
            on conflict do nothing
            returning unit_id as "unitId"`
          )
          if (rows.length === 0) return yield* leaseLost(lease, "fenced, expired or moved before the split")
        }),

      joinRanges: (runId, parentUnitId) =>
        op(
          "joinRanges",
          Effect.gen(function*() {
            const [moved] = yield* joinWaiting(sql`p.run_id = ${runId} and p.unit_id = ${parentUnitId}`)
            if (moved !== undefined) {
              return (moved.status === "pending" ? "advanced" : moved.status) as JoinOutcome
            }
            const [unit] = yield* sql<{ readonly status: UnitStatus }>`
              select status from ${s}.units where run_id = ${runId} and unit_id = ${parentUnitId}`
            return unit?.status === "waiting" ? "open" as const : "none" as const
          })
        ),

      cancelUnit: (lease) =>
        op(
          "cancelUnit",
          Effect.asVoid(sql`
          with ${freeSlot(lease)}
          update ${s}.units set status = 'cancelled', fencing_token = fencing_token + 1, lease_owner = null,
            lease_expires_at = null, finished_at = clock_timestamp()
          where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken}
            and lease_owner = ${lease.workerId} and status = 'leased'`)
        ),

      tryFinalize: (runId) => op("tryFinalize", finalizeIfComplete(runId)),

      finishRun: (lease, outcome, idempotencyKey) =>
        Effect.gen(function*() {
          // The run row first, then the finalize unit: the order operator actions take them in (a retry
          // locks the run, then cancels the finalize unit), so neither waits on the other in a cycle.
          yield* op("finishRun", lockRun(lease.runId))
          const rows = yield* op(
            "finishRun",
            sql<{ readonly runId: string }>`
            with ${freeSlot(lease)}, u as (
              update ${s}.units set status = 'succeeded', lease_owner = null, lease_expires_at = null,
                finished_at = clock_timestamp(), chunks = chunks + 1
              where run_id = ${lease.runId} and unit_id = ${lease.unitId} and fencing_token = ${lease.fencingToken}
                and lease_owner = ${lease.workerId} and status = 'leased' and lease_expires_at > clock_timestamp()
              returning run_id),
            l as (
              insert into ${s}.ledger (run_id, unit_id, idempotency_key, step, chunk_seq)
              select run_id, ${lease.unitId}, ${idempotencyKey}, 'onComplete', 0 from u on conflict do nothing)
            update ${s}.runs r set status = ${outcome}, finished_at = clock_timestamp(), updated_at = clock_timestamp()
            from u where r.run_id = u.run_id and r.status = 'finalizing'
            returning r.run_id as "runId"`
          )
          if (rows.length === 0) return yield* leaseLost(lease, "the finalize unit was fenced or its lease expired")
        }),

      sweep: () =>
        op(
          "sweep",
          Effect.gen(function*() {
            yield* joinWaiting(sql`r.status in ('running', 'failing')`)
            // Two conditions, not one `status in (...)`: each is a probe of its partial index of open
            // units (migration 11), not a walk over every unit of the run. A failing run's pending units
            // never run: try_finalize cancels them (migration 20), so they do not keep it from finalizing.
            const candidates = yield* sql<{ readonly runId: string }>`
            select r.run_id as "runId" from ${s}.runs r
            where r.status in ('running', 'failing')
              and not exists (select 1 from ${s}.units u
                where u.run_id = r.run_id and u.status = 'leased' and u.kind <> 'finalize')
              and (r.status = 'failing' or not exists (select 1 from ${s}.units u
                where u.run_id = r.run_id and u.status = 'pending' and u.kind <> 'finalize'))
              and not exists (select 1 from ${s}.units u
                where u.run_id = r.run_id and u.status = 'waiting' and u.kind <> 'finalize')`
            const done: Array<string> = []
            for (const { runId } of candidates) if (yield* finalizeIfComplete(runId)) done.push(runId)
            return done
          })
        ),

      cancelRun: (runId, actor) =>
        Effect.gen(function*() {
          yield* op(
            "cancelRun",
            tx(Effect.gen(function*() {
              const cancelled = yield* sql`
              update ${s}.runs set status = 'cancelled', finished_at = clock_timestamp(), updated_at = clock_timestamp(),
                reason = ${`cancelled by ${actor.actor}: ${actor.reason}`}
              where run_id = ${runId} and status not in ('succeeded', 'failed', 'cancelled')
              returning run_id`
              if (cancelled.length === 0) return
              yield* sql`
              update ${s}.units set status = 'cancelled', fencing_token = fencing_token + 1, lease_owner = null,
                lease_expires_at = null, finished_at = clock_timestamp()
              where run_id = ${runId} and status in ('pending', 'leased', 'waiting')`
              yield* sql`
              update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
              where run_id = ${runId}`
              yield* audit(runId, "cancel", actor, {})
            }))
          )
          return yield* requireRun(runId)
        }),

      retry: (runId, selection, actor) =>
        Effect.gen(function*() {
          yield* requireRun(runId)
          return yield* tx(Effect.gen(function*() {
            if (!selection.dryRun) yield* op("retry", lockRun(runId))
            const chosen = yield* op(
              "retry",
              selectUnits(
                runId,
                selection,
                ["failed", "cancelled"],
                // A partition waiting for its ranges has nothing to retry in place (a failed range fails
                // it); the sweeper joins it. Only a retry from a step restarts it.
                selection.fromStep === undefined ? sql`${retryable} and u.status <> 'waiting'` : retryable,
                !selection.dryRun
              )
            )
            const planned = chosen.filter((c) => c.eligible).map((c) => plannedUnit(c.unit, selection))
            // Read under the run's lock: whether it ended decides if the retry re-opens it.
            if (planned.length > 0) yield* op("retry", Effect.flatMap(requireRun(runId), refuseReopenBesideActive))
            if (selection.dryRun || planned.length === 0) return planned
            const ids = planned.map((p) => p.unitId)
            yield* op(
              "retry",
              Effect.gen(function*() {
                if (selection.fromStep === undefined) {
                  // Failed at a split step: its ranges that did not succeed run again, the rest stay done,
                  // and the partition waits for them.
                  yield* sql`
                  with split as (
                    select p.unit_id, p.generation from ${s}.units p
                    where p.run_id = ${runId} and p.unit_id in ${sql.in(ids)} and exists (
                      select 1 from ${s}.units c where c.run_id = p.run_id and c.parent_unit_id = p.unit_id
                        and c.generation = p.generation and c.status <> 'succeeded')),
                  reopened as (
                    update ${s}.units c set status = 'pending', fencing_token = c.fencing_token + 1,
                      lease_owner = null, lease_expires_at = null, attempt = 1, crashes_since_progress = 0,
                      retry_at = null, enqueued_at = null, finished_at = null, last_error_tag = null
                    from split
                    where c.run_id = ${runId} and c.parent_unit_id = split.unit_id
                      and c.generation = split.generation and c.status in ('failed', 'cancelled'))
                  update ${s}.units u set status = 'waiting', fencing_token = u.fencing_token + 1, lease_owner = null,
                    lease_expires_at = null, attempt = 1, crashes_since_progress = 0, retry_at = null,
                    finished_at = null, last_error_tag = null
                  from split where u.run_id = ${runId} and u.unit_id = split.unit_id and ${retryable}`
                } else {
                  yield* cancelRanges(runId, ids)
                }
                // The rows are locked and a live lease can only expire, so this updates exactly `planned`.
                yield* sql`
                update ${s}.units u set status = 'pending', fencing_token = fencing_token + 1, lease_owner = null,
                  lease_expires_at = null, attempt = 1, crashes_since_progress = 0, retry_at = null,
                  enqueued_at = null, finished_at = null, last_error_tag = null
                  ${
                  selection.fromStep === undefined ? sql`` : sql`, step_index = ${selection.fromStep}, cursor = null,
                  chunk_seq = 0, generation = generation + 1`
                }
                where u.run_id = ${runId} and u.unit_id in ${sql.in(ids)} and ${retryable}
                  ${
                  // A waiting split partition stays waiting (above) unless the step starts again.
                  selection.fromStep === undefined ? sql`and u.status <> 'waiting'` : sql``}`
                yield* reopen(runId)
                yield* audit(runId, "retry", actor, { selection, units: planned.map((p) => p.partitionKey) })
              })
            )
            return planned
          })).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(unavailable("retry")(e))))
        }),

      listQuarantine: (runId, options) =>
        op(
          "listQuarantine",
          Effect.map(
            sql<Row>`
              select q.run_id as "runId", q.step, q.partition_key as "partitionKey", q.item_id as "itemId",
                q.unit_id as "unitId", q.item, q.cursor, q.range, q.error_tag as "errorTag", q.message,
                q.runbook_id as "runbookId", q.status, q.attempts,
                (extract(epoch from q.quarantined_at) * 1000)::float8 as "quarantinedAt",
                (extract(epoch from q.updated_at) * 1000)::float8 as "updatedAt"
              from ${s}.quarantine q
              where q.run_id = ${runId} and ${quarantineFilter(options)}
              order by q.step, q.partition_key, q.item_id
              limit ${options.limit}`,
            (rows) =>
              rows.map((row): Quarantine.Entry => ({
                runId: row["runId"] as string,
                step: row["step"] as string,
                partitionKey: row["partitionKey"] as string,
                itemId: row["itemId"] as string,
                unitId: row["unitId"] as string,
                item: row["item"],
                cursor: row["cursor"] ?? null,
                range: row["range"] ?? null,
                errorTag: row["errorTag"] as string,
                message: row["message"] as string,
                runbookId: row["runbookId"] as string,
                status: row["status"] as Quarantine.Status,
                attempts: num(row["attempts"]),
                quarantinedAt: num(row["quarantinedAt"]),
                updatedAt: num(row["updatedAt"])
              }))
          )
        ),

      retryQuarantine: (runId, options, actor) =>
        Effect.gen(function*() {
          const run = yield* requireRun(runId)
          return yield* tx(Effect.gen(function*() {
            if (!options.dryRun) yield* op("retryQuarantine", lockRun(runId))
            // Items left in 'retry' by a re-run that failed are taken again.
            const chosen = { ...options, status: ["quarantined" as const, "retry" as const] }
            const groups = yield* sql<Row>`
              select q.step, q.partition_key as "partitionKey", count(*)::text as n,
                coalesce(u.parent_unit_id, u.unit_id) as "partitionUnit"
              from ${s}.quarantine q join ${s}.units u on u.run_id = q.run_id and u.unit_id = q.unit_id
              where q.run_id = ${runId} and ${quarantineFilter(chosen)}
              group by q.step, q.partition_key, coalesce(u.parent_unit_id, u.unit_id)`
            const planned = groups.map((g) => ({
              partitionKey: g["partitionKey"] as string,
              step: g["step"] as string,
              items: num(g["n"]),
              unitId: Quarantine.itemsUnitId(g["partitionUnit"] as string, g["step"] as string)
            })).sort((a, b) => (a.unitId < b.unitId ? -1 : 1))
            if (planned.length > 0) yield* Effect.flatMap(requireRun(runId), refuseReopenBesideActive)
            if (options.dryRun || planned.length === 0) return planned
            yield* sql`
              update ${s}.quarantine q set status = 'retry', updated_at = clock_timestamp()
              where q.run_id = ${runId} and ${quarantineFilter(chosen)}`
            const made = planned.map((p) => ({
              unit_id: p.unitId,
              partition_key: p.partitionKey,
              step_index: run.definition.steps.findIndex((step) => step.name === p.step)
            }))
            // A unit already pending will find the new items itself; any other (leased, ended) starts again,
            // fenced, so a worker finishing it now cannot leave items in 'retry' with nobody to run them.
            yield* sql`
              insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight, step_index)
              select ${runId}, x.unit_id, ${run.job}, 'items', x.partition_key, 0, x.step_index
              from jsonb_to_recordset(${
              JSON.stringify(made)
            }::jsonb) as x(unit_id text, partition_key text, step_index integer)
              on conflict (run_id, unit_id) do update set status = 'pending',
                fencing_token = ${s}.units.fencing_token + 1, lease_owner = null, lease_expires_at = null, attempt = 1,
                crashes_since_progress = 0, retry_at = null, enqueued_at = null, finished_at = null,
                last_error_tag = null, step_index = excluded.step_index, cursor = null, chunk_seq = 0,
                generation = ${s}.units.generation + 1
              where ${s}.units.status <> 'pending'`
            yield* sql`
              update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
              where run_id = ${runId} and unit_id in ${sql.in(made.map((m) => m.unit_id))}`
            yield* reopen(runId)
            yield* audit(runId, "quarantine-retry", actor, { filter: options, planned })
            return planned
          })).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(unavailable("retryQuarantine")(e))))
        }),

      skip: (runId, selection, actor) =>
        tx(Effect.gen(function*() {
          if (!selection.dryRun) yield* op("skip", lockRun(runId))
          // Read under the lock: a finalize that committed since a read before it would be missed.
          const run = yield* requireRun(runId)
          const chosen = yield* op("skip", selectUnits(runId, selection, ["failed"], skippable, !selection.dryRun))
          const planned = chosen.filter((c) => c.eligible).map((c) => plannedUnit(c.unit, selection))
          // A skip in a failed run re-opens it to finalize again: not beside an active re-run.
          if (planned.length > 0 && run.status === "failed") yield* op("skip", refuseReopenBesideActive(run))
          if (selection.dryRun || planned.length === 0) return planned
          yield* op(
            "skip",
            Effect.gen(function*() {
              yield* cancelRanges(runId, planned.map((p) => p.unitId))
              yield* sql`
                update ${s}.units u set status = 'skipped', fencing_token = fencing_token + 1, lease_owner = null,
                  lease_expires_at = null, finished_at = clock_timestamp()
                where u.run_id = ${runId} and u.unit_id in ${sql.in(planned.map((p) => p.unitId))} and ${skippable}`
              yield* sql`
                update ${s}.job_slots set run_id = null, unit_id = null, fencing_token = null, expires_at = null
                where run_id = ${runId} and unit_id in ${sql.in(planned.map((p) => p.unitId))}`
              // A finalizing run's outcome was decided without this skip: its finalize round starts again.
              if (run.status === "failed" || run.status === "finalizing") yield* reopen(runId)
              yield* audit(runId, "skip", actor, { units: planned.map((p) => p.partitionKey) })
              yield* finalizeIfComplete(runId)
            })
          )
          return planned
        })).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(unavailable("skip")(e))))
    }
    return store
  })

/** Why a claim matched no row, as a receive-rule answer (D2). */
const diagnose = (why: Row | undefined, seq: number): ClaimResult => {
  if (why === undefined) return { _tag: "Ack", reason: "unknown-unit" }
  const status = why["status"] as UnitStatus
  if (status === "waiting") return { _tag: "Ack", reason: "waiting" }
  if (status !== "pending" && status !== "leased") return { _tag: "Ack", reason: "terminal" }
  if (seq < num(why["enqueueSeq"])) return { _tag: "Ack", reason: "stale-message" }
  const runStatus = why["runStatus"] as RunStatus
  const active = why["kind"] === "finalize" ? runStatus === "finalizing" : runStatus === "running"
  if (!active) return { _tag: "Ack", reason: "run-not-active" }
  const left = num(why["leaseLeftMs"])
  if (status === "leased" && left > 0) return { _tag: "Later", reason: "leased-elsewhere", delayMs: Math.ceil(left) }
  if (status === "pending" && why["notDue"] === true) return { _tag: "Ack", reason: "not-due" }
  return { _tag: "Later", reason: "job-concurrency", delayMs: 1000 }
}

/** The Postgres store as a layer over the service's `SqlClient` (e.g. `PgClient.layer`). */
export const layer = (
  options: Options = {}
): Layer.Layer<StateStore, Errors.ConfigurationError | Errors.StoreUnavailable, SqlClient.SqlClient> =>
  Layer.effect(StateStore, make(options))
