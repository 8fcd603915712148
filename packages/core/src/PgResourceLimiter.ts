/**
 * The resource limiter on Postgres, in the state store's schema and over the same `SqlClient`, so the
 * limits of every worker of every process meet in one place (D18):
 *
 * - a rate is one `UPDATE … RETURNING` of the resource's row, which holds two token buckets (chunks and
 *   items, each with its tokens and last refill) refilled on the database's `clock_timestamp()`: it takes
 *   the chunk's tokens from both at one grant time and answers how long the caller waits (a
 *   reservation: one round trip per permit, however many wait);
 * - an in-flight cap is slot rows claimed `FOR UPDATE SKIP LOCKED` with an expiry that the worker's
 *   heartbeat renews, so a slot held by a worker that died comes back when it expires;
 * - limits, current waits and the audit log of changes are tables (migration 6 of `PgStateStore`; 9 adds
 *   the item rate). The bucket columns change on every permit and no index covers them: updates stay HOT.
 *
 * Every statement runs outside any transaction (D4, D16): permits are taken before a chunk's BEGIN and
 * given back after its COMMIT. Give it the same `schema` as `PgStateStore.layer`.
 *
 * `resource_waits` keeps at most one row per unit (its last wait, current while `until` is ahead of the
 * clock); rows of finished runs can be deleted at any time. `resource_limit_audit` is the audit log.
 *
 * @since 0.1.0
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { type Duration, Effect, Layer } from "effect"
import * as Errors from "./Errors.js"
import { outsideTransaction } from "./internal/outsideTransaction.js"
import * as PgStateStore from "./PgStateStore.js"
import type {
  ClaimResult,
  Declared,
  Limit,
  LimitPatch,
  Reservation,
  Setting,
  Store,
  Usage,
  Wait
} from "./ResourceLimiter.js"
import {
  defaultBurst,
  invalidLimit,
  invalidResourceName,
  limitOf,
  make as makeLimiter,
  patched,
  ResourceLimiter,
  sameLimit,
  WAIT_VISIBLE_MS
} from "./ResourceLimiter.js"

/** Options of the Postgres limiter. */
export interface Options {
  /** The store's schema (default `chunkwise`); the same as `PgStateStore.layer`'s. */
  readonly schema?: string | undefined
  /** Run the store's migrations first (default true); with false, only check the schema's version. */
  readonly migrate?: boolean | undefined
  /** How long workers cache limits: at most 5 s (default 5 s). */
  readonly cacheTtl?: Duration.DurationInput | undefined
}

type Row = Record<string, unknown>

const num = (value: unknown): number => (typeof value === "number" ? value : Number(value))
const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : num(value))

const SETTING_COLUMNS = `l.resource, l.chunks_per_second::float8 as "chunksPerSecond", l.burst,
  l.items_per_second::float8 as "itemsPerSecond", l.items_burst::float8 as "itemsBurst", l.in_flight as "inFlight",
  l.source, (extract(epoch from l.updated_at) * 1000)::float8 as "updatedAt", l.updated_by as "updatedBy", l.reason`

const toSetting = (row: Row): Setting => ({
  resource: row["resource"] as string,
  chunksPerSecond: numOrNull(row["chunksPerSecond"]),
  burst: numOrNull(row["burst"]),
  itemsPerSecond: numOrNull(row["itemsPerSecond"]),
  itemsBurst: numOrNull(row["itemsBurst"]),
  inFlight: numOrNull(row["inFlight"]),
  source: row["source"] as Setting["source"],
  updatedAt: num(row["updatedAt"]),
  updatedBy: row["updatedBy"] as string,
  reason: row["reason"] as string
})

