/**
 * The resource limiter on Redis: per-resource rates and in-flight caps shared by every worker that
 * reaches the same Redis, with the contract of `ResourceLimiter` in `@chunkwise/core` (see that
 * module's doc). Everything lives in Redis, settings and audit log included, so a team with Redis and
 * no Postgres can use it; `limits set` and `limits history` work on it as on the Postgres driver.
 *
 * How, one Lua script per operation on Redis time (`TIME` inside the script, never a worker's clock,
 * D5, D18):
 *
 * - a **rate** is a token bucket per resource and kind (fields of the buckets hash: the resource for
 *   chunks, `<resource>:items` for items; each with its rate, burst, tokens and last refill).
 *   `reserve` takes a chunk's tokens from both at one grant time, the earliest when each holds them
 *   (one chunk token, and the chunk's planned size in item tokens), going into debt when that time is
 *   ahead, and answers how long the caller waits: one round trip per permit, however many wait, and at
 *   most `rate × length + burst` chunks, and items, granted over any interval.
 * - an **in-flight cap** is a sorted set per resource of `<slot>:<permitId>` members scored by their
 *   expiry. `claim` drops expired members, then takes the lowest free slot up to the cap, and gives
 *   none while a live slot is numbered above the cap (it was lowered), so holders drain to the new cap.
 *   `renew` moves the expiry of members still live; `release` removes exactly the members given (a
 *   plain `ZREM`: a late release of a slot that expired and was taken again names another member).
 * - **settings** are a hash of JSON settings, written by compare and set (the decision, the same as
 *   the other drivers', is made on the setting read; a write finding it changed reads again), which in
 *   the same script updates the bucket and the cap and appends to the **audit** stream. **Waits** are
 *   a hash by unit, read (and pruned of ended waits) with the settings.
 *
 * Why not `@effect/experimental`'s `RateLimiter` over its Redis store (0.61), as the core's module doc
 * suggests: its token bucket takes the worker's clock as an argument; its fixed window grants in
 * batches of `limit` per window from a count whose meaning changes with the rate (a limit changed by
 * an operator would skew it), answers with no server time (a grant's time would come from the worker's
 * clock) and cannot record a wait in the same round trip; and its store opens its own ioredis client
 * from plain options (no client of the service's, no `Redacted` password).
 *
 * Every key starts with `prefix` and shares the hash tag `{limits}`, so on Redis Cluster the whole
 * limiter lives in one slot (its traffic is one call per chunk and resource). Outside the contract, as
 * for every driver: fairness between waiters. Limits and held slots live in Redis memory: a Redis
 * without persistence forgets operator settings on restart (the code's defaults come back on the next
 * worker start) and every held slot (a burst of chunks up to the cap may follow).
 *
 * @since 0.1.0
 */
import { Errors, ResourceLimiter } from "@chunkwise/core"
import { Config, type ConfigError, Duration, Effect, Layer, type Redacted, Schema, type Scope } from "effect"
import type { Redis } from "ioredis"
import * as Connection from "./internal/connection.js"
import * as Scripts from "./internal/scripts.js"

/** What a limiter is, on a client it is given. */
export interface LimiterOptions {
  /** Starts every key, so several applications share one Redis (default `chunkwise:`; no `{` or `}`). */
  readonly prefix?: string | undefined
  /** How long workers cache limits before reading them again: at most 5 s (default 5 s). */
  readonly cacheTtl?: Duration.DurationInput | undefined
}

/** A limiter with its own connection, opened from a URL. */
export interface Options extends LimiterOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS. */
  readonly url: Redacted.Redacted<string>
  /** The password, when it is not in the URL (it wins over the URL's). */
  readonly password?: Redacted.Redacted<string> | undefined
  /** The name the connection shows in `CLIENT LIST` (default `chunkwise`; no spaces). */
  readonly connectionName?: string | undefined
}

/** The defaults of the options. */
export const defaults = {
  prefix: "chunkwise:",
  cacheTtl: Duration.seconds(5),
  connectionName: Connection.defaultConnectionName
} as const

/** The keys of a limiter. Operators: these are what `redis-cli` inspects. */
export interface Keys {
  /** Hash: resource → its setting as JSON (limits, source, who changed it, when, why). */
  readonly settings: string
  /**
   * Hash: resource → its chunk token bucket, and `<resource>:items` → its item token bucket, each
   * `<rate> <burst> <tokens> <refilledAt ms>` (while the resource has that rate).
   */
  readonly buckets: string
  /** Hash: resource → its in-flight cap (resources with a cap). */
  readonly caps: string
  /** Hash: `["<runId>","<unitId>"]` → the unit's current wait as JSON. */
  readonly waits: string
  /** Stream of audited changes (at, actor, reason, resource, before, after). */
  readonly audit: string
  /** Sorted set of a resource's held slots, `<slot>:<permitId>` scored by expiry in ms. */
  readonly slots: (resource: string) => string
}

