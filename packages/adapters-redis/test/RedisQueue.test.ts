/**
 * What the conformance suite does not cover: key prefixes and hash tags, a client the service owns,
 * stale and malformed receipts on every operation, acks of many receipts and many acks at once,
 * reclaiming with a short and a long pending list, receive counts across releases, depth of due and
 * expired messages, recovery when the queue's keys vanish, prefetched messages given back (at close,
 * or stale) uncounted, and configuration errors. Real Redis at 127.0.0.1:6379, one key prefix for this file.
 */
import { RedisQueue } from "@chunkwise/adapters-redis"
import type { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Fiber, Layer, Redacted } from "effect"
import { Redis } from "ioredis"
import { inspect } from "node:util"
import { afterAll } from "vitest"
import { admin, cleanUp, uniquePrefix, url } from "./redis.js"

const prefix = uniquePrefix("queue")
let n = 0
/** A fresh queue name per test. */
const fresh = () => `q${n++}`

afterAll(() => cleanUp(prefix))

const withAdmin = <A>(f: (client: Redis) => Promise<A>) =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const client = admin()
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => f(client)),
    (client) => Effect.sync(() => client.disconnect())
  )

const keysUnder = (pattern: string) =>
  withAdmin(async (client) => {
    const found: Array<string> = []
    let cursor = "0"
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", pattern, "COUNT", 1000)
      cursor = next
      found.push(...keys)
    } while (cursor !== "0")
    return found.sort()
  })

const connectionsNamed = (name: string) =>
  withAdmin(async (client) =>
    (await client.call("CLIENT", "LIST", "TYPE", "normal") as string).split("\n").filter((line) =>
      line.includes(` name=${name} `)
    ).length
  )

const receiveOne = (queue: QueueAdapter.QueueAdapterShape, visibilityMs = 60_000) =>
  Effect.map(queue.receive({ max: 1, visibilityMs, waitMs: 2000 }), (got) => {
    expect(got).toHaveLength(1)
    return got[0]!
  })

const idle = (queue: QueueAdapter.QueueAdapterShape) =>
  Effect.map(queue.depth, (depth) => depth.ready + depth.inFlight + depth.delayed)