/** Makes the Postgres driver of the limiter (the `Store` of `ResourceLimiter.make`). */
export const makeStore = (options: Options = {}): Effect.Effect<
  Store,
  Errors.ConfigurationError | Errors.StoreUnavailable,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    // Validates the schema name and brings (or checks) the tables, migration 6 included.
    yield* PgStateStore.migrate({ schema: options.schema, migrate: options.migrate })
    const schema = options.schema ?? "chunkwise"
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const s = sql(schema)
    const settingColumns = sql.literal(SETTING_COLUMNS)
    const ms = (value: number) => sql`(${value}::float8 * interval '1 millisecond')`
    /** Runs on its own connection, never in a chunk's transaction; SQL errors become `StoreUnavailable`. */
    const op = <A, E, R>(operation: string, effect: Effect.Effect<A, E, R>) =>
      outsideTransaction(effect).pipe(
        Effect.mapError((error) =>
          (error as { readonly _tag?: string })._tag === "SqlError"
            ? new Errors.StoreUnavailable({
              operation: `resourceLimiter.${operation}`,
              message: (error as SqlError.SqlError).message,
              cause: error
            })
            : error as Exclude<E, SqlError.SqlError>
        )
      )
    const tx = <A, E, R>(effect: Effect.Effect<A, E, R>) => client.withTransaction(effect)

    /** The audit row of one change. */
    const audit = (resource: string, actor: string, reason: string, before: Limit | null, after: Limit) =>
      sql`insert into ${s}.resource_limit_audit (actor, reason, resource, before, after)
          values (${actor}, ${reason}, ${resource}, ${before === null ? null : JSON.stringify(before)}::jsonb,
            ${JSON.stringify(after)}::jsonb)`

    /** Slot rows 1..in_flight (a lower cap later leaves the rows above it unused). */
    const ensureSlots = (resource: string, limit: Limit) =>
      limit.inFlight === undefined ? Effect.void : Effect.asVoid(sql`
        insert into ${s}.resource_slots (resource, slot)
        select ${resource}, g from generate_series(1, ${limit.inFlight}::int) g
        on conflict do nothing`)

    /**
     * Writes new limits on an existing, locked row. Each bucket first refills at its old rate and burst
     * up to now, then is capped by the new burst; a rate set where there was none starts full.
     */
    const update = (resource: string, limit: Limit, source: Setting["source"], actor: string, reason: string) => {
      const rate = limit.chunksPerSecond ?? null
      const burst = rate === null ? null : limit.burst ?? defaultBurst(rate)
      const itemRate = limit.itemsPerSecond ?? null
      const itemBurst = itemRate === null ? null : limit.itemsBurst ?? defaultBurst(itemRate)
      return sql<Row>`
        update ${s}.resource_limits l set
          tokens = case
            when ${rate}::float8 is null then 0
            when l.chunks_per_second is null then ${burst}::float8
            else least(${burst}::float8, coalesce(l.burst, greatest(1, ceil(l.chunks_per_second))),
              l.tokens + greatest(0, extract(epoch from (n.t - l.refilled_at))::float8) * l.chunks_per_second) end,
          refilled_at = greatest(l.refilled_at, n.t),
          item_tokens = case
            when ${itemRate}::float8 is null then 0
            when l.items_per_second is null then ${itemBurst}::float8
            else least(${itemBurst}::float8, coalesce(l.items_burst, greatest(1, ceil(l.items_per_second))),
              l.item_tokens + greatest(0, extract(epoch from (n.t - l.items_refilled_at))::float8)
                * l.items_per_second) end,
          items_refilled_at = greatest(l.items_refilled_at, n.t),
          chunks_per_second = ${rate}::float8, burst = ${limit.burst ?? null}::int,
          items_per_second = ${itemRate}::float8, items_burst = ${limit.itemsBurst ?? null}::bigint,
          in_flight = ${limit.inFlight ?? null}::int, source = ${source}, updated_at = n.t,
          updated_by = ${actor}, reason = ${reason}
        from (select clock_timestamp() as t) n
        where l.resource = ${resource}
        returning ${settingColumns}`
    }

    const lockSetting = (resource: string) =>
      Effect.map(
        sql<Row>`select ${settingColumns} from ${s}.resource_limits l where l.resource = ${resource} for update`,
        (rows) => (rows[0] === undefined ? undefined : toSetting(rows[0]))
      )

    const insert = (resource: string, limit: Limit, source: Setting["source"], actor: string, reason: string) => {
      const rate = limit.chunksPerSecond ?? null
      const itemRate = limit.itemsPerSecond ?? null
      return Effect.map(
        sql<Row>`
          insert into ${s}.resource_limits as l (resource, chunks_per_second, burst, items_per_second, items_burst,
            in_flight, tokens, item_tokens, source, updated_by, reason)
          values (${resource}, ${rate}::float8, ${limit.burst ?? null}::int, ${itemRate}::float8,
            ${limit.itemsBurst ?? null}::bigint, ${limit.inFlight ?? null}::int,
            ${rate === null ? 0 : limit.burst ?? defaultBurst(rate)}::float8,
            ${itemRate === null ? 0 : limit.itemsBurst ?? defaultBurst(itemRate)}::float8, ${source}, ${actor},
            ${reason})
          on conflict (resource) do nothing
          returning ${settingColumns}`,
        (rows) => (rows[0] === undefined ? undefined : toSetting(rows[0]))
      )
    }

    /** A wait row for status: kept while `until` is ahead of the clock. */
    const upsertWait = sql.literal(`on conflict (run_id, unit_id) do update set
      resource = excluded.resource, kind = excluded.kind, partition_key = excluded.partition_key,
      job = excluded.job, step = excluded.step, worker_id = excluded.worker_id,
      since = case when w.resource = excluded.resource and w.kind = excluded.kind and w.until > excluded.since
        then w.since else excluded.since end,
      until = excluded.until`)

    const store: Store = {
      kind: "postgres",

      declare: (resources, actor) =>
        op(
          "declare",
          tx(Effect.gen(function*() {
            const out: Array<Declared> = []
            // In name order, so workers starting together lock the rows in the same order.
            for (const { limit, resource } of [...resources].sort((a, b) => (a.resource < b.resource ? -1 : 1))) {
              const created = yield* insert(
                resource,
                limit,
                "default",
                actor,
                "first use: the default declared in code"
              )
              if (created !== undefined) {
                yield* ensureSlots(resource, limit)
                yield* audit(resource, actor, "first use: the default declared in code", null, limit)
                out.push({ resource, outcome: "created", setting: created })
                continue
              }
              const current = (yield* lockSetting(resource))!
              if (sameLimit(limitOf(current), limit)) {
                out.push({ resource, outcome: "unchanged", setting: current })
              } else if (current.source === "operator") {
                out.push({ resource, outcome: "operator", setting: current })
              } else {
                const reason = "the default declared in code changed"
                const [row] = yield* update(resource, limit, "default", actor, reason)
                yield* ensureSlots(resource, limit)
                yield* audit(resource, actor, reason, limitOf(current), limit)
                out.push({ resource, outcome: "updated", setting: toSetting(row!) })
              }
            }
            return out
          }))
        ),

      settings: op(
        "settings",
        Effect.map(
          sql<Row>`
            select ${settingColumns},
              (select count(*) from ${s}.resource_slots sl where sl.resource = l.resource and sl.permit_id is not null
                and sl.expires_at > clock_timestamp())::int as "inUse",
              (select count(*) from ${s}.resource_waits w where w.resource = l.resource
                and w.until > clock_timestamp())::int as waiting
            from ${s}.resource_limits l order by l.resource`,
          (rows) =>
            rows.map((row): Usage => ({ ...toSetting(row), inUse: num(row["inUse"]), waiting: num(row["waiting"]) }))
        )
      ),

      set: (resource, patch: LimitPatch, actor, { create }) =>
        op(
          "set",
          Effect.gen(function*() {
            const nameProblem = invalidResourceName(resource)
            if (nameProblem !== undefined) return yield* new Errors.ConfigurationError({ message: nameProblem })
            return yield* tx(Effect.gen(function*() {
              const current = yield* lockSetting(resource)
              if (current === undefined && !create) {
                return yield* new Errors.NotFound({ what: "resource", id: resource })
              }
              const limit = patched(current === undefined ? {} : limitOf(current), patch)
              const problem = invalidLimit(limit, (key) => `limit of "${resource}"${key === "" ? "" : `: ${key}`}`)
              if (problem !== undefined) return yield* new Errors.ConfigurationError({ message: problem })
              const setting = current === undefined
                ? yield* insert(resource, limit, "operator", actor.actor, actor.reason)
                : toSetting((yield* update(resource, limit, "operator", actor.actor, actor.reason))[0]!)
              if (setting === undefined) {
                // Created by a worker between our read and our insert: the operator tries again.
                return yield* new Errors.StoreUnavailable({
                  operation: "resourceLimiter.set",
                  message: `resource "${resource}" was declared at the same moment; run the command again`
                })
              }
              yield* ensureSlots(resource, limit)
              yield* audit(resource, actor.actor, actor.reason, current === undefined ? null : limitOf(current), limit)
              return setting
            }))
          })
        ),

      history: ({ limit, resource }) =>
        op(
          "history",
          Effect.map(
            sql<Row>`
              select * from (
                select id, (extract(epoch from at) * 1000)::float8 as at, actor, reason, resource, before, after
                from ${s}.resource_limit_audit
                ${resource === undefined ? sql`` : sql`where resource = ${resource}`}
                order by id desc limit ${limit}) a
              order by id`,
            (rows) =>
              rows.map((row) => ({
                at: num(row["at"]),
                actor: row["actor"] as string,
                reason: row["reason"] as string,
                resource: row["resource"] as string,
                before: (row["before"] as Limit | null) ?? null,
                after: row["after"] as Limit
              }))
          )
        ),

      reserve: (resource, holder, options) =>
        op(
          "reserve",
          Effect.map(
            // One statement on the row, whose SET reads the row's latest version (a concurrent reservation's
            // result, once it commits). Each bucket's level is taken at now, or at its last grant if that is
            // later; the grant time is the earliest when every bucket holds the chunk's tokens (a cost above
            // the burst: when the bucket, for it uncapped, holds it); the tokens are taken at that time, which
            // becomes each bucket's last refill. The caller waits until then; a wait is recorded for status
            // in the same statement.
            sql<Row>`
              with taken as (
                update ${s}.resource_limits l set (tokens, refilled_at, item_tokens, items_refilled_at) = (
                  select
                    case when c.rate is null then l.tokens
                      else least(greatest(c.burst, 1), c.level + extract(epoch from (g.at - c.since))::float8 * c.rate) - 1
                    end,
                    case when c.rate is null then l.refilled_at else g.at end,
                    case when i.rate is null then l.item_tokens
                      else least(greatest(i.burst, n.items), i.level + extract(epoch from (g.at - i.since))::float8 * i.rate)
                        - n.items
                    end,
                    case when i.rate is null then l.items_refilled_at else g.at end
                  from
                    (select b.*, least(b.burst, b.tokens + extract(epoch from (b.since - b.at))::float8 * b.rate) as level
                     from (select l.chunks_per_second as rate,
                       coalesce(l.burst, greatest(1, ceil(l.chunks_per_second)))::float8 as burst, l.tokens,
                       l.refilled_at as at, greatest(l.refilled_at, n.t) as since) b) c,
                    (select b.*, least(b.burst, b.tokens + extract(epoch from (b.since - b.at))::float8 * b.rate) as level
                     from (select l.items_per_second as rate,
                       coalesce(l.items_burst::float8, greatest(1, ceil(l.items_per_second))) as burst,
                       l.item_tokens as tokens, l.items_refilled_at as at, greatest(l.items_refilled_at, n.t) as since) b) i,
                    lateral (select greatest(n.t,
                      case when c.rate is null then n.t
                        else c.since + greatest(0, 1 - c.level) / c.rate * interval '1 second' end,
                      case when i.rate is null then n.t
                        else i.since + greatest(0, n.items - i.level) / i.rate * interval '1 second' end) as at) g)
                from (select clock_timestamp() as t, ${options?.items ?? 1}::float8 as items) n
                where l.resource = ${resource} and (l.chunks_per_second is not null or l.items_per_second is not null)
                returning n.t as asked_at,
                  case when l.chunks_per_second is null then l.items_refilled_at else l.refilled_at end as granted_at,
                  case when l.items_per_second is null then 0 else n.items end as items),
              waiting as (
                insert into ${s}.resource_waits as w (run_id, unit_id, resource, kind, partition_key, job, step,
                  worker_id, since, until)
                select ${holder.runId}, ${holder.unitId}, ${resource}, 'rate', ${holder.partitionKey}, ${holder.job},
                  ${holder.step}, ${holder.workerId}, asked_at, granted_at
                from taken where granted_at > asked_at
                ${upsertWait})
              select (extract(epoch from (granted_at - asked_at)) * 1000)::float8 as "waitMs",
                (extract(epoch from granted_at) * 1000)::float8 as "grantedAt", items::float8 as items
              from taken`,
            ([row]): Reservation | undefined =>
              row === undefined
                ? undefined
                : { waitMs: num(row["waitMs"]), grantedAt: num(row["grantedAt"]), items: num(row["items"]) }
          )
        ),

      claim: (resource, holder, { permitId, ttlMs }) =>
        op(
          "claim",
          Effect.map(
            // The cap is read in the statement, so a change is seen at once. No slot is given while a live
            // holder sits above the cap (it was lowered): the holders drain down to the new cap.
            sql<Row>`
              with lim as (
                select in_flight from ${s}.resource_limits where resource = ${resource} and in_flight is not null),
              free as (
                select sl.slot from ${s}.resource_slots sl, lim
                where sl.resource = ${resource} and sl.slot <= lim.in_flight
                  and (sl.permit_id is null or sl.expires_at <= clock_timestamp())
                  and not exists (
                    select 1 from ${s}.resource_slots h
                    where h.resource = ${resource} and h.slot > lim.in_flight and h.permit_id is not null
                      and h.expires_at > clock_timestamp())
                order by sl.slot limit 1
                for update of sl skip locked),
              taken as (
                update ${s}.resource_slots sl set permit_id = ${permitId}, run_id = ${holder.runId},
                  unit_id = ${holder.unitId}, worker_id = ${holder.workerId},
                  expires_at = clock_timestamp() + ${ms(ttlMs)}
                from free where sl.resource = ${resource} and sl.slot = free.slot
                returning sl.slot),
              done_waiting as (
                delete from ${s}.resource_waits
                where run_id = ${holder.runId} and unit_id = ${holder.unitId}
                  and (exists (select 1 from taken) or not exists (select 1 from lim))),
              waiting as (
                insert into ${s}.resource_waits as w (run_id, unit_id, resource, kind, partition_key, job, step,
                  worker_id, since, until)
                select ${holder.runId}, ${holder.unitId}, ${resource}, 'in-flight', ${holder.partitionKey},
                  ${holder.job}, ${holder.step}, ${holder.workerId}, clock_timestamp(),
                  clock_timestamp() + ${ms(WAIT_VISIBLE_MS)}
                from lim where not exists (select 1 from taken)
                ${upsertWait})
              select (select slot from taken) as slot, exists (select 1 from lim) as capped`,
            ([row]): ClaimResult => {
              if (row === undefined || row["capped"] !== true) return { _tag: "Unlimited" }
              const slot = numOrNull(row["slot"])
              return slot === null ? { _tag: "Full" } : { _tag: "Held", slot: { resource, slot, permitId } }
            }
          )
        ),

      release: (slots) =>
        slots.length === 0 ? Effect.void : op(
          "release",
          Effect.asVoid(sql`
            update ${s}.resource_slots sl set permit_id = null, run_id = null, unit_id = null, worker_id = null,
              expires_at = null
            from jsonb_to_recordset(${
            JSON.stringify(slots.map((x) => ({ r: x.resource, n: x.slot, p: x.permitId })))
          }::jsonb)
              as x(r text, n integer, p text)
            where sl.resource = x.r and sl.slot = x.n and sl.permit_id = x.p`)
        ),

      renew: (slots, ttlMs) =>
        slots.length === 0 ? Effect.succeed([]) : op(
          "renew",
          Effect.map(
            sql<Row>`
              update ${s}.resource_slots sl set expires_at = clock_timestamp() + ${ms(ttlMs)}
              from jsonb_to_recordset(${
              JSON.stringify(slots.map((x) => ({ r: x.resource, n: x.slot, p: x.permitId })))
            }::jsonb)
                as x(r text, n integer, p text)
              where sl.resource = x.r and sl.slot = x.n and sl.permit_id = x.p and sl.expires_at > clock_timestamp()
              returning sl.resource, sl.slot, sl.permit_id as "permitId"`,
            (rows) =>
              rows.map((row) => ({
                resource: row["resource"] as string,
                slot: num(row["slot"]),
                permitId: row["permitId"] as string
              }))
          )
        ),

      waits: ({ runId }) =>
        op(
          "waits",
          Effect.gen(function*() {
            const rows = yield* sql<Row>`
              select run_id as "runId", unit_id as "unitId", resource, kind, partition_key as "partitionKey", job, step,
                worker_id as "workerId", (extract(epoch from since) * 1000)::float8 as since,
                (extract(epoch from until) * 1000)::float8 as until,
                (extract(epoch from clock_timestamp()) * 1000)::float8 as now
              from ${s}.resource_waits
              where until > clock_timestamp() ${runId === undefined ? sql`` : sql`and run_id = ${runId}`}
              order by since, unit_id`
            const [clock] = rows.length > 0 ? rows : yield* sql<Row>`
              select (extract(epoch from clock_timestamp()) * 1000)::float8 as now`
            return {
              now: num(clock?.["now"] ?? Date.now()),
              waits: rows.map((row): Wait => ({
                runId: row["runId"] as string,
                unitId: row["unitId"] as string,
                partitionKey: row["partitionKey"] as string,
                job: row["job"] as string,
                step: row["step"] as string,
                workerId: row["workerId"] as string,
                resource: row["resource"] as string,
                kind: row["kind"] as Wait["kind"],
                since: num(row["since"]),
                until: num(row["until"])
              }))
            }
          })
        )
    }
    return store
  })

/** Makes the Postgres limiter over the `SqlClient` in context. */
export const make = (options: Options = {}) =>
  Effect.flatMap(makeStore(options), (store) => makeLimiter(store, { cacheTtl: options.cacheTtl }))

/**
 * The Postgres limiter as a layer over the service's `SqlClient` (the store's): add it beside
 * `PgStateStore.layer` for workers whose steps name resources, and to the CLI's layer for `limits`.
 */
export const layer = (
  options: Options = {}
): Layer.Layer<ResourceLimiter, Errors.ConfigurationError | Errors.StoreUnavailable, SqlClient.SqlClient> =>
  Layer.effect(ResourceLimiter, make(options))