/** The keys of a limiter: `<prefix>{limits}:<what>`, one hash tag for Redis Cluster. */
export const keys = (options: Pick<LimiterOptions, "prefix"> = {}): Keys => {
  const base = `${options.prefix ?? defaults.prefix}{limits}`
  return {
    settings: `${base}:settings`,
    buckets: `${base}:buckets`,
    caps: `${base}:caps`,
    waits: `${base}:waits`,
    audit: `${base}:audit`,
    slots: (resource) => `${base}:slots:${resource}`
  }
}

/**
 * The options read from the environment: `CHUNKWISE_REDIS_URL` (required, redacted),
 * `CHUNKWISE_REDIS_PASSWORD` (redacted), `CHUNKWISE_REDIS_PREFIX`, `CHUNKWISE_REDIS_LIMITS_CACHE_TTL`
 * (a duration such as `5 seconds`) and `CHUNKWISE_REDIS_CONNECTION_NAME`, with the `defaults`. The
 * connection and prefix settings are those of `RedisQueue.config`, so one environment serves both.
 */
export const config: Config.Config<Options> = Config.all({
  ...Connection.config,
  prefix: Config.string(Connection.configName("PREFIX")).pipe(
    Config.withDefault(defaults.prefix),
    Config.withDescription("starts every key of the queue and the resource limiter")
  ),
  cacheTtl: Config.duration(Connection.configName("LIMITS_CACHE_TTL")).pipe(
    Config.withDefault(defaults.cacheTtl),
    Config.withDescription("how long workers cache resource limits (at most 5 seconds)")
  )
})

const invalid = (message: string) => new Errors.ConfigurationError({ message: `RedisResourceLimiter: ${message}` })

// ---- replies, checked on arrival: a Redis reply crosses a process

const Num = Schema.Union(Schema.Number, Schema.NumberFromString)
const StoredSetting = Schema.parseJson(Schema.Struct({
  resource: Schema.String,
  chunksPerSecond: Schema.NullOr(Schema.Number),
  burst: Schema.NullOr(Schema.Number),
  // Settings stored before item rates existed have neither.
  itemsPerSecond: Schema.optionalWith(Schema.NullOr(Schema.Number), { default: () => null }),
  itemsBurst: Schema.optionalWith(Schema.NullOr(Schema.Number), { default: () => null }),
  inFlight: Schema.NullOr(Schema.Number),
  source: Schema.Literal("default", "operator"),
  updatedAt: Schema.Number,
  updatedBy: Schema.String,
  reason: Schema.String
}))
const decodeSetting = Schema.decodeUnknownSync(StoredSetting)
const StoredWait = Schema.parseJson(Schema.Struct({
  runId: Schema.String,
  unitId: Schema.String,
  partitionKey: Schema.String,
  job: Schema.String,
  step: Schema.String,
  workerId: Schema.String,
  resource: Schema.String,
  kind: Schema.Literal("rate", "in-flight"),
  since: Schema.Number,
  until: Schema.Number
}))
const decodeRead = Schema.decodeUnknownSync(
  Schema.Tuple(Num, Schema.Array(Schema.String), Schema.Array(Schema.Number), Schema.Array(StoredWait))
)
const decodeReserved = Schema.decodeUnknownSync(Schema.NullOr(Schema.Tuple(Num, Num, Num)))
const decodeClaimed = Schema.decodeUnknownSync(Schema.Number)
const decodeRenewed = Schema.decodeUnknownSync(Schema.Array(Schema.String))
const decodeWritten = Schema.decodeUnknownSync(Schema.NullOr(Schema.String))
const LimitJson = Schema.parseJson(Schema.Struct({
  chunksPerSecond: Schema.optional(Schema.Number),
  burst: Schema.optional(Schema.Number),
  itemsPerSecond: Schema.optional(Schema.Number),
  itemsBurst: Schema.optional(Schema.Number),
  inFlight: Schema.optional(Schema.Number)
}))
const decodeChange = Schema.decodeUnknownSync(Schema.Struct({
  at: Schema.NumberFromString,
  actor: Schema.String,
  reason: Schema.String,
  resource: Schema.String,
  before: Schema.transform(Schema.String, Schema.NullOr(Schema.String), {
    strict: true,
    decode: (text) => (text === "" ? null : text),
    encode: (text) => text ?? ""
  }).pipe(Schema.compose(Schema.NullOr(LimitJson))),
  after: LimitJson
}))

