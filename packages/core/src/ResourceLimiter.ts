/**
 * Per-resource limits: how hard a job may load a shared resource (`"primary-db"`, `"billing-api"`)
 * across every worker of every run and job. A step names the resources it loads
 * (`Step.chunked("bill", { resources: ["primary-db"], ... })`) and each resource may have
 *
 * - a **chunk rate**: at most `chunksPerSecond` chunks start per second, with bursts of at most `burst`
 *   (a token bucket; default: one second of chunks),
 * - an **item rate**: at most `itemsPerSecond` items start per second, with bursts of at most
 *   `itemsBurst` (a second token bucket; default: one second of items), a chunk counting as its planned
 *   size (`ctx.chunkSize`, the most items it may take), and
 * - an **in-flight cap**: at most `inFlight` chunks hold the resource at once.
 *
 * The worker takes a chunk's permits before the chunk's transaction begins and gives them back after
 * it commits or rolls back, never inside it (D16). A permit held by a worker that dies expires like a
 * lease, so capacity is never lost. Limits are stored (defaults declared in code seed them on first
 * use), read through a cache of at most 5 s, and changed by an operator while runs go (`limits set`),
 * with each change in an audit log.
 *
 * Contract, for every driver (`Store`; memory here, Postgres in `PgResourceLimiter`):
 *
 * - **Rate by reservation.** `reserve` takes a chunk's tokens in one atomic step: one from the chunk
 *   bucket (when the resource has `chunksPerSecond`) and `items` from the item bucket (when it has
 *   `itemsPerSecond`; `items` is the chunk's planned size, default 1). Each bucket refills at its rate up
 *   to its burst, never before its last grant. The chunk is granted at the earliest time, now or later,
 *   when every bucket it draws from holds its tokens, and takes them from every bucket at that time,
 *   going into debt when that time is ahead: the caller waits until then (one round trip per
 *   reservation, however many wait). So over any interval of the driver's clock, counted at the grant
 *   times, chunks granted are at most `chunksPerSecond × length + burst` and items granted at most
 *   `itemsPerSecond × length + itemsBurst`. Both buckets charge at the one grant time, so chunks held
 *   back by the item rate do not bunch up on the chunk rate (nor the other way round). Tokens reserved
 *   and then not used are lost, never given twice.
 * - **A chunk larger than the item burst** is granted, never refused: for it the bucket fills past its
 *   burst until it holds the whole chunk, `(items − itemsBurst) / itemsPerSecond` seconds after it was
 *   full, and the chunk leaves it empty. With such chunks the bound is `itemsPerSecond × length +` the
 *   larger of `itemsBurst` and the largest chunk (a chunk is not split).
 * - **A chunk is charged its planned size**, not the items it then took. A refund after the commit
 *   would not be safe: while the tokens were lent out the bucket refilled, and the refilled tokens it
 *   could not have held at its burst would come back on top, so the next chunks could together exceed
 *   the bound. With adaptive sizes, or a partition's last chunk finding fewer items, the rate of items
 *   actually processed is at or below the limit.
 * - **In-flight slots.** `claim` takes a free slot numbered at most `inFlight`, or answers `Full`; a slot is
 *   free when unheld or its expiry passed. While a held slot is numbered above the cap (the cap was
 *   lowered), no new slot is given, so holders drain to the new cap without any chunk being stopped.
 * - **The driver's clock** decides rates and expiry (the database's `clock_timestamp()`, or Effect's
 *   `Clock` in memory, so `TestClock` drives it), never the caller's.
 * - **Waits are visible**: `reserve` and `claim` record the holder's wait (until its grant time, or
 *   while it polls for a slot), and `waits` lists the current ones for `status`.
 * - **Settings are audited**: `declare` stores code defaults on first use and follows later code
 *   defaults while no operator changed the resource; `set` is an operator's change; both write the
 *   audit log (who, when, why, before and after).
 *
 * Outside the contract: fairness between waiters (tokens go in reservation order, slots to whoever
 * polls first), and which bucket held a chunk back (both count as a `rate` wait).
 *
 * Adding a driver: implement `Store`, build the service with `make(store)`, and run
 * `ResourceLimiterConformance` from `@chunkwise/testing` against it. `RedisResourceLimiter` in
 * `@chunkwise/adapters-redis` is one: one Lua script per operation on Redis `TIME` (D18; its module
 * doc says why `@effect/experimental`'s RateLimiter did not fit).
 *
 * @since 0.1.0
 */
import { Clock, Context, Deferred, Duration, Effect, Exit, Layer, Metric, Random } from "effect"
import * as Errors from "./Errors.js"
import { labelled } from "./internal/labelled.js"
import * as Metrics from "./Metrics.js"

// ---- settings

