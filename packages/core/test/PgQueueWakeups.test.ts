/**
 * PgQueue's LISTEN/NOTIFY wake-ups on real Postgres: a waiting receive wakes when another client sends,
 * without waiting for its poll (set far beyond every wait here, so only a notification can end a wait
 * early); and when its listen connection is killed, nothing is lost.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { PgQueue, QueueAdapter } from "../src/index.js"
import { freshSchema } from "./pg.js"

const client = (applicationName: string) =>
  PgClient.layer({
    host: "127.0.0.1",
    port: 5432,
    username: "postgres",
    database: "test",
    maxConnections: 4,
    applicationName
  })

/** The receiving queue (listening, polling once a minute) and a sender on its own client, with `listen` off. */
const queues = (schema: string, appName: string) =>
  Effect.gen(function*() {
    const queue = `wake-${Date.now()}`
    // Built in the test's scope: the queues (their listener, their pools) live until the test ends.
    const receiver = Context.get(
      yield* Layer.build(
        PgQueue.layer({ schema, queue, pollInterval: "60 seconds" }).pipe(Layer.provide(client(appName)))
      ),
      QueueAdapter.QueueAdapter
    )
    const sender = Context.get(
      yield* Layer.build(
        PgQueue.layer({ schema, queue, listen: false }).pipe(Layer.provide(client(`${appName}-s`)))
      ),
      QueueAdapter.QueueAdapter
    )
    return { receiver, sender }
  })

/** Receives once, waiting up to `waitMs`; returns the bodies, their receipts and how long it took. */
const timedReceive = (queue: QueueAdapter.QueueAdapterShape, waitMs: number) =>
  Effect.gen(function*() {
    const start = Date.now()
    const got = yield* queue.receive({ max: 10, visibilityMs: 30_000, waitMs })
    return { bodies: got.map((d) => d.body), receipts: got.map((d) => d.receipt), tookMs: Date.now() - start }
  })

const listenBackends = (appName: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly pid: number }>`
      select pid from pg_stat_activity where application_name = ${appName} and query like 'LISTEN %'`)

describe("PgQueue wake-ups (LISTEN/NOTIFY) on real Postgres", () => {
  it.live("a waiting receive wakes when another client sends; a killed listen connection loses nothing", () => {
    const schema = freshSchema("cw_wake")
    const appName = `cw-wake-${process.pid}-${Date.now().toString(36)}`
    return Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Effect.addFinalizer(() => Effect.orDie(sql`drop schema if exists ${sql(schema)} cascade`))
      const { receiver, sender } = yield* queues(schema, appName)

      // Woken by a send from another client: far sooner than the 20 s wait (the poll is a minute).
      const first = yield* Effect.fork(timedReceive(receiver, 20_000))
      yield* Effect.sleep("1 second")
      yield* sender.send([{ body: "one" }])
      const one = yield* Fiber.join(first)
      expect(one.bodies).toEqual(["one"])
      expect(one.tookMs).toBeLessThan(15_000)

      yield* receiver.ack(one.receipts)

      // Kill the listen connection: wake-ups may stop (see the guide's limits), but nothing is lost: the
      // waiting receive still finds the message when it looks again at the end of its wait.
      const [killed] = yield* listenBackends(appName)
      expect(killed).toBeDefined()
      yield* sql`select pg_terminate_backend(${killed!.pid})`
      const second = yield* Effect.fork(timedReceive(receiver, 3_000))
      yield* Effect.sleep("500 millis")
      yield* sender.send([{ body: "two" }])
      const two = yield* Fiber.join(second)
      expect(two.bodies).toEqual(["two"])
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(client(`${appName}-admin`))))
  }, { timeout: 120_000 })
})
