/**
 * One job on every queue: memory, Postgres, Redis and SQS, each with the Postgres store, under the same
 * injected crashes, end in the same final state (and the one a fault-free run gives).
 */
import { RedisQueue } from "@chunkwise/adapters-redis"
import { SqsQueue } from "@chunkwise/adapters-sqs"
import { Job, Step } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel, Redacted, Schema } from "effect"
import { buildApp } from "fauxqs"
import { Redis } from "ioredis"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll } from "vitest"
import { Engine, Fault, Guarantees, Harness } from "../src/index.js"

process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] = "true"

const tag = `${process.pid}_${Date.now().toString(36)}`
const app = `cw_every_app_${tag}`
const client = PgClient.layer({
  host: "127.0.0.1",
  port: 5432,
  username: "postgres",
  database: "test",
  maxConnections: 12
})
const quiet = Logger.minimumLogLevel(process.env["CW_TEST_LOGS"] ? LogLevel.Debug : LogLevel.None)

// The SQS emulator, on a loopback port of its own.
let sqsEndpoint = ""
let stopSqs = async () => {}
beforeAll(async () => {
  const emulator = buildApp({ logger: false })
  await emulator.listen({ port: 0, host: "127.0.0.1" })
  sqsEndpoint = `http://127.0.0.1:${(emulator.server.address() as AddressInfo).port}`
  stopSqs = () => emulator.close()
})
afterAll(async () => {
  await stopSqs()
  // The Redis trials' keys.
  const redis = new Redis("redis://127.0.0.1:6379", { lazyConnect: true })
  await redis.connect()
  const keys = await redis.keys(`cwtest:every:${tag}:*`)
  if (keys.length > 0) await redis.del(...keys)
  redis.disconnect()
})

/** Partition pN holds items N*100 .. N*100+7; each chunk upserts its items, counting applications. */
const job = Job.make({
  name: "every-queue",
  params: Schema.Struct({ label: Schema.String }),
  partitions: () => ["p0", "p1", "p2"],
  steps: (step) => [
    step.chunked("apply", {
      cursor: Schema.Struct({ next: Schema.Number }),
      start: { next: 0 },
      chunkSize: 3,
      transaction: "chunk",
      process: ({ chunkSize, cursor, partition }) =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const base = Number(partition.key.slice(1)) * 100
          const end = Math.min(cursor.next + chunkSize, 8)
          yield* sql`
            insert into ${sql(app)}.applied (item, count)
            select g, 1 from generate_series(${base + cursor.next}::int, ${base + end - 1}::int) g
            on conflict (item) do update set count = applied.count + 1`
          return Step.advance(end >= 8 ? Step.done : { next: end }, end - cursor.next)
        })
    }),
    step.single("total", {
      transaction: "chunk",
      run: ({ partition }) =>
        Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql`insert into ${sql(app)}.totals (partition, total)
              select ${partition.key}, sum(item) from ${sql(app)}.applied
              where item / 100 = ${Number(partition.key.slice(1))}`)
    })
  ]
})

const observe = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.all({
    applied: Effect.map(
      sql<{ readonly item: number; readonly count: number }>`select item, count from ${sql(app)}.applied order by item`,
      (rows) => Object.fromEntries(rows.map((r) => [r.item, r.count]))
    ),
    totals: Effect.map(
      sql<{ readonly partition: string; readonly total: string }>`select partition, total::text from ${
        sql(app)
      }.totals order by partition`,
      (rows) => Object.fromEntries(rows.map((r) => [r.partition, Number(r.total)]))
    )
  }))

const reset = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`truncate ${sql(app)}.applied, ${sql(app)}.totals`)

const setUp = Effect.acquireRelease(
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      sql`create schema ${sql(app)}`,
      sql`create table ${sql(app)}.applied (item integer primary key, count integer not null)`,
      sql`create table ${sql(app)}.totals (partition text primary key, total bigint not null)`
    ], { discard: true })),
  () =>
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      Effect.all([
        sql`drop schema if exists ${sql(app)} cascade`,
        sql`drop schema if exists ${sql(`cw_every_store_${tag}`)} cascade`
      ], { discard: true })).pipe(Effect.orDie)
)

const queues = {
  memory: "memory" as const,
  postgres: "postgres" as const,
  redis: {
    name: "redis",
    layer: (trial: number) =>
      RedisQueue.layer({
        url: Redacted.make("redis://127.0.0.1:6379"),
        prefix: `cwtest:every:${tag}:`,
        queue: `trial-${trial}`
      })
  },
  sqs: {
    name: "sqs",
    layer: (trial: number) =>
      SqsQueue.layer({
        endpoint: sqsEndpoint,
        region: "us-east-1",
        credentials: { accessKeyId: "test", secretAccessKey: Redacted.make("test-secret") },
        queue: `every-${tag}-${trial}`,
        ensureQueue: true
      })
  }
}

// The same faults on every queue: two kills at chosen points, duplicated deliveries, a seeded schedule.
const killAfterEffect = Fault.kill("after-effect", { partition: "p1", step: "apply", chunkSeq: 1 })
const faults = [
  killAfterEffect,
  Fault.kill("before-ack", { partition: "p2" }),
  Fault.duplicateDelivery(0.3),
  Fault.random({ rate: 0.1, kinds: ["kill", "zombie"], max: 2 })
]

describe("one job on every queue, with the Postgres store", () => {
  it.live(
    "ends in the same final state on memory, Postgres, Redis and SQS, crashes included",
    () =>
      Effect.gen(function*() {
        yield* setUp
        const expected = {
          applied: Object.fromEntries(
            [0, 1, 2].flatMap((p) => Array.from({ length: 8 }, (_, i) => [p * 100 + i, 1]))
          ),
          totals: { p0: 28, p1: 828, p2: 1628 }
        }
        let trial = 0
        for (const [name, queue] of Object.entries(queues)) {
          const result = yield* Harness.run({
            engine: Engine.postgres({ schema: `cw_every_store_${tag}`, queue }),
            job,
            params: { label: "every-queue" },
            workers: 2,
            seed: 3,
            faults,
            trial: trial++,
            reset,
            observe
          })
          expect(result.status, name).toBe("succeeded")
          // The kill after p1's chunk 1 always fires: that chunk cannot commit without passing the point. The
          // kill before p2's ack may not: when p2's worker was killed by another fault after p2's last
          // commit, the redelivered message is acked as done without reaching the point.
          expect(result.injections.map((i) => i.fault), name).toContain(Fault.describe(killAfterEffect))
          Guarantees.all(result)
          expect(Harness.observedOrThrow(result), name).toEqual(expected)
        }
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Layer.orDie(client), quiet))),
    240_000
  )
})