/** A resource's limits. Leave a setting out for no limit of that kind. */
export interface Limit {
  /** Chunks that may start per second, across all workers (a positive number; 0.5 is one every 2 s). */
  readonly chunksPerSecond?: number | undefined
  /** Chunks that may start at once after a pause (a positive integer; default: one second of chunks, at least 1). */
  readonly burst?: number | undefined
  /**
   * Items that may start per second, across all workers (a positive number), a chunk counting as its
   * planned size (`ctx.chunkSize`). For a resource priced or loaded per item, or steps with adaptive sizes.
   */
  readonly itemsPerSecond?: number | undefined
  /**
   * Items that may start at once after a pause (a positive integer; default: one second of items, at
   * least 1). A chunk larger than it still runs: it waits until the bucket has refilled its whole size.
   */
  readonly itemsBurst?: number | undefined
  /** Chunks that may hold the resource at once, across all workers (a positive integer). */
  readonly inFlight?: number | undefined
}

/** Default limits by resource name, as `Worker.make({ limits })` takes them. */
export type Limits = Readonly<Record<string, Limit>>

/** An operator's change: a number sets a limit, `null` removes it, a setting left out is kept. */
export interface LimitPatch {
  readonly chunksPerSecond?: number | null | undefined
  readonly burst?: number | null | undefined
  readonly itemsPerSecond?: number | null | undefined
  readonly itemsBurst?: number | null | undefined
  readonly inFlight?: number | null | undefined
}

/** A resource's stored limits. */
export interface Setting {
  readonly resource: string
  readonly chunksPerSecond: number | null
  /** `null`: the default, one second of chunks (at least 1). */
  readonly burst: number | null
  readonly itemsPerSecond: number | null
  /** `null`: the default, one second of items (at least 1). */
  readonly itemsBurst: number | null
  readonly inFlight: number | null
  /** `default`: declared in code (later code defaults replace it); `operator`: set with `limits set`. */
  readonly source: "default" | "operator"
  /** Epoch ms, the driver's clock. */
  readonly updatedAt: number
  readonly updatedBy: string
  readonly reason: string
}

/** A resource's limits and what is happening on it now. */
export interface Usage extends Setting {
  /** In-flight slots held now. */
  readonly inUse: number
  /** Units waiting for a permit now. */
  readonly waiting: number
}

/** One audited change of a resource's limits. */
export interface Change {
  readonly at: number
  readonly actor: string
  readonly reason: string
  readonly resource: string
  /** `null` when the change created the resource. */
  readonly before: Limit | null
  readonly after: Limit
}

/** What `declare` did with one resource. */
export interface Declared {
  readonly resource: string
  /** `created`: first use; `updated`: the code's default changed; `operator`: an operator's setting stays. */
  readonly outcome: "created" | "updated" | "unchanged" | "operator"
  readonly setting: Setting
}

/** Who asks for a permit: one chunk of one unit. */
export interface Holder {
  readonly runId: string
  readonly unitId: string
  readonly partitionKey: string
  readonly job: string
  readonly step: string
  readonly workerId: string
}

/** A unit waiting for a permit now. */
export interface Wait extends Holder {
  readonly resource: string
  /** `rate`: its token is due at `until`; `in-flight`: it polls for a slot. */
  readonly kind: "rate" | "in-flight"
  /** Epoch ms, the driver's clock. */
  readonly since: number
  readonly until: number
}

/** An in-flight slot a chunk holds. */
export interface Slot {
  readonly resource: string
  readonly slot: number
  /** Unique per claim: a release or renewal matches it, so an expired slot taken by another is never touched. */
  readonly permitId: string
}

/** A chunk's rate tokens on one resource. */
export interface Grant {
  readonly resource: string
  /** When the tokens were due (when the chunk may start), epoch ms on the driver's clock. */
  readonly grantedAt: number
  readonly waitedMs: number
  /** Item tokens taken (the chunk's planned size); 0 when the resource has no item rate. */
  readonly items: number
}

/** What `reserve` answers: when the chunk's tokens are due, and the item tokens it took. */
export interface Reservation {
  /** How long the caller waits from now, in ms (0: at once). */
  readonly waitMs: number
  /** When the tokens are due (the chunk may start), epoch ms on the driver's clock. */
  readonly grantedAt: number
  /** Item tokens taken; 0 when the resource has no item rate. */
  readonly items: number
}

/** What a chunk asks of the rates: its planned size. */
export interface AcquireOptions {
  /**
   * Item tokens to take on each resource with an item rate: the chunk's planned size (`ctx.chunkSize`,
   * the most items it may take), a non-negative integer. Default 1, the least a chunk takes, so a caller
   * that does not say is never held back for more than it may load.
   */
  readonly items?: number | undefined
}

/** The permits one chunk holds from before its transaction until after its commit. */
export interface Permits {
  readonly slots: ReadonlyArray<Slot>
  readonly grants: ReadonlyArray<Grant>
}

