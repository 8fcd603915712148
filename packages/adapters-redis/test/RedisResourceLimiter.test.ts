/**
 * The resource limiter on real Redis at 127.0.0.1:6379: the limiter conformance suite with two drivers
 * on separate connections ("two workers"), then what is the Redis driver's own: its keys stay under
 * its prefix, a chunk's permits through the service on two connections, Redis time, and bad options.
 * Each test has a key prefix of its own, deleted afterwards; a missing Redis fails the tests.
 */
import { RedisResourceLimiter } from "@chunkwise/adapters-redis"
import { ResourceLimiter } from "@chunkwise/core"
import { ResourceLimiterConformance } from "@chunkwise/testing"
import { describe, expect, it } from "@effect/vitest"
import { Config, ConfigProvider, Effect, Fiber, Layer, Redacted } from "effect"
import { afterAll } from "vitest"
import { admin, cleanUp, uniquePrefix, url } from "./redis.js"

const filePrefix = uniquePrefix("limiter")
let n = 0

afterAll(() => cleanUp(filePrefix))

/** A fresh key prefix, whose keys are deleted when the scope closes. */
const freshPrefix = Effect.acquireRelease(
  Effect.sync(() => `${filePrefix}t${(n += 1)}:`),
  (prefix) => Effect.promise(() => cleanUp(prefix))
)

/** A client of the test's own, connected (fails when Redis is missing), quit with the scope. */
const client = Effect.acquireRelease(
  Effect.tryPromise(async () => {
    const redis = admin()
    await redis.connect()
    return redis
  }),
  (redis) => Effect.promise(() => redis.quit().catch(() => "closed"))
)

ResourceLimiterConformance.suite("RedisResourceLimiter", {
  make: Effect.map(
    freshPrefix,
    (prefix) => Effect.flatMap(client, (redis) => RedisResourceLimiter.makeStoreFromClient(redis, { prefix }))
  )
})

const holder = ResourceLimiterConformance.holder