/** An audit entry's fields as a change. */
const changeOf = (flat: ReadonlyArray<string>): ResourceLimiter.Change => {
  const fields: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!
  return decodeChange(fields)
}

/** Audit entries read per round trip. */
const historyPage = 500

type Setting = ResourceLimiter.Setting

const waitField = (holder: ResourceLimiter.Holder) => JSON.stringify([holder.runId, holder.unitId])

/** The wait's JSON without `since`, `until` and the closing brace: the script adds them on Redis time. */
const waitPrefix = (holder: ResourceLimiter.Holder, resource: string, kind: ResourceLimiter.Wait["kind"]) =>
  JSON.stringify({
    runId: holder.runId,
    unitId: holder.unitId,
    partitionKey: holder.partitionKey,
    job: holder.job,
    step: holder.step,
    workerId: holder.workerId,
    resource,
    kind
  }).slice(0, -1)

const member = (slot: ResourceLimiter.Slot) => `${slot.slot}:${slot.permitId}`

const groupByResource = (slots: ReadonlyArray<ResourceLimiter.Slot>) => {
  const groups = new Map<string, Array<ResourceLimiter.Slot>>()
  for (const slot of slots) {
    const group = groups.get(slot.resource)
    if (group === undefined) groups.set(slot.resource, [slot])
    else group.push(slot)
  }
  return groups
}

/**
 * Makes the Redis driver of the limiter (the `Store` of `ResourceLimiter.make`) on a client the service
 * already has. The client stays the caller's: the driver defines its scripts on it (named
 * `chunkwise_limiter_*`) and never quits it.
 */