/** The answer to a claim. */
export type ClaimResult =
  /** The resource has no in-flight cap (now). */
  | { readonly _tag: "Unlimited" }
  | { readonly _tag: "Held"; readonly slot: Slot }
  /** Every slot is taken: poll again. */
  | { readonly _tag: "Full" }

// ---- validation

const RESOURCE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/
const SETTINGS = ["chunksPerSecond", "burst", "itemsPerSecond", "itemsBurst", "inFlight"] as const
/** A limit's settings, in the order they are shown. */
export type SettingName = typeof SETTINGS[number]
/** The most in-flight slots one resource may have (each is a row in the Postgres driver). */
export const MAX_IN_FLIGHT = 10_000

/** Why a resource name is refused, or `undefined` when it is fine. */
export const invalidResourceName = (resource: unknown): string | undefined =>
  typeof resource === "string" && RESOURCE_PATTERN.test(resource)
    ? undefined
    : `resource ${JSON.stringify(resource)} is not a valid name: use 1 to 64 lower-case letters, digits, ".", "_" ` +
      `or "-", starting with a letter or digit, e.g. "primary-db"`

/** Why one setting's value is refused (`label` names it as the user wrote it), or `undefined`. */
export const invalidSetting = (
  setting: SettingName,
  value: unknown,
  label: string
): string | undefined => {
  const shown = typeof value === "number" ? String(value) : JSON.stringify(value)
  switch (setting) {
    case "chunksPerSecond":
      return typeof value === "number" && Number.isFinite(value) && value > 0
        ? undefined
        : `${label} must be a positive number of chunks per second, e.g. 50 or 0.5 (got ${shown}); leave it out ` +
          `for no rate limit`
    case "burst":
      return typeof value === "number" && Number.isInteger(value) && value >= 1
        ? undefined
        : `${label} must be a positive integer, the chunks that may start at once after a pause (got ${shown}); ` +
          `leave it out for one second of chunks`
    case "itemsPerSecond":
      return typeof value === "number" && Number.isFinite(value) && value > 0
        ? undefined
        : `${label} must be a positive number of items per second, e.g. 5000 or 0.5 (got ${shown}); leave it out ` +
          `for no item rate limit`
    case "itemsBurst":
      return typeof value === "number" && Number.isSafeInteger(value) && value >= 1
        ? undefined
        : `${label} must be a positive integer, the items that may start at once after a pause (got ${shown}); ` +
          `leave it out for one second of items`
    case "inFlight":
      return typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= MAX_IN_FLIGHT
        ? undefined
        : `${label} must be an integer from 1 to ${MAX_IN_FLIGHT}, the chunks that may hold the resource at once ` +
          `(got ${shown}); leave it out for no cap`
  }
}

/**
 * Why a limit is refused, or `undefined` when it is fine. `label` names each setting as the user wrote
 * it (`limits["primary-db"].inFlight` in code, `--in-flight` on the command line).
 */
export const invalidLimit = (limit: unknown, label: (setting: string) => string): string | undefined => {
  if (typeof limit !== "object" || limit === null || Array.isArray(limit)) {
    return `${label("")} must be an object like { chunksPerSecond: 50, inFlight: 8 } (got ${JSON.stringify(limit)})`
  }
  for (const key of Object.keys(limit)) {
    if (!(SETTINGS as ReadonlyArray<string>).includes(key)) {
      return `${label(key)} is not a limit setting; use chunksPerSecond, burst, itemsPerSecond, itemsBurst or inFlight`
    }
  }
  const values = limit as Record<string, unknown>
  for (const key of SETTINGS) {
    const value = values[key]
    if (value === undefined || value === null) continue
    const problem = invalidSetting(key, value, label(key))
    if (problem !== undefined) return problem
  }
  if ((values["burst"] ?? null) !== null && (values["chunksPerSecond"] ?? null) === null) {
    return `${label("burst")} needs ${label("chunksPerSecond")}: a burst only shapes a rate limit`
  }
  if ((values["itemsBurst"] ?? null) !== null && (values["itemsPerSecond"] ?? null) === null) {
    return `${label("itemsBurst")} needs ${label("itemsPerSecond")}: an item burst only shapes an item rate limit`
  }
  return undefined
}

/** The burst a rate gets when none is set: one second of it (chunks or items), at least 1. */
export const defaultBurst = (perSecond: number): number => Math.max(1, Math.ceil(perSecond))

/** A setting's limits as a `Limit` (settings without a value left out). */
export const limitOf = (setting: {
  readonly chunksPerSecond: number | null
  readonly burst: number | null
  readonly itemsPerSecond?: number | null | undefined
  readonly itemsBurst?: number | null | undefined
  readonly inFlight: number | null
}): Limit => ({
  ...(setting.chunksPerSecond === null ? {} : { chunksPerSecond: setting.chunksPerSecond }),
  ...(setting.burst === null ? {} : { burst: setting.burst }),
  ...(setting.itemsPerSecond == null ? {} : { itemsPerSecond: setting.itemsPerSecond }),
  ...(setting.itemsBurst == null ? {} : { itemsBurst: setting.itemsBurst }),
  ...(setting.inFlight === null ? {} : { inFlight: setting.inFlight })
})