describe("RedisQueue", () => {
  it.scopedLive("queues of one name under two prefixes never see each other's messages", () =>
    Effect.gen(function*() {
      const queue = fresh()
      const a = yield* RedisQueue.make({ url, prefix: `${prefix}a:`, queue })
      const b = yield* RedisQueue.make({ url, prefix: `${prefix}b:`, queue })
      yield* a.send([{ body: "for a" }])
      expect(yield* b.receive({ max: 10, visibilityMs: 1000, waitMs: 300 })).toEqual([])
      expect(yield* b.depth).toMatchObject({ ready: 0, inFlight: 0, delayed: 0, dead: 0 })
      const delivery = yield* receiveOne(a)
      expect(delivery.body).toBe("for a")
      yield* a.ack([delivery.receipt])
      // Every key lives under its own prefix.
      for (const key of yield* keysUnder(`${prefix}a:*`)) expect(key.startsWith(`${prefix}a:{${queue}}:`)).toBe(true)
      for (const key of yield* keysUnder(`${prefix}b:*`)) expect(key.startsWith(`${prefix}b:{${queue}}:`)).toBe(true)
    }))

  it("every key of a queue starts with the prefix and carries the queue's hash tag (one Cluster slot)", () => {
    const keys = Object.values(RedisQueue.keys({ prefix: "app1:", queue: "billing" }))
    expect(keys).toHaveLength(4)
    for (const key of keys) {
      expect(key.startsWith("app1:")).toBe(true)
      // Redis Cluster hashes the first {...} of a key.
      expect(/\{([^}]*)\}/.exec(key)![1]).toBe("billing")
    }
  })

  it.live("layerFromClient uses the service's client, leaves it open, and closes only its own connection", () =>
    Effect.gen(function*() {
      const connectionName = `cwtest-own-${process.pid}`
      const client = new Redis(Redacted.value(url), { connectionName })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.quit()))
      const queueName = fresh()
      yield* Effect.gen(function*() {
        const queue = yield* RedisQueue.makeFromClient(client, { prefix, queue: queueName })
        // A receive that waits opens the blocking connection, a duplicate of the client.
        expect(yield* queue.receive({ max: 1, visibilityMs: 1000, waitMs: 200 })).toEqual([])
        yield* queue.send([{ body: "mine" }])
        const delivery = yield* receiveOne(queue)
        yield* queue.ack([delivery.receipt])
        expect(yield* connectionsNamed(connectionName)).toBe(2)
      }).pipe(Effect.scoped)
      expect(client.status).toBe("ready")
      expect(yield* Effect.promise(() => client.ping())).toBe("PONG")
      expect(yield* connectionsNamed(connectionName)).toBe(1)
      // The layer, too, gives the client back open.
      yield* Effect.provide(Effect.void, RedisQueue.layerFromClient(client, { prefix, queue: queueName }))
      expect(yield* Effect.promise(() => client.ping())).toBe("PONG")
    }).pipe(Effect.scoped))

  it.scopedLive("release, extend and deadLetter with a stale receipt do nothing", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh() })
      yield* queue.send([{ body: "twice" }])
      const first = yield* receiveOne(queue, 200)
      yield* Effect.sleep(500)
      const second = yield* receiveOne(queue, 60_000)
      expect(second.receiveCount).toBe(2)
      yield* queue.release(first.receipt, 0)
      yield* queue.extend([first.receipt], 1)
      yield* queue.deadLetter(first.receipt, "stale")
      yield* queue.ack([first.receipt])
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 1, delayed: 0, dead: 0 })
      // The current delivery is untouched: still hidden, then acked for good.
      expect(yield* queue.receive({ max: 1, visibilityMs: 1000, waitMs: 0 })).toEqual([])
      yield* queue.ack([second.receipt])
      expect(yield* idle(queue)).toBe(0)
    }))

  it.scopedLive("visibility applies to every message of a batch: receive and extend", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh(), prefetch: false })
      const bodies = ["a", "b", "c", "d", "e"]
      yield* queue.send(bodies.map((body) => ({ body })))
      const batch = yield* queue.receive({ max: 5, visibilityMs: 300, waitMs: 1000 })
      expect(batch.map((d) => d.body).sort()).toEqual(bodies)
      const [extended, expiring] = [batch.slice(0, 3), batch.slice(3)]
      yield* queue.extend(extended.map((d) => d.receipt), 60_000)
      yield* Effect.sleep(700)
      const again = yield* queue.receive({ max: 10, visibilityMs: 60_000, waitMs: 1000 })
      expect(again.map((d) => [d.body, d.receiveCount]).sort()).toEqual(expiring.map((d) => [d.body, 2]).sort())
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 5 })
      // Those received again are hidden for their new visibility, all of them.
      yield* Effect.sleep(400)
      expect(yield* queue.receive({ max: 10, visibilityMs: 1000, waitMs: 0 })).toEqual([])
    }))

  it.scopedLive("a waiting receive wakes on a send, and when a delayed message falls due", () =>
    Effect.gen(function*() {
      // Blocking waits of 30 s and receives waiting 60 s: only a wake-up returns them within the bound.
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh(), blockInterval: "30 seconds" })
      const waiting = (body: string) =>
        queue.receive({ max: 1, visibilityMs: 60_000, waitMs: 60_000 }).pipe(
          Effect.timeoutFail({ duration: "15 seconds", onTimeout: () => `no wake-up for "${body}"` }),
          Effect.map((got) => got.map((d) => d.body))
        )
      const sent = yield* Effect.fork(waiting("sent"))
      yield* Effect.sleep(300)
      yield* queue.send([{ body: "sent" }])
      expect(yield* Fiber.join(sent)).toEqual(["sent"])

      yield* queue.send([{ body: "due" }], { delayMs: 500 })
      expect(yield* waiting("due")).toEqual(["due"])
    }))

  it.scopedLive("malformed receipts are stale, not errors", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh() })
      yield* queue.send([{ body: "kept" }])
      yield* receiveOne(queue)
      yield* queue.ack(["nonsense", "1-0#x", "#1", ""])
      yield* queue.release("0-1#1", 0)
      yield* queue.extend(["not a receipt"], 1000)
      yield* queue.deadLetter("1-1#1", "no such delivery")
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 1, dead: 0 })
    }))

  it.scopedLive("one ack of several receipts acks the current ones, among other deliveries and stale receipts", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh(), prefetch: false })
      yield* queue.send(["a", "b", "c", "d", "e"].map((body) => ({ body })))
      const got = yield* queue.receive({ max: 5, visibilityMs: 60_000, waitMs: 1000 })
      expect(got.map((d) => d.body)).toEqual(["a", "b", "c", "d", "e"])
      const [a, b, c, d, e] = got as [QueueAdapter.Delivery, ...Array<QueueAdapter.Delivery>]
      // c is delivered again: its first receipt is stale.
      yield* queue.release(c!.receipt, 0)
      const again = yield* receiveOne(queue)
      expect([again.body, again.receiveCount]).toEqual(["c", 2])
      // Out of order, with a stale and a malformed receipt, around deliveries that are not acked (b, d).
      yield* queue.ack([e!.receipt, c!.receipt, "nonsense", a!.receipt, e!.receipt])
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 3 })
      yield* queue.ack([d!.receipt, again.receipt, b!.receipt])
      expect(yield* idle(queue)).toBe(0)
    }))

  it.scopedLive("many acks at once all land, in batches that start before the turn ends, and fetch the next", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh() })
      yield* queue.send(Array.from({ length: 150 }, (_, i) => ({ body: String(i) })))
      const first = yield* queue.receive({ max: 100, visibilityMs: 60_000, waitMs: 1000 })
      expect(first).toHaveLength(100)
      // Every handler acks its own message, all in one turn of the event loop.
      yield* Effect.forEach(first, (d) => queue.ack([d.receipt]), { concurrency: "unbounded", discard: true })
      // The acks fetched the remaining 50 for this consumer's next receive.
      const rest = yield* queue.receive({ max: 100, visibilityMs: 60_000, waitMs: 0 })
      expect(rest.map((d) => Number(d.body)).sort((x, y) => x - y)).toEqual(
        Array.from({ length: 50 }, (_, i) => 100 + i)
      )
      yield* queue.ack(rest.map((d) => d.receipt))
      expect(yield* idle(queue)).toBe(0)
    }))

  it.scopedLive("an expired delivery comes back whether the pending list is short or long for the receive", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh(), prefetch: false })
      yield* queue.send(Array.from({ length: 30 }, (_, i) => ({ body: String(i) })))
      const held = yield* queue.receive({ max: 28, visibilityMs: 60_000, waitMs: 1000 })
      const short = yield* queue.receive({ max: 2, visibilityMs: 200, waitMs: 1000 })
      expect([held.length, short.length]).toEqual([28, 2])
      yield* Effect.sleep(500)
      // 30 pending: more than a receive of 1 scans (XAUTOCLAIM), within what a receive of 5 does.
      const one = yield* queue.receive({ max: 1, visibilityMs: 60_000, waitMs: 0 })
      const other = yield* queue.receive({ max: 5, visibilityMs: 60_000, waitMs: 0 })
      expect([...one, ...other].map((d) => [d.body, d.receiveCount]).sort()).toEqual(
        short.map((d) => [d.body, 2]).sort()
      )
      yield* queue.ack([...held, ...one, ...other].map((d) => d.receipt))
      expect(yield* idle(queue)).toBe(0)
    }))

  it.scopedLive("a released message keeps its receive count, so endless releases still dead-letter", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh(), maxReceives: 2, prefetch: false })
      yield* queue.send([{ body: "bounced" }])
      const first = yield* receiveOne(queue)
      yield* queue.release(first.receipt, 0)
      const second = yield* receiveOne(queue)
      expect([second.messageId, second.receiveCount]).toEqual([first.messageId, 2])
      yield* queue.release(second.receipt, 100)
      yield* Effect.sleep(300)
      expect(yield* queue.receive({ max: 1, visibilityMs: 1000, waitMs: 0 })).toEqual([])
      const [dead] = yield* queue.deadLetters({ limit: 10 })
      expect(dead).toMatchObject({ messageId: first.messageId, body: "bounced", receiveCount: 2 })
      expect(dead!.reason).toMatch(/received 2 times/)
    }))

  it.scopedLive("depth counts due delayed and expired in-flight messages as ready, aged from when they became ready", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh() })
      yield* queue.send([{ body: "due soon" }], { delayMs: 100 })
      expect(yield* queue.depth).toMatchObject({ ready: 0, delayed: 1, oldestReadyAgeMs: null })
      yield* Effect.sleep(500)
      const due = yield* queue.depth
      expect(due).toMatchObject({ ready: 1, delayed: 0, inFlight: 0 })
      expect(due.oldestReadyAgeMs).toBeGreaterThanOrEqual(300)
      expect(due.oldestReadyAgeMs).toBeLessThan(5000)

      const delivery = yield* receiveOne(queue, 200)
      expect(delivery.body).toBe("due soon")
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 1, oldestReadyAgeMs: null })
      yield* Effect.sleep(500)
      const expired = yield* queue.depth
      expect(expired).toMatchObject({ ready: 1, inFlight: 0 })
      expect(expired.oldestReadyAgeMs).toBeGreaterThanOrEqual(200)
      expect(expired.oldestReadyAgeMs).toBeLessThan(5000)
    }))

  it.scopedLive("a queue whose keys vanished (a Redis restarted without persistence) works on", () =>
    Effect.gen(function*() {
      const name = fresh()
      const queue = yield* RedisQueue.make({ url, prefix, queue: name })
      yield* queue.send([{ body: "lost" }])
      const lost = yield* receiveOne(queue)
      yield* withAdmin((client) => client.del(...Object.values(RedisQueue.keys({ prefix, queue: name }))))
      yield* queue.ack([lost.receipt])
      yield* queue.send([{ body: "after" }])
      const after = yield* receiveOne(queue)
      expect(after.body).toBe("after")
      yield* queue.ack([after.receipt])
      expect(yield* queue.depth).toMatchObject({ ready: 0, inFlight: 0, delayed: 0, dead: 0 })
    }))

  it.live("a prefetched message no receive took is given back at close as it was: no handler received it", () =>
    Effect.gen(function*() {
      const name = fresh()
      yield* Effect.gen(function*() {
        const queue = yield* RedisQueue.make({ url, prefix, queue: name })
        yield* queue.send([{ body: "1" }, { body: "2" }, { body: "3" }])
        const first = yield* receiveOne(queue)
        // The ack of a receiving consumer fetches the next message for its next receive.
        yield* queue.ack([first.receipt])
        expect(yield* queue.depth).toMatchObject({ ready: 1, inFlight: 1 })
      }).pipe(Effect.scoped)
      const queue = yield* RedisQueue.make({ url, prefix, queue: name })
      expect(yield* queue.depth).toMatchObject({ ready: 2, inFlight: 0 })
      const got = yield* queue.receive({ max: 2, visibilityMs: 60_000, waitMs: 1000 })
      expect(new Map(got.map((d) => [d.body, d.receiveCount]))).toEqual(new Map([["2", 1], ["3", 1]]))
    }).pipe(Effect.scoped))

  it.live("a prefetched message that went stale unreceived is not counted, so it is not dead-lettered", () =>
    Effect.gen(function*() {
      const queue = yield* RedisQueue.make({ url, prefix, queue: fresh(), maxReceives: 1 })
      yield* queue.send([{ body: "a" }, { body: "b" }])
      const a = yield* receiveOne(queue)
      yield* queue.ack([a.receipt]) // fetches "b" for the next receive
      yield* Effect.sleep(1200) // every slot busy: "b" goes stale in the prefetch buffer
      const got = yield* queue.receive({ max: 1, visibilityMs: 60_000, waitMs: 1000 })
      expect(got.map((d) => [d.body, d.receiveCount])).toEqual([["b", 1]])
      expect(yield* queue.deadLetters({ limit: 10 })).toEqual([])
    }).pipe(Effect.scoped))
})

