/**
 * Broker trouble: the queue's connections are killed again and again while consumers work through a
 * backlog and producers keep sending. Every message must be processed and acked, none lost, and the
 * queue's keys must be empty afterwards. Only this file's connections are killed (by their connection
 * name), so other tests on the same Redis are not disturbed; the server itself is never restarted.
 */
import { RedisQueue } from "@chunkwise/adapters-redis"
import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { afterAll } from "vitest"
import { admin, cleanUp, uniquePrefix, url } from "./redis.js"

const prefix = uniquePrefix("faults")
const connectionName = `cwtest-faults-${process.pid}`

afterAll(() => cleanUp(prefix))

/** Kills every connection named `connectionName`; returns how many it killed. */
const killConnections = Effect.acquireUseRelease(
  Effect.promise(async () => {
    const client = admin()
    await client.connect()
    return client
  }),
  (client) =>
    Effect.promise(async () => {
      const list = await client.call("CLIENT", "LIST", "TYPE", "normal") as string
      const ids = list.split("\n").filter((line) => line.includes(` name=${connectionName} `)).map((line) =>
        /(?:^|\s)id=(\d+)/.exec(line)![1]!
      )
      let killed = 0
      for (const id of ids) killed += Number(await client.client("KILL", "ID", id))
      return killed
    }),
  (client) => Effect.sync(() => client.disconnect())
)

describe("RedisQueue under broker trouble", () => {
  it.live(
    "connections killed mid-stream: every message is processed and acked, none lost",
    () =>
      Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        const total = 2000
        const bodies = Array.from({ length: total }, (_, i) => `m${i}`)
        const processed = new Map<string, number>()

        // Half the backlog is there from the start; the other half is sent during the kills.
        yield* queue.send(bodies.slice(0, total / 2).map((body) => ({ body })))
        const producer = Effect.forEach(
          Array.from({ length: 10 }, (_, i) => bodies.slice(total / 2 + i * 100, total / 2 + (i + 1) * 100)),
          (batch) =>
            queue.send(batch.map((body) => ({ body }))).pipe(
              // A send that failed may still have reached Redis: resending can only duplicate.
              Effect.retry({ times: 50 }),
              Effect.zipLeft(Effect.sleep(50))
            ),
          { discard: true }
        )
        const consumer = Effect.gen(function*() {
          while (processed.size < total) {
            const got = yield* queue.receive({ max: 10, visibilityMs: 2000, waitMs: 200 }).pipe(
              Effect.catchTag("QueueUnavailable", () => Effect.as(Effect.sleep(50), []))
            )
            yield* Effect.forEach(got, (delivery) =>
              Effect.gen(function*() {
                yield* Effect.sleep(3)
                processed.set(delivery.body, (processed.get(delivery.body) ?? 0) + 1)
                // A failed ack leaves the message in flight: it comes back after its visibility.
                yield* queue.ack([delivery.receipt]).pipe(
                  Effect.catchTag("QueueUnavailable", () => Effect.void)
                )
              }), { discard: true })
          }
        })
        let kills = 0
        const killer = yield* Effect.fork(Effect.forever(
          Effect.zipRight(
            Effect.sleep(100),
            Effect.tap(killConnections, (killed) => Effect.sync(() => (kills += killed)))
          )
        ))
        yield* Effect.all([producer, ...Array.from({ length: 8 }, () => consumer)], { concurrency: "unbounded" })
        yield* Fiber.interrupt(killer)

        expect(kills).toBeGreaterThanOrEqual(10)
        expect([...processed.keys()].sort()).toEqual([...bodies].sort())

        // Deliveries in flight when a connection died come back after their visibility; drain them.
        let depth = yield* queue.depth
        for (let i = 0; i < 50 && depth.ready + depth.inFlight + depth.delayed > 0; i++) {
          const got = yield* queue.receive({ max: 100, visibilityMs: 2000, waitMs: 500 })
          for (const delivery of got) expect(bodies).toContain(delivery.body)
          yield* queue.ack(got.map((d) => d.receipt))
          depth = yield* queue.depth
        }
        expect(depth).toMatchObject({ ready: 0, inFlight: 0, delayed: 0, dead: 0 })

        // And in Redis itself: nothing left in the stream, its pending list or the delayed set.
        const keys = RedisQueue.keys({ prefix, queue: "killed" })
        const client = admin()
        yield* Effect.promise(() => client.connect())
        const [length, pending, delayed, dead] = yield* Effect.promise(() =>
          Promise.all([
            client.xlen(keys.stream),
            client.xpending(keys.stream, "chunkwise"),
            client.zcard(keys.delayed),
            client.xlen(keys.dead)
          ])
        )
        client.disconnect()
        expect({ length, pending: (pending as [number])[0], delayed, dead }).toEqual({
          length: 0,
          pending: 0,
          delayed: 0,
          dead: 0
        })
      }).pipe(
        Effect.provide(Layer.fresh(RedisQueue.layer({ url, prefix, queue: "killed", connectionName }))),
        Effect.scoped
      ),
    180_000
  )
})