/** Applies an operator's patch to the current limits. */
export const patched = (current: Limit, patch: LimitPatch): Limit => {
  const pick = (key: typeof SETTINGS[number]) => {
    const value = patch[key] === undefined ? current[key] : patch[key]
    return value === null || value === undefined ? {} : { [key]: value }
  }
  // Removing a rate removes its burst too: a burst only shapes a rate.
  const rateRemoved = patch.chunksPerSecond === null && patch.burst === undefined
  const itemRateRemoved = patch.itemsPerSecond === null && patch.itemsBurst === undefined
  return {
    ...pick("chunksPerSecond"),
    ...(rateRemoved ? {} : pick("burst")),
    ...pick("itemsPerSecond"),
    ...(itemRateRemoved ? {} : pick("itemsBurst")),
    ...pick("inFlight")
  }
}

/** Same limits? */
export const sameLimit = (a: Limit, b: Limit): boolean => SETTINGS.every((key) => (a[key] ?? null) === (b[key] ?? null))

/** `50 chunks/s (burst 50) · 5000 items/s (burst 5000) · 8 in flight`, or `no limit`. */
export const summary = (limit: Limit): string => {
  const parts: Array<string> = []
  if (limit.chunksPerSecond !== undefined) {
    parts.push(`${limit.chunksPerSecond} chunks/s (burst ${limit.burst ?? defaultBurst(limit.chunksPerSecond)})`)
  }
  if (limit.itemsPerSecond !== undefined) {
    parts.push(`${limit.itemsPerSecond} items/s (burst ${limit.itemsBurst ?? defaultBurst(limit.itemsPerSecond)})`)
  }
  if (limit.inFlight !== undefined) parts.push(`${limit.inFlight} in flight`)
  return parts.length === 0 ? "no limit" : parts.join(" · ")
}

// ---- the driver port

/** An operator: who, and why. Recorded in the audit log. */
export interface Actor {
  readonly actor: string
  readonly reason: string
}

