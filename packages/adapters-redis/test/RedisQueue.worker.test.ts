/**
 * The queue under the real consumer: a chunkwise Worker runs a small job (8 partitions x 2 steps) with
 * its messages on Redis and the in-memory store; every chunk commits once, and the queue ends empty.
 */
import { RedisQueue } from "@chunkwise/adapters-redis"
import { Job, MemoryDatabase, QueueAdapter, Runner, StateStore, Step, Worker } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { afterAll } from "vitest"
import { cleanUp, uniquePrefix, url } from "./redis.js"

const prefix = uniquePrefix("worker")

afterAll(() => cleanUp(prefix))

const partitions = Array.from({ length: 8 }, (_, i) => `p${i}`)

const countdown = Job.make({
  name: "countdown",
  params: Schema.Struct({ from: Schema.Number }),
  partitions: () => partitions,
  steps: (step) => [
    step.chunked("count", {
      cursor: Schema.Struct({ n: Schema.Number }),
      start: { n: 0 },
      chunkSize: 10,
      transaction: "chunk",
      process: ({ chunkSize, cursor, params, partition }) =>
        Effect.gen(function*() {
          const db = yield* MemoryDatabase.MemoryDatabase
          const end = Math.min(cursor.n + chunkSize, params.from)
          for (let i = cursor.n; i < end; i++) yield* db.put("ticks", `${partition.key}-${i}`, i)
          return Step.advance(end >= params.from ? Step.done : { n: end }, end - cursor.n)
        })
    }),
    step.single("announce", { transaction: "none", run: () => Effect.void })
  ]
})

describe("RedisQueue under a Worker", () => {
  it.live("a job runs to success through the Redis queue, and the queue ends empty", () =>
    Effect.gen(function*() {
      yield* Worker.make({ jobs: [countdown], concurrency: 4, feedInterval: "50 millis", pollInterval: "200 millis" })
      const { runId } = yield* Runner.start(countdown, { from: 45 })
      const progress = yield* Runner.awaitTerminal(runId, { pollInterval: "50 millis" })
      expect(progress.run.status).toBe("succeeded")
      const ticks = yield* Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.rows("ticks"))
      expect(ticks).toHaveLength(partitions.length * 45)
      const queue = yield* QueueAdapter.QueueAdapter
      let depth = yield* queue.depth
      // The finalize unit's ack may still be on its way when the run reads as succeeded.
      for (let i = 0; i < 50 && depth.ready + depth.inFlight + depth.delayed > 0; i++) {
        yield* Effect.sleep(100)
        depth = yield* queue.depth
      }
      expect(depth).toMatchObject({ ready: 0, inFlight: 0, delayed: 0, dead: 0 })
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.merge(StateStore.layerMemory, RedisQueue.layer({ url, prefix, queue: "worker" })))
    ), 60_000)
})