describe("RedisResourceLimiter", () => {
  it.live("every key stays under the prefix and in one hash slot; the limiter names them", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* freshPrefix
      const redis = yield* client
      const store = yield* RedisResourceLimiter.makeStoreFromClient(redis, { prefix })
      yield* store.declare([{ resource: "primary-db", limit: { chunksPerSecond: 1, burst: 1, inFlight: 1 } }], "w")
      yield* store.reserve("primary-db", holder("u1"))
      yield* store.reserve("primary-db", holder("u2"))
      yield* store.claim("primary-db", holder("u1"), { ttlMs: 10_000, permitId: "p1" })
      yield* store.claim("primary-db", holder("u2"), { ttlMs: 10_000, permitId: "p2" })
      const k = RedisResourceLimiter.keys({ prefix })
      const found = (yield* Effect.promise(() => redis.keys(`${prefix}*`))).sort()
      expect(found).toEqual([k.audit, k.buckets, k.caps, k.settings, k.slots("primary-db"), k.waits].sort())
      expect(new Set(found.map((key) => /\{(.*)\}/.exec(key)![1]))).toEqual(new Set(["limits"]))
      // What an operator sees with redis-cli: u1 holds the slot; u2 waited for its token, now for the slot.
      expect(yield* Effect.promise(() => redis.zrange(k.slots("primary-db"), 0, -1))).toEqual(["1:p1"])
      expect(Object.keys(yield* Effect.promise(() => redis.hgetall(k.waits)))).toEqual([
        JSON.stringify(["run_1", "u2"])
      ])
    })))

  it.live("rates and expiry follow Redis time, not the worker's clock", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* freshPrefix
      const redis = yield* client
      const store = yield* RedisResourceLimiter.makeStoreFromClient(redis, { prefix })
      yield* store.declare([{ resource: "primary-db", limit: { chunksPerSecond: 2, burst: 1 } }], "w")
      const [seconds, micros] = yield* Effect.promise(() => redis.time())
      const before = Number(seconds) * 1000 + Number(micros) / 1000
      const first = yield* store.reserve("primary-db", holder("u1"))
      const second = yield* store.reserve("primary-db", holder("u2"))
      expect(first!.waitMs).toBe(0)
      expect(first!.grantedAt).toBeGreaterThanOrEqual(before)
      // The second token is due half a second after the first, on the same clock.
      expect(second!.grantedAt - first!.grantedAt).toBeCloseTo(500, 0)
      const { now } = yield* store.waits({})
      expect(now).toBeGreaterThanOrEqual(first!.grantedAt)
      expect(now - first!.grantedAt).toBeLessThan(5000)
    })))

  it.live("the service on two connections: an in-flight cap of 2 holds for acquire, and a rate waits", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* freshPrefix
      const options = { url, prefix, cacheTtl: "1 second" } as const
      // Two workers, each with its own connection (layer), and an operator on a third.
      const workers = yield* Effect.all([RedisResourceLimiter.make(options), RedisResourceLimiter.make(options)])
      const operatorCtx = yield* Layer.build(RedisResourceLimiter.layer(options))
      const operatorLimiter = yield* Effect.provide(ResourceLimiter.ResourceLimiter, operatorCtx)
      yield* operatorLimiter.declare([{ resource: "billing-api", limit: { inFlight: 2, chunksPerSecond: 100 } }], "w")
      let running = 0
      let most = 0
      const grants: Array<number> = []
      const fibers = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, i) => i),
        (i) =>
          Effect.fork(Effect.gen(function*() {
            const limiter = workers[i % 2]!
            for (let round = 0; round < 3; round++) {
              const permits = yield* limiter.acquire(["billing-api"], holder(`u${i}`), 10_000)
              grants.push(...permits.grants.map((g) => g.grantedAt))
              running += 1
              most = Math.max(most, running)
              yield* Effect.sleep("10 millis")
              running -= 1
              yield* limiter.release(permits)
            }
          }))
      )
      yield* Effect.forEach(fibers, Fiber.join)
      expect(most).toBe(2)
      expect(grants).toHaveLength(24)
      expect(ResourceLimiterConformance.worstExcess(grants, 100, 100)).toBeLessThanOrEqual(1e-3)
      const [usage] = yield* operatorLimiter.settings
      expect([usage!.inUse, usage!.waiting]).toEqual([0, 0])
    })))

  it.live("a client the service owns stays open; options are checked with a clear message", () =>
    Effect.scoped(Effect.gen(function*() {
      const redis = yield* client
      const prefix = yield* freshPrefix
      yield* Effect.scoped(Layer.build(RedisResourceLimiter.layerFromClient(redis, { prefix })))
      expect(redis.status).toBe("ready")
      const braces = yield* Effect.flip(RedisResourceLimiter.makeFromClient(redis, { prefix: "a{b}:" }))
      expect(braces.message).toContain(`prefix must not contain { or } (got "a{b}:")`)
      const ttl = yield* Effect.flip(RedisResourceLimiter.makeFromClient(redis, { prefix, cacheTtl: "1 minute" }))
      expect(ttl.message).toContain("cacheTtl must be a duration above 0 and at most 5 seconds")
      const badUrl = yield* Effect.flip(
        RedisResourceLimiter.make({ url: Redacted.make("http://user:secret@127.0.0.1:6379"), prefix })
      )
      expect(badUrl.message).toContain(`url has the scheme "http:"`)
      expect(badUrl.message).not.toContain("secret")
    })))

  it.live("an unreachable Redis is StoreUnavailable, without the password", () =>
    Effect.scoped(Effect.gen(function*() {
      const error = yield* Effect.flip(
        RedisResourceLimiter.make({
          url: Redacted.make("redis://127.0.0.1:1"),
          password: Redacted.make("hunter2"),
          prefix: filePrefix
        })
      )
      expect(error._tag).toBe("StoreUnavailable")
      expect(error.message).toContain("cannot connect to Redis for resource limits")
      expect(JSON.stringify(error)).not.toContain("hunter2")
    })))

  it.live("layerConfig reads the environment's CHUNKWISE_REDIS_* settings", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = yield* freshPrefix
      const provider = ConfigProvider.fromMap(
        new Map([
          ["CHUNKWISE_REDIS_URL", Redacted.value(url)],
          ["CHUNKWISE_REDIS_PREFIX", prefix],
          ["CHUNKWISE_REDIS_LIMITS_CACHE_TTL", "2 seconds"]
        ])
      )
      const context = yield* Layer.build(
        RedisResourceLimiter.layerConfig().pipe(Layer.provide(Layer.setConfigProvider(provider)))
      )
      const limiter = yield* Effect.provide(ResourceLimiter.ResourceLimiter, context)
      expect(limiter.kind).toBe("redis")
      yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 1 } }], "w")
      const redis = yield* client
      expect(yield* Effect.promise(() => redis.hkeys(RedisResourceLimiter.keys({ prefix }).settings))).toEqual([
        "primary-db"
      ])
      const missing = yield* Effect.flip(
        Effect.scoped(Layer.build(
          RedisResourceLimiter.layerConfig({ url: Config.redacted("NOT_SET_ANYWHERE") }).pipe(
            Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map())))
          )
        ))
      )
      expect(String(missing)).toContain("NOT_SET_ANYWHERE")
    })))
})