/** What a driver provides; `make` builds the limiter (waiting, caching, metrics) on top. See the module doc. */
export interface Store {
  readonly kind: string
  /** Stores code defaults: creates unknown resources, follows changed defaults unless an operator set them. */
  readonly declare: (
    resources: ReadonlyArray<{ readonly resource: string; readonly limit: Limit }>,
    actor: string
  ) => Effect.Effect<ReadonlyArray<Declared>, Errors.StoreUnavailable>
  /** Every known resource with its limits and current use. */
  readonly settings: Effect.Effect<ReadonlyArray<Usage>, Errors.StoreUnavailable>
  /** An operator's change, audited. Fails `NotFound` for a resource never declared unless `create`. */
  readonly set: (
    resource: string,
    patch: LimitPatch,
    actor: Actor,
    options: { readonly create: boolean }
  ) => Effect.Effect<Setting, Errors.StoreUnavailable | Errors.NotFound | Errors.ConfigurationError>
  /** Audited changes, oldest first (the last `limit` of them). */
  readonly history: (
    options: { readonly resource?: string | undefined; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<Change>, Errors.StoreUnavailable>
  /**
   * Takes a chunk's rate tokens, atomically: one chunk token (with `chunksPerSecond`) and `items` item
   * tokens (with `itemsPerSecond`; default 1), due at one grant time (see the module doc). `undefined`
   * when the resource has no rate limit (now). Records a wait when the grant time is ahead.
   */
  readonly reserve: (
    resource: string,
    holder: Holder,
    options?: { readonly items?: number | undefined }
  ) => Effect.Effect<Reservation | undefined, Errors.StoreUnavailable>
  /** Claims an in-flight slot that expires after `ttlMs` unless renewed. Records (or ends) a wait. */
  readonly claim: (
    resource: string,
    holder: Holder,
    options: { readonly ttlMs: number; readonly permitId: string }
  ) => Effect.Effect<ClaimResult, Errors.StoreUnavailable>
  readonly release: (slots: ReadonlyArray<Slot>) => Effect.Effect<void, Errors.StoreUnavailable>
  /** Extends held slots by `ttlMs`; returns those still held. */
  readonly renew: (
    slots: ReadonlyArray<Slot>,
    ttlMs: number
  ) => Effect.Effect<ReadonlyArray<Slot>, Errors.StoreUnavailable>
  /** Current waits (of one run, when given), oldest first, with the driver's clock. */
  readonly waits: (
    options: { readonly runId?: string | undefined }
  ) => Effect.Effect<{ readonly now: number; readonly waits: ReadonlyArray<Wait> }, Errors.StoreUnavailable>
}

// ---- the service

/** The limiter a worker uses. */
export interface ResourceLimiterShape extends Omit<Store, "reserve" | "claim" | "release" | "renew"> {
  /**
   * Waits for a permit on every resource (rates first, then in-flight slots in name order, so two chunks
   * never hold each other's slots) and returns them. Interrupted, it holds nothing. Uses the cached
   * limits: a resource with no limit costs nothing. `options.items` is the chunk's planned size, charged
   * on resources with an item rate (default 1; a non-negative integer, else the call dies).
   */
  readonly acquire: (
    resources: ReadonlyArray<string>,
    holder: Holder,
    ttlMs: number,
    options?: AcquireOptions
  ) => Effect.Effect<Permits, Errors.StoreUnavailable>
  /** Gives the slots back (never fails: a slot that cannot be released expires). */
  readonly release: (permits: Permits) => Effect.Effect<void>
  /** Extends held slots (the worker's heartbeat); returns those still held. */
  readonly renew: (
    slots: ReadonlyArray<Slot>,
    ttlMs: number
  ) => Effect.Effect<ReadonlyArray<Slot>, Errors.StoreUnavailable>
}

/** The resource limiter service. A worker whose steps name resources needs one. */
export class ResourceLimiter extends Context.Tag("@chunkwise/core/ResourceLimiter")<
  ResourceLimiter,
  ResourceLimiterShape
>() {}

/** Options of the limiter built on a driver. */
export interface Options {
  /** How long limits are cached before a worker reads them again: at most 5 s (default 5 s). */
  readonly cacheTtl?: Duration.DurationInput | undefined
}

const noPermits: Permits = { slots: [], grants: [] }
/** A waiter for a slot polls at most this far apart (a release in this process wakes it at once). */
const MAX_POLL_MS = 500
const FIRST_POLL_MS = 20

/** Builds the limiter on a driver: the cache of limits, waiting, local wake-ups, metrics. */
export const make = (
  store: Store,
  options: Options = {}
): Effect.Effect<ResourceLimiterShape, Errors.ConfigurationError> =>
  Effect.gen(function*() {
    const ttl = Duration.decode(options.cacheTtl ?? "5 seconds")
    const ttlMs = Duration.toMillis(ttl)
    if (!(ttlMs > 0 && ttlMs <= 5000)) {
      return yield* new Errors.ConfigurationError({
        message: `ResourceLimiter: cacheTtl must be a duration above 0 and at most 5 seconds (got ${
          String(options.cacheTtl)
        }), so a limit an operator changes reaches every worker within seconds`
      })
    }
    const [cached, invalidate] = yield* Effect.cachedInvalidateWithTTL(
      Effect.map(store.settings, (rows) => new Map(rows.map((row) => [row.resource, row] as const))),
      ttl
    )
    const prefix = (yield* Random.nextInt).toString(36)
    let counter = 0
    /** Wakes waiters of this process when a slot of the resource is released here. */
    const wakers = new Map<string, Deferred.Deferred<void>>()
    const wakerOf = (resource: string) =>
      Effect.suspend(() => {
        const found = wakers.get(resource)
        if (found !== undefined) return Effect.succeed(found)
        return Effect.tap(Deferred.make<void>(), (d) => Effect.sync(() => wakers.set(resource, d)))
      })
    const wake = (resource: string) =>
      Effect.suspend(() => {
        const found = wakers.get(resource)
        wakers.delete(resource)
        return found === undefined ? Effect.void : Deferred.succeed(found, undefined)
      })
    const throttled = (resource: string, kind: "rate" | "in_flight", ms: number) => {
      const labels = [["resource", resource], ["kind", kind]] as const
      return Effect.zipRight(
        Metric.increment(labelled(Metrics.throttledWaits, labels)),
        Metric.incrementBy(labelled(Metrics.throttledSeconds, labels), ms / 1000)
      )
    }
    const releaseSlots = (slots: ReadonlyArray<Slot>) =>
      slots.length === 0 ? Effect.void : store.release(slots).pipe(
        Effect.catchAll((error) =>
          Effect.logWarning("chunkwise: releasing resource slots failed; they expire with their lease", error)
        ),
        Effect.zipRight(Effect.forEach(new Set(slots.map((s) => s.resource)), wake, { discard: true }))
      )

    const claimSlot = (resource: string, holder: Holder, slotTtlMs: number, held: Array<Slot>) =>
      Effect.gen(function*() {
        let pollMs = FIRST_POLL_MS
        let waitedSince: number | undefined
        while (true) {
          const waker = yield* wakerOf(resource)
          const permitId = `${prefix}.${(counter += 1).toString(36)}`
          // Uninterruptible, so a slot claimed is always in `held` and released if the caller is interrupted.
          const result = yield* Effect.uninterruptible(
            Effect.tap(store.claim(resource, holder, { ttlMs: slotTtlMs, permitId }), (r) =>
              Effect.sync(() => {
                if (r._tag === "Held") held.push(r.slot)
              }))
          )
          if (result._tag !== "Full") {
            if (waitedSince !== undefined) yield* throttled(resource, "in_flight", (yield* monotonicMs) - waitedSince)
            return
          }
          waitedSince ??= yield* monotonicMs
          const jitter = yield* Random.nextRange(0.8, 1.2)
          yield* Effect.raceFirst(Effect.sleep(Math.round(pollMs * jitter)), Deferred.await(waker))
          pollMs = Math.min(MAX_POLL_MS, pollMs * 2)
        }
      })

    const limiter: ResourceLimiterShape = {
      kind: store.kind,
      declare: (resources, actor) => Effect.zipLeft(store.declare(resources, actor), invalidate),
      settings: store.settings,
      set: (resource, patch, actor, setOptions) =>
        Effect.zipLeft(store.set(resource, patch, actor, setOptions), invalidate),
      history: store.history,
      waits: store.waits,
      renew: store.renew,
      release: (permits) => releaseSlots(permits.slots),
      acquire: (resources, holder, slotTtlMs, acquireOptions) =>
        resources.length === 0 ? Effect.succeed(noPermits) : Effect.gen(function*() {
          const items = acquireOptions?.items ?? 1
          if (!(Number.isSafeInteger(items) && items >= 0)) {
            return yield* Effect.dieMessage(
              `ResourceLimiter.acquire: items must be the chunk's planned size, an integer of 0 or more (got ${
                String(items)
              })`
            )
          }
          const limits = yield* cached
          const names = [...new Set(resources)].sort()
          const grants: Array<Grant> = []
          for (const resource of names) {
            const limit = limits.get(resource)
            if ((limit?.chunksPerSecond ?? null) === null && (limit?.itemsPerSecond ?? null) === null) continue
            const reserved = yield* store.reserve(resource, holder, { items })
            if (reserved === undefined) continue
            grants.push({ resource, grantedAt: reserved.grantedAt, waitedMs: reserved.waitMs, items: reserved.items })
            if (reserved.waitMs > 0) {
              yield* Effect.sleep(Math.ceil(reserved.waitMs))
              yield* throttled(resource, "rate", reserved.waitMs)
            }
          }
          const held: Array<Slot> = []
          yield* Effect.forEach(
            names.filter((resource) => (limits.get(resource)?.inFlight ?? null) !== null),
            (resource) => claimSlot(resource, holder, slotTtlMs, held),
            { discard: true }
          ).pipe(Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : releaseSlots(held))))
          return { slots: held, grants }
        })
    }
    return limiter
  })