export const makeStoreFromClient = (
  client: Redis,
  options: Pick<LimiterOptions, "prefix"> = {}
): Effect.Effect<ResourceLimiter.Store, Errors.ConfigurationError> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? defaults.prefix
    if (/[{}]/.test(prefix)) {
      return yield* invalid(`prefix must not contain { or } (got "${prefix}"): the limiter's keys share the hash tag`)
    }
    const k = keys({ prefix })
    const script = Scripts.define(client, Scripts.limiter)
    const call = <A>(operation: string, run: () => Promise<A>): Effect.Effect<A, Errors.StoreUnavailable> =>
      Effect.tryPromise({
        try: run,
        catch: (cause) =>
          new Errors.StoreUnavailable({
            operation: `resourceLimiter.${operation}`,
            message: `Redis ${operation} of resource limits failed: ${Connection.messageOf(cause)}`,
            cause: Connection.scrub(cause)
          })
      })

    /** Every setting, the live slots of `resources`, the current waits, and Redis time. */
    const read = (resources: ReadonlyArray<string>) =>
      call("read", () =>
        script("limiter-read", [k.settings, k.waits, ...resources.map(k.slots)], resources).then((reply) => {
          const [now, flat, inUse, waits] = decodeRead(reply)
          const settings = new Map<string, Setting>()
          for (let i = 0; i + 1 < flat.length; i += 2) {
            settings.set(flat[i]!, decodeSetting(flat[i + 1]))
          }
          const used = new Map(resources.map((resource, i) =>
            [resource, inUse[i]!] as const
          ))
          return { now, settings, used, waits }
        }))

    const current = (resource: string) =>
      call("read setting", () =>
        client.hget(k.settings, resource).then((stored) => ({
          stored: stored ?? "",
          setting: stored === null ? undefined : decodeSetting(stored)
        })))

    /**
     * Writes `limit` over the setting `stored` (as read) and audits it; `undefined` when another wrote
     * the resource since it was read.
     */
    const write = (
      resource: string,
      stored: string,
      before: ResourceLimiter.Limit | null,
      limit: ResourceLimiter.Limit,
      source: Setting["source"],
      by: ResourceLimiter.Actor
    ) => {
      const rate = limit.chunksPerSecond ?? null
      const itemRate = limit.itemsPerSecond ?? null
      const setting = JSON.stringify({
        resource,
        chunksPerSecond: rate,
        burst: limit.burst ?? null,
        itemsPerSecond: itemRate,
        itemsBurst: limit.itemsBurst ?? null,
        inFlight: limit.inFlight ?? null,
        source,
        updatedBy: by.actor,
        reason: by.reason
      }).slice(0, -1)
      return call("write setting", () =>
        script("limiter-write", [k.settings, k.buckets, k.caps, k.audit], [
          resource,
          stored,
          setting,
          rate === null ? "" : String(rate),
          rate === null ? "" : String(limit.burst ?? ResourceLimiter.defaultBurst(rate)),
          limit.inFlight === undefined ? "" : String(limit.inFlight),
          by.actor,
          by.reason,
          before === null ? "" : JSON.stringify(before),
          JSON.stringify(limit),
          itemRate === null ? "" : String(itemRate),
          itemRate === null ? "" : String(limit.itemsBurst ?? ResourceLimiter.defaultBurst(itemRate))
        ]).then((reply) => {
          const written = decodeWritten(reply)
          return written === null ? undefined : decodeSetting(written)
        }))
    }

    /** Declares one resource; reads again when another wrote it between the read and the write. */
    const declareOne = (
      resource: string,
      limit: ResourceLimiter.Limit,
      actor: string
    ): Effect.Effect<ResourceLimiter.Declared, Errors.StoreUnavailable> =>
      Effect.gen(function*() {
        const { setting, stored } = yield* current(resource)
        if (setting === undefined) {
          const by = { actor, reason: "first use: the default declared in code" }
          const created = yield* write(resource, stored, null, limit, "default", by)
          return created === undefined ? undefined : { resource, outcome: "created" as const, setting: created }
        }
        const before = ResourceLimiter.limitOf(setting)
        if (ResourceLimiter.sameLimit(before, limit)) return { resource, outcome: "unchanged" as const, setting }
        if (setting.source === "operator") return { resource, outcome: "operator" as const, setting }
        const by = { actor, reason: "the default declared in code changed" }
        const updated = yield* write(resource, stored, before, limit, "default", by)
        return updated === undefined ? undefined : { resource, outcome: "updated" as const, setting: updated }
      }).pipe(Effect.repeat({ until: (declared) => declared !== undefined }), Effect.map((declared) => declared!))

    const store: ResourceLimiter.Store = {
      kind: "redis",

      declare: (resources, actor) =>
        Effect.forEach(
          [...resources].sort((a, b) => (a.resource < b.resource ? -1 : 1)),
          ({ limit, resource }) => declareOne(resource, limit, actor)
        ),

      settings: Effect.gen(function*() {
        let resources = yield* call("settings", () => client.hkeys(k.settings))
        while (true) {
          const { now, settings, used, waits } = yield* read(resources)
          // A resource declared since its name was listed: read again with its slots.
          if ([...settings.keys()].some((resource) => !used.has(resource))) {
            resources = [...settings.keys()]
            continue
          }
          return [...settings.values()].sort((a, b) => (a.resource < b.resource ? -1 : 1)).map((setting) => ({
            ...setting,
            inUse: used.get(setting.resource) ?? 0,
            waiting: waits.filter((w) => w.resource === setting.resource && w.until > now).length
          }))
        }
      }),

      set: (resource, patch, actor, { create }) =>
        Effect.gen(function*() {
          const nameProblem = ResourceLimiter.invalidResourceName(resource)
          if (nameProblem !== undefined) return yield* new Errors.ConfigurationError({ message: nameProblem })
          while (true) {
            const { setting, stored } = yield* current(resource)
            if (setting === undefined && !create) {
              return yield* new Errors.NotFound({ what: "resource", id: resource })
            }
            const before = setting === undefined ? null : ResourceLimiter.limitOf(setting)
            const limit = ResourceLimiter.patched(before ?? {}, patch)
            const problem = ResourceLimiter.invalidLimit(
              limit,
              (key) => `limit of "${resource}"${key === "" ? "" : `: ${key}`}`
            )
            if (problem !== undefined) return yield* new Errors.ConfigurationError({ message: problem })
            const written = yield* write(resource, stored, before, limit, "operator", actor)
            if (written !== undefined) return written
          }
        }),

      history: ({ limit, resource }) =>
        Effect.gen(function*() {
          const out: Array<ResourceLimiter.Change> = []
          let end = "+"
          while (out.length < limit) {
            const page = yield* call("history", () =>
              client.xrevrange(k.audit, end, "-", "COUNT", historyPage).then((entries) =>
                entries.map(([id, flat]) => ({ id, change: changeOf(flat) }))
              ))
            for (const { change } of page) {
              if (out.length < limit && (resource === undefined || change.resource === resource)) {
                out.push(change)
              }
            }
            if (page.length < historyPage) {
              break
            }
            end = `(${page[page.length - 1]!.id}`
          }
          return out.reverse()
        }),

      reserve: (resource, holder, options) =>
        call("reserve", () =>
          script("limiter-reserve", [k.buckets, k.waits], [
            resource,
            waitField(holder),
            waitPrefix(holder, resource, "rate"),
            options?.items ?? 1
          ]).then((reply) => {
            const reserved = decodeReserved(reply)
            return reserved === null
              ? undefined
              : { waitMs: reserved[0], grantedAt: reserved[1], items: reserved[2] }
          })),

      claim: (resource, holder, { permitId, ttlMs }) =>
        call("claim", () =>
          script("limiter-claim", [k.caps, k.slots(resource), k.waits], [
            resource,
            permitId,
            Math.max(1, Math.round(ttlMs)),
            waitField(holder),
            waitPrefix(holder, resource, "in-flight"),
            ResourceLimiter.WAIT_VISIBLE_MS
          ]).then((reply): ResourceLimiter.ClaimResult => {
            const slot = decodeClaimed(reply)
            if (slot < 0) return { _tag: "Unlimited" }
            return slot === 0 ? { _tag: "Full" } : { _tag: "Held", slot: { resource, slot, permitId } }
          })),

      release: (slots) =>
        Effect.forEach(
          groupByResource(slots),
          ([resource, held]) => call("release", () => client.zrem(k.slots(resource), ...held.map(member))),
          { concurrency: "unbounded", discard: true }
        ),

      renew: (slots, ttlMs) =>
        Effect.forEach(
          groupByResource(slots),
          ([resource, held]) =>
            call("renew", () =>
              script("limiter-renew", [k.slots(resource)], [Math.max(1, Math.round(ttlMs)), ...held.map(member)])
                .then((reply) => {
                  const renewed = new Set(decodeRenewed(reply))
                  return held.filter((slot) =>
                    renewed.has(member(slot))
                  )
                })),
          { concurrency: "unbounded" }
        ).pipe(Effect.map((groups) => groups.flat())),

      waits: ({ runId }) =>
        Effect.map(read([]), ({ now, waits }) => ({
          now,
          waits: waits
            .filter((w) => w.until > now && (runId === undefined || w.runId === runId))
            .sort((a, b) => a.since - b.since || (a.unitId < b.unitId ? -1 : 1))
        }))
    }
    return store
  })