describe("RedisQueue configuration", () => {
  const buildError = <E>(layer: Layer.Layer<QueueAdapter.QueueAdapter, E>) =>
    Effect.flip(Effect.scoped(Layer.build(layer)))
  const fromEnv = (env: Record<string, string>) => ConfigProvider.fromMap(new Map(Object.entries(env)))

  it.live("a URL that is not a Redis URL is refused, naming the setting and the fix", () =>
    Effect.gen(function*() {
      const error = yield* buildError(RedisQueue.layer({ url: Redacted.make("http://127.0.0.1:6379") }))
      expect(error._tag).toBe("ConfigurationError")
      expect(error.message).toMatch(/^RedisQueue: url has the scheme "http:".*redis:\/\//)
    }))

  it.live("the refusal never repeats the URL, which may hold a password", () =>
    Effect.gen(function*() {
      const error = yield* buildError(RedisQueue.layer({ url: Redacted.make("redis://:s3cret@127.0.0.1:6379/nodb") }))
      expect(error.message).toMatch(/url has the path "\/nodb"/)
      expect(inspect(error, { depth: 10 })).not.toMatch(/s3cret/)
    }))

  it.live("layerConfig names the environment variable that is missing or wrong", () =>
    Effect.gen(function*() {
      const missing = yield* buildError(RedisQueue.layerConfig()).pipe(Effect.withConfigProvider(fromEnv({})))
      expect(String(missing)).toMatch(/CHUNKWISE_REDIS_URL/)
      const wrong = yield* buildError(RedisQueue.layerConfig()).pipe(
        Effect.withConfigProvider(fromEnv({ CHUNKWISE_REDIS_URL: "localhost:6379" }))
      )
      expect(String(wrong)).toMatch(/CHUNKWISE_REDIS_URL has the scheme "localhost:"/)
      const notANumber = yield* buildError(RedisQueue.layerConfig()).pipe(
        Effect.withConfigProvider(
          fromEnv({ CHUNKWISE_REDIS_URL: Redacted.value(url), CHUNKWISE_REDIS_MAX_RECEIVES: "many" })
        )
      )
      expect(String(notANumber)).toMatch(/CHUNKWISE_REDIS_MAX_RECEIVES/)
    }))

  it.live("layerConfig reads the environment", () =>
    Effect.gen(function*() {
      const name = fresh()
      const env = fromEnv({
        CHUNKWISE_REDIS_URL: Redacted.value(url),
        CHUNKWISE_REDIS_PREFIX: prefix,
        CHUNKWISE_REDIS_QUEUE: name
      })
      yield* Effect.scoped(Layer.build(RedisQueue.layerConfig())).pipe(Effect.withConfigProvider(env))
      // The queue made its consumer group under the configured prefix and queue name.
      expect(yield* keysUnder(`${prefix}{${name}}:*`)).toEqual([RedisQueue.keys({ prefix, queue: name }).stream])
    }))

  it.live("bad tunables are refused, naming the option", () =>
    Effect.gen(function*() {
      const maxReceives = yield* buildError(RedisQueue.layer({ url, maxReceives: 0 }))
      expect(maxReceives.message).toMatch(/maxReceives must be a positive integer \(got 0\)/)
      const braces = yield* buildError(RedisQueue.layer({ url, prefix: "app{1}:" }))
      expect(braces.message).toMatch(/prefix must not contain \{ or \}/)
      const spaces = yield* buildError(RedisQueue.layer({ url, connectionName: "my worker" }))
      expect(spaces.message).toMatch(/connectionName/)
    }))

  it.live("wrong credentials fail as QueueUnavailable, and the error carries no password", () =>
    Effect.gen(function*() {
      const error = yield* buildError(
        RedisQueue.layer({ url: Redacted.make("redis://nobody:s3cret@127.0.0.1:6379"), queue: fresh() })
      )
      expect(error._tag).toBe("QueueUnavailable")
      expect(error.message).toMatch(/WRONGPASS|NOAUTH|invalid/i)
      expect(inspect(error, { depth: 10 })).not.toMatch(/s3cret/)
      const password = yield* buildError(
        RedisQueue.layer({ url: Redacted.make("redis://nobody@127.0.0.1:6379"), password: Redacted.make("s3cret") })
      )
      expect(inspect(password, { depth: 10 })).not.toMatch(/s3cret/)
    }))

  it.live("a queue key that holds something else fails at start-up as QueueUnavailable", () =>
    Effect.gen(function*() {
      const name = fresh()
      yield* withAdmin((client) => client.set(RedisQueue.keys({ prefix, queue: name }).stream, "not a stream"))
      const error = yield* buildError(RedisQueue.layer({ url, prefix, queue: name }))
      expect(error._tag).toBe("QueueUnavailable")
      expect(error.message).toMatch(/WRONGTYPE/)
    }))

  it.live("an unreachable Redis fails at start-up as QueueUnavailable", () =>
    Effect.gen(function*() {
      const error = yield* buildError(RedisQueue.layer({ url: Redacted.make("redis://127.0.0.1:1") }))
      expect(error._tag).toBe("QueueUnavailable")
      expect(error.message).toMatch(/cannot connect to Redis.*ECONNREFUSED/)
    }))
})