const monotonicMs = Effect.map(Clock.currentTimeNanos, (nanos) => Number(nanos / 1_000_000n))

// ---- the in-memory driver

/** A token bucket: `tokens` at `refilledAt` (below 0: debt; `refilledAt` may be ahead: its last grant). */
interface Bucket {
  tokens: number
  refilledAt: number
}

/** A bucket's level at `at`, or at its last grant if that is later (`from`), refilled up to `burst`. */
const levelAt = (bucket: Bucket, rate: number, burst: number, at: number) => {
  const from = Math.max(bucket.refilledAt, at)
  return { from, level: Math.min(burst, bucket.tokens + ((from - bucket.refilledAt) / 1000) * rate) }
}

/** One bucket a reservation draws `cost` tokens from. */
interface Draw {
  readonly bucket: Bucket
  readonly rate: number
  readonly burst: number
  readonly cost: number
  readonly from: number
  readonly level: number
  /** The earliest time the bucket holds `cost` (above its burst: had it no cap). */
  readonly due: number
}

const drawOf = (bucket: Bucket, rate: number, burst: number, cost: number, at: number): Draw => {
  const { from, level } = levelAt(bucket, rate, burst, at)
  return { bucket, rate, burst, cost, from, level, due: from + (Math.max(0, cost - level) / rate) * 1000 }
}

/** Takes `cost` at `grantedAt` (at or after `due`); for a cost above the burst the bucket fills up to the cost. */
const take = (draw: Draw, grantedAt: number) => {
  const held = draw.level + ((grantedAt - draw.from) / 1000) * draw.rate
  draw.bucket.tokens = Math.min(Math.max(draw.burst, draw.cost), held) - draw.cost
  draw.bucket.refilledAt = grantedAt
}

interface HeldSlot {
  readonly permitId: string
  expiresAt: number
}

/**
 * The in-memory driver: limits, buckets and slots in this process, on Effect's `Clock` (so `TestClock`
 * drives it). Every operation reads the clock, then runs synchronously, so each is atomic. Share one
 * instance between the workers of a process; it limits nothing across processes.
 */