/** Makes the limiter on a client the service already has (it never quits it). */
export const makeFromClient = (
  client: Redis,
  options: LimiterOptions = {}
): Effect.Effect<ResourceLimiter.ResourceLimiterShape, Errors.ConfigurationError> =>
  Effect.flatMap(
    makeStoreFromClient(client, options),
    (store) => ResourceLimiter.make(store, { cacheTtl: options.cacheTtl })
  )

/** Makes the limiter with its own connection to `options.url`; it closes with the scope. */
export const make = (
  options: Options
): Effect.Effect<
  ResourceLimiter.ResourceLimiterShape,
  Errors.ConfigurationError | Errors.StoreUnavailable,
  Scope.Scope
> =>
  Effect.flatMap(
    Connection.connect(options, {
      invalid,
      unavailable: (message, cause) =>
        new Errors.StoreUnavailable({
          operation: "resourceLimiter.connect",
          message: `cannot connect to Redis for resource limits: ${message}`,
          cause
        })
    }),
    (client) => makeFromClient(client, options)
  )

/**
 * The Redis limiter as a layer, with its own connection to `options.url`: give it to every worker
 * whose steps name resources, and to the CLI's layer for `limits`.
 */
export const layer = (
  options: Options
): Layer.Layer<ResourceLimiter.ResourceLimiter, Errors.ConfigurationError | Errors.StoreUnavailable> =>
  Layer.scoped(ResourceLimiter.ResourceLimiter, make(options))

/**
 * The Redis limiter as a layer, its options read through `Config`: by default from the environment
 * (see `config`), or from the given config, e.g. `{ url: Config.redacted("REDIS_URL"), prefix: "billing:" }`.
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options> = config
): Layer.Layer<
  ResourceLimiter.ResourceLimiter,
  ConfigError.ConfigError | Errors.ConfigurationError | Errors.StoreUnavailable
> => Layer.scoped(ResourceLimiter.ResourceLimiter, Effect.flatMap(Config.unwrap(options), make))

/** The Redis limiter as a layer on a client the service already has (the limiter never quits it). */
export const layerFromClient = (
  client: Redis,
  options: LimiterOptions = {}
): Layer.Layer<ResourceLimiter.ResourceLimiter, Errors.ConfigurationError> =>
  Layer.effect(ResourceLimiter.ResourceLimiter, makeFromClient(client, options))