export const makeMemoryStore: Effect.Effect<Store> = Effect.sync(() => {
  const settings = new Map<string, { -readonly [K in keyof Setting]: Setting[K] }>()
  /** Chunk buckets, and item buckets, by resource (a resource has one while it has that rate). */
  const buckets = new Map<string, Bucket>()
  const itemBuckets = new Map<string, Bucket>()
  const slots = new Map<string, Map<number, HeldSlot>>()
  const waits = new Map<string, Wait>()
  const audit: Array<Change> = []
  const now = Clock.currentTimeMillis
  const waitKey = (holder: Holder) => `${holder.runId}\u0000${holder.unitId}`

  const slotsOf = (resource: string) => {
    let map = slots.get(resource)
    if (map === undefined) {
      map = new Map()
      slots.set(resource, map)
    }
    return map
  }
  /**
   * Moves a bucket to new settings: refilled up to `at` at the old rate and burst, then capped by the
   * new burst; a rate set where there was none starts full; a rate removed drops its bucket.
   */
  const rebucket = (
    bucketsOf: Map<string, Bucket>,
    resource: string,
    old: { readonly rate: number | null; readonly burst: number | null },
    next: { readonly rate: number | null; readonly burst: number | null },
    at: number
  ) => {
    const bucket = bucketsOf.get(resource)
    if (next.rate === null) {
      bucketsOf.delete(resource)
      return
    }
    const burst = next.burst ?? defaultBurst(next.rate)
    if (old.rate === null || bucket === undefined) {
      bucketsOf.set(resource, { tokens: burst, refilledAt: at })
      return
    }
    const { from, level } = levelAt(bucket, old.rate, old.burst ?? defaultBurst(old.rate), at)
    bucket.tokens = Math.min(burst, level)
    bucket.refilledAt = from
  }
  /** Applies new limits to a resource (creating it), keeping each bucket's tokens where it had that rate. */
  const apply = (resource: string, limit: Limit, source: Setting["source"], by: Actor, at: number): Setting => {
    const before = settings.get(resource)
    const setting = {
      resource,
      chunksPerSecond: limit.chunksPerSecond ?? null,
      burst: limit.burst ?? null,
      itemsPerSecond: limit.itemsPerSecond ?? null,
      itemsBurst: limit.itemsBurst ?? null,
      inFlight: limit.inFlight ?? null,
      source,
      updatedAt: at,
      updatedBy: by.actor,
      reason: by.reason
    }
    rebucket(
      buckets,
      resource,
      {
        rate: before?.chunksPerSecond ?? null,
        burst: before?.burst ?? null
      },
      { rate: setting.chunksPerSecond, burst: setting.burst },
      at
    )
    rebucket(
      itemBuckets,
      resource,
      {
        rate: before?.itemsPerSecond ?? null,
        burst: before?.itemsBurst ?? null
      },
      { rate: setting.itemsPerSecond, burst: setting.itemsBurst },
      at
    )
    settings.set(resource, setting)
    audit.push({
      at,
      actor: by.actor,
      reason: by.reason,
      resource,
      before: before === undefined ? null : limitOf(before),
      after: limit
    })
    return { ...setting }
  }
  const live = (slot: HeldSlot | undefined, at: number) => slot !== undefined && slot.expiresAt > at

  const store: Store = {
    kind: "memory",

    declare: (resources, actor) =>
      Effect.map(
        now,
        (at) =>
          [...resources].sort((a, b) => (a.resource < b.resource ? -1 : 1)).map(({ limit, resource }) => {
            const current = settings.get(resource)
            if (current === undefined) {
              const by = { actor, reason: "first use: the default declared in code" }
              return { resource, outcome: "created" as const, setting: apply(resource, limit, "default", by, at) }
            }
            if (sameLimit(limitOf(current), limit)) return { resource, outcome: "unchanged" as const, setting: current }
            if (current.source === "operator") return { resource, outcome: "operator" as const, setting: current }
            const by = { actor, reason: "the default declared in code changed" }
            return { resource, outcome: "updated" as const, setting: apply(resource, limit, "default", by, at) }
          })
      ),

    settings: Effect.map(
      now,
      (at) =>
        [...settings.values()].sort((a, b) => (a.resource < b.resource ? -1 : 1)).map((s) => ({
          ...s,
          inUse: [...slotsOf(s.resource).values()].filter((slot) => live(slot, at)).length,
          waiting: [...waits.values()].filter((w) => w.resource === s.resource && w.until > at).length
        }))
    ),

    set: (resource, patch, actor, { create }) =>
      Effect.flatMap(now, (at): Effect.Effect<Setting, Errors.ConfigurationError | Errors.NotFound> => {
        const nameProblem = invalidResourceName(resource)
        if (nameProblem !== undefined) return Effect.fail(new Errors.ConfigurationError({ message: nameProblem }))
        const current = settings.get(resource)
        if (current === undefined && !create) {
          return Effect.fail(new Errors.NotFound({ what: "resource", id: resource }))
        }
        const limit = patched(current === undefined ? {} : limitOf(current), patch)
        const problem = invalidLimit(limit, (key) => `limit of "${resource}"${key === "" ? "" : `: ${key}`}`)
        if (problem !== undefined) return Effect.fail(new Errors.ConfigurationError({ message: problem }))
        return Effect.succeed(apply(resource, limit, "operator", actor, at))
      }),

    history: ({ limit, resource }) =>
      Effect.sync(() => audit.filter((c) => resource === undefined || c.resource === resource).slice(-limit)),

    reserve: (resource, holder, options) =>
      Effect.map(now, (at): Reservation | undefined => {
        const setting = settings.get(resource)
        if (setting === undefined) return undefined
        const items = options?.items ?? 1
        const chunkBucket = buckets.get(resource)
        const itemBucket = itemBuckets.get(resource)
        const draws: Array<Draw> = []
        if (setting.chunksPerSecond !== null && chunkBucket !== undefined) {
          const burst = setting.burst ?? defaultBurst(setting.chunksPerSecond)
          draws.push(drawOf(chunkBucket, setting.chunksPerSecond, burst, 1, at))
        }
        const itemDraw = setting.itemsPerSecond !== null && itemBucket !== undefined
          ? drawOf(
            itemBucket,
            setting.itemsPerSecond,
            setting.itemsBurst ?? defaultBurst(setting.itemsPerSecond),
            items,
            at
          )
          : undefined
        if (itemDraw !== undefined) draws.push(itemDraw)
        if (draws.length === 0) return undefined
        // One grant time for every bucket: the latest of their due times.
        const grantedAt = Math.max(at, ...draws.map((d) => d.due))
        for (const draw of draws) take(draw, grantedAt)
        const waitMs = grantedAt - at
        if (waitMs > 0) {
          waits.set(waitKey(holder), { ...holder, resource, kind: "rate", since: at, until: grantedAt })
        }
        return { waitMs, grantedAt, items: itemDraw === undefined ? 0 : items }
      }),

    claim: (resource, holder, { permitId, ttlMs }) =>
      Effect.map(now, (at): ClaimResult => {
        const cap = settings.get(resource)?.inFlight ?? null
        const key = waitKey(holder)
        if (cap === null) {
          waits.delete(key)
          return { _tag: "Unlimited" }
        }
        const held = slotsOf(resource)
        const drainingAboveCap = [...held.entries()].some(([n, slot]) => n > cap && live(slot, at))
        let free: number | undefined
        for (let n = 1; n <= cap && !drainingAboveCap; n++) {
          if (!live(held.get(n), at)) {
            free = n
            break
          }
        }
        if (free === undefined) {
          const previous = waits.get(key)
          const since = previous !== undefined && previous.resource === resource && previous.until > at
            ? previous.since
            : at
          waits.set(key, { ...holder, resource, kind: "in-flight", since, until: at + WAIT_VISIBLE_MS })
          return { _tag: "Full" }
        }
        waits.delete(key)
        held.set(free, { permitId, expiresAt: at + ttlMs })
        return { _tag: "Held", slot: { resource, slot: free, permitId } }
      }),

    release: (released) =>
      Effect.sync(() => {
        for (const { permitId, resource, slot } of released) {
          const held = slotsOf(resource)
          if (held.get(slot)?.permitId === permitId) held.delete(slot)
        }
      }),

    renew: (renewed, ttlMs) =>
      Effect.map(now, (at) =>
        renewed.filter(({ permitId, resource, slot }) => {
          const held = slotsOf(resource).get(slot)
          if (held === undefined || held.permitId !== permitId || !live(held, at)) return false
          held.expiresAt = at + ttlMs
          return true
        })),

    waits: ({ runId }) =>
      Effect.map(now, (at) => ({
        now: at,
        waits: [...waits.values()]
          .filter((w) => w.until > at && (runId === undefined || w.runId === runId))
          .sort((a, b) => a.since - b.since)
      }))
  }
  return store
})

/**
 * How long a slot waiter stays visible after its last poll: well above the longest poll interval, so a
 * live waiter never blinks out of `status`, and one that died disappears within seconds.
 */
export const WAIT_VISIBLE_MS = 2000

/** The in-memory limiter (one per process: give every worker of the process the same layer). */
export const makeMemory = (options: Options = {}): Effect.Effect<ResourceLimiterShape, Errors.ConfigurationError> =>
  Effect.flatMap(makeMemoryStore, (store) => make(store, options))

/** The in-memory limiter as a layer, for the in-memory engine and tests. */
export const layerMemory = (options: Options = {}): Layer.Layer<ResourceLimiter, Errors.ConfigurationError> =>
  Layer.effect(ResourceLimiter, makeMemory(options))
