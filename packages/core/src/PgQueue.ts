/**
 * The queue on Postgres, for teams without a broker: `FOR UPDATE SKIP LOCKED` receives, visibility
 * timeouts in database time, delayed release, extend, batch send and ack, dead-lettering after N
 * receives with the reason, and depth. It keeps the `QueueAdapter` contract (see that module).
 *
 * - Wake-ups: a send issues `NOTIFY` (delivered at commit) and, when the `SqlClient` is `@effect/sql-pg`'s
 *   `PgClient`, every queue listens on its own connection (`PgClient.listen`), so a waiting receive
 *   wakes as soon as a message is sent from any process. Notifications are only a hint: a waiting
 *   receive still looks again every `pollInterval`, which covers delayed and released messages, other
 *   clients, and a listen connection lost with the server (the queue listens again when a ping sent
 *   through the server does not come back; `PgClient` 0.53 may hand the dead connection back, and then
 *   wake-ups stay off and receives poll: see the Postgres guide).
 * - Acks are coalesced: acks issued while one is in flight are deleted together in the next
 *   statement (group commit), and each caller still waits for its own.
 * - A receive is one call of the `queue_receive` function, whose plan Postgres keeps per session.
 *
 * Limits: an idle worker still polls (a few cheap index reads a second); the tables live in the store's
 * schema and share its migrations; messages of all queue names share one table, told apart by `queue`;
 * NOTIFY takes a database-wide lock at commit, so every send batch pays it.
 *
 * @since 0.1.0
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Queue, type Scope, Stream } from "effect"
import * as Errors from "./Errors.js"
import { base32, digest } from "./internal/hash.js"
import { outsideTransaction } from "./internal/outsideTransaction.js"
import { durationMs, positiveIntProblem } from "./internal/settings.js"
import { migrate } from "./PgStateStore.js"
import type { DeadLetter, Delivery, QueueAdapterShape } from "./QueueAdapter.js"
import { QueueAdapter, receiveOrGiveBack } from "./QueueAdapter.js"

/** Options of the Postgres queue. */
export interface Options {
  /** The schema of chunkwise's tables (default `chunkwise`); the queue's tables are migrated with the store's. */
  readonly schema?: string | undefined
  /** The queue's name (default `chunkwise`): several queues can share the tables. */
  readonly queue?: string | undefined
  /** Dead-letter a message on its next receive after this many (default 50, D11). */
  readonly maxReceives?: number | undefined
  /** Largest body in bytes (default 262,144). */
  readonly maxMessageBytes?: number | undefined
  /** How often a waiting receive looks again when no notification woke it (default 100 ms). */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * Listen for sends with LISTEN/NOTIFY (default true; used only when the `SqlClient` is a `PgClient`,
   * which opens one extra connection for it, outside its pool).
   */
  readonly listen?: boolean | undefined
}

/** The part of `@effect/sql-pg`'s `PgClient` the queue uses to listen, without depending on the package. */
interface Listener {
  readonly listen: (channel: string) => Stream.Stream<string, SqlError.SqlError>
}

const isListener = (client: unknown): client is Listener => typeof (client as Partial<Listener>).listen === "function"

/** How often the listener checks its connection with a ping through the server, and how long it waits. */
const PING_EVERY_MS = 5_000
const PING_WAIT_MS = 2_000

type Row = Record<string, unknown>

const unavailable = (operation: string) => (error: SqlError.SqlError) =>
  new Errors.QueueUnavailable({ operation, message: error.message, cause: error })

/**
 * Makes the queue over the `SqlClient` in context; migrates the schema first. The scope holds its
 * listener and its ack batcher.
 */
export const make = (options: Options = {}): Effect.Effect<
  QueueAdapterShape,
  Errors.ConfigurationError | Errors.StoreUnavailable,
  SqlClient.SqlClient | Scope.Scope
> =>
  Effect.gen(function*() {
    const schema = options.schema ?? "chunkwise"
    const queue = options.queue ?? "chunkwise"
    const maxReceives = options.maxReceives ?? 50
    const maxBytes = options.maxMessageBytes ?? 262_144
    const poll = durationMs("PgQueue: pollInterval", options.pollInterval, "100 millis")
    const problem = [
      positiveIntProblem("PgQueue: maxReceives", options.maxReceives)?.concat("; the default is 50"),
      queue === "" ? `PgQueue: queue must be a non-empty name (got "")` : undefined,
      positiveIntProblem("PgQueue: maxMessageBytes", options.maxMessageBytes),
      "problem" in poll ? poll.problem : undefined
    ].find((p) => p !== undefined)
    if (problem !== undefined) return yield* new Errors.ConfigurationError({ message: problem })
    const pollMs = "ms" in poll ? poll.ms : 100
    yield* migrate({ schema: options.schema })
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    const s = sql(schema)
    // One channel per schema and queue; identifiers are at most 63 bytes, so a digest names it.
    const channel = `chunkwise_q_${base32(digest([schema, queue])).slice(0, 20).toLowerCase()}`
    const ms = (value: number) => sql`(${value}::float8 * interval '1 millisecond')`
    /** Queue calls never join a chunk transaction: a message must not roll back with a chunk (D4). */
    const op = <A>(operation: string, effect: Effect.Effect<A, SqlError.SqlError>) =>
      outsideTransaction(Effect.mapError(effect, unavailable(operation)))

    // A receive interrupted once the statement ran (a worker draining) gives its messages back: visible
    // at once, the receive taken back, the receipt void (D11: no handler received them).
    const receiveOnce = (max: number, visibilityMs: number) =>
      receiveOrGiveBack(
        sql<Row>`
          select id::text as id, body, receive_count as "receiveCount", receipt
          from ${s}.queue_receive(${queue}, ${max}, ${visibilityMs}, ${maxReceives})`,
        (rows) =>
          rows.length === 0 ? Effect.void : Effect.ignore(sql`
            update ${s}.queue_messages set visible_at = clock_timestamp(), receive_count = receive_count - 1,
              receipt = null
            where queue = ${queue}
              and receipt in (select jsonb_array_elements_text(${
            JSON.stringify(rows.map((r) => r["receipt"]))
          }::jsonb))`)
      )

    // ---- wake-ups: waiting receives wait on `wake`, which each notification (or local send) completes.
    let wake = yield* Deferred.make<void>()
    const wakeAll = Effect.suspend(() => {
      const woken = wake
      return Effect.flatMap(Deferred.make<void>(), (next) => {
        wake = next
        return Deferred.succeed(woken, undefined)
      })
    })
    if (options.listen !== false && isListener(client)) {
      const ping = op("listen", Effect.asVoid(sql`select pg_notify(${channel}, 'ping')`))
      yield* Effect.forkScoped(listenLoop(client, channel, ping, wakeAll))
    }

    // ---- acks: one statement at a time; acks that arrive meanwhile go together in the next one.
    const acks = yield* Queue.unbounded<
      { readonly receipts: ReadonlyArray<string>; readonly done: Deferred.Deferred<void, Errors.QueueUnavailable> }
    >()
    const ackLoop = Effect.gen(function*() {
      const batch = yield* Queue.takeBetween(acks, 1, 1000)
      const receipts = Array.from(batch).flatMap((a) => a.receipts)
      const exit = yield* Effect.exit(
        op(
          "ack",
          sql`delete from ${s}.queue_messages where queue = ${queue}
            and receipt in (select jsonb_array_elements_text(${JSON.stringify(receipts)}::jsonb))`
        )
      )
      for (const a of batch) yield* Deferred.done(a.done, Exit.asVoid(exit))
    })
    yield* Effect.forkScoped(Effect.forever(ackLoop))

    const shape: QueueAdapterShape = {
      kind: "postgres",

      send: (messages, sendOptions) => {
        for (const message of messages) {
          const bytes = Buffer.byteLength(message.body, "utf8")
          if (bytes > maxBytes) {
            return Effect.fail(
              new Errors.MessageRejected({
                reason: `message body is ${bytes} bytes; the Postgres queue accepts at most ${maxBytes}`
              })
            )
          }
        }
        if (messages.length === 0) return Effect.void
        const delayMs = sendOptions?.delayMs ?? 0
        // The NOTIFY is delivered when the insert commits, in the same statement: no extra round trip.
        return op(
          "send",
          Effect.asVoid(sql`
            with sent as (
              insert into ${s}.queue_messages (queue, body, group_id, visible_at)
              select ${queue}, x.body, x.group_id, clock_timestamp() + ${ms(delayMs)}
              from jsonb_to_recordset(${
            JSON.stringify(messages.map((m) => ({ body: m.body, group_id: m.groupId ?? null })))
          }::jsonb) as x(body text, group_id text)
              returning 1)
            select pg_notify(${channel}, 'sent') from (select 1 from sent limit 1) x where ${delayMs <= 0}`)
        ).pipe(Effect.zipLeft(delayMs <= 0 ? wakeAll : Effect.void))
      },

      receive: ({ max, visibilityMs, waitMs }) =>
        op(
          "receive",
          Effect.gen(function*() {
            const deadline = Date.now() + waitMs
            while (true) {
              // Taken before the query: a send committed after it is not missed.
              const woken = wake
              const rows = yield* receiveOnce(max, visibilityMs)
              if (rows.length > 0 || Date.now() >= deadline) {
                return rows.map((r): Delivery => ({
                  messageId: r["id"] as string,
                  receipt: r["receipt"] as string,
                  body: r["body"] as string,
                  receiveCount: Number(r["receiveCount"])
                }))
              }
              yield* Deferred.await(woken).pipe(
                Effect.timeout(Math.min(pollMs, Math.max(1, deadline - Date.now()))),
                Effect.ignore
              )
            }
          })
        ),

      ack: (receipts) =>
        receipts.length === 0 ? Effect.void : Effect.flatMap(
          Deferred.make<void, Errors.QueueUnavailable>(),
          (done) => Effect.zipRight(Queue.offer(acks, { receipts, done }), Deferred.await(done))
        ),

      release: (receipt, delayMs) =>
        op(
          "release",
          Effect.asVoid(sql`
            update ${s}.queue_messages set receipt = null, visible_at = clock_timestamp() + ${ms(delayMs)}
            where queue = ${queue} and receipt = ${receipt}`)
        ),

      extend: (receipts, visibilityMs) =>
        receipts.length === 0 ? Effect.void : op(
          "extend",
          Effect.asVoid(sql`
            update ${s}.queue_messages set visible_at = clock_timestamp() + ${ms(visibilityMs)}
            where queue = ${queue} and receipt in ${sql.in(receipts)}`)
        ),

      deadLetter: (receipt, reason) =>
        op(
          "deadLetter",
          Effect.asVoid(sql`
            with d as (
              delete from ${s}.queue_messages where queue = ${queue} and receipt = ${receipt}
              returning id, queue, body, receive_count)
            insert into ${s}.queue_dead (id, queue, body, reason, receive_count)
            select id, queue, body, ${reason}, receive_count from d
            on conflict (id) do nothing`)
        ),

      depth: op(
        "depth",
        Effect.map(
          sql<Row>`
            select
              count(*) filter (where visible_at <= clock_timestamp())::int as ready,
              count(*) filter (where visible_at > clock_timestamp() and receipt is not null)::int as "inFlight",
              count(*) filter (where visible_at > clock_timestamp() and receipt is null)::int as delayed,
              (extract(epoch from clock_timestamp() - min(visible_at) filter (where visible_at <= clock_timestamp()))
                * 1000)::float8 as "oldestReadyAgeMs",
              (select count(*)::int from ${s}.queue_dead where queue = ${queue}) as dead
            from ${s}.queue_messages where queue = ${queue}`,
          ([row]) => ({
            ready: Number(row?.["ready"] ?? 0),
            inFlight: Number(row?.["inFlight"] ?? 0),
            delayed: Number(row?.["delayed"] ?? 0),
            dead: Number(row?.["dead"] ?? 0),
            oldestReadyAgeMs: row?.["oldestReadyAgeMs"] == null ? null : Math.round(Number(row["oldestReadyAgeMs"]))
          })
        )
      ),

      deadLetters: ({ limit }) =>
        op(
          "deadLetters",
          Effect.map(
            sql<Row>`
              select id::text as id, body, reason, receive_count as "receiveCount",
                (extract(epoch from at) * 1000)::float8 as at
              from ${s}.queue_dead where queue = ${queue} order by id limit ${limit}`,
            (rows) =>
              rows.map((r): DeadLetter => ({
                messageId: r["id"] as string,
                body: r["body"] as string,
                reason: r["reason"] as string,
                receiveCount: Number(r["receiveCount"]),
                at: Number(r["at"])
              }))
          )
        ),

      redrive: ({ messageIds }) =>
        op(
          "redrive",
          Effect.map(
            messageIds === undefined
              ? sql<Row>`
                  with d as (delete from ${s}.queue_dead where queue = ${queue} returning id, queue, body)
                  insert into ${s}.queue_messages (id, queue, body) select id, queue, body from d returning id`
              : messageIds.length === 0
              ? Effect.succeed([])
              : sql<Row>`
                  with d as (
                    delete from ${s}.queue_dead where queue = ${queue} and id::text in ${sql.in(messageIds)}
                    returning id, queue, body)
                  insert into ${s}.queue_messages (id, queue, body) select id, queue, body from d returning id`,
            (rows) => rows.length
          )
        )
    }
    return shape
  })

/**
 * Listens on `channel` and wakes waiting receives on every notification. The listen connection can be
 * lost silently (a server restart: `PgClient` drops its errors), so every few seconds a ping goes out
 * through the server; when it does not come back, the subscription is closed and opened again (on a
 * new connection), and once a ping comes back through the new one, waiting receives are woken to look
 * for what was sent in between. Errors only delay wake-ups: receives keep polling.
 */
const listenLoop = (
  client: Listener,
  channel: string,
  sendPing: Effect.Effect<void, Errors.QueueUnavailable>,
  wakeAll: Effect.Effect<void>
) => {
  /** Subscriptions in a row that never heard their ping: the pause before the next one doubles. */
  let failures = 0
  const subscription = Effect.gen(function*() {
    const ping = yield* Queue.sliding<void>(1)
    // A daemon interrupted without waiting: closing a subscription on a dead connection must not hang us.
    yield* Effect.acquireRelease(
      Effect.forkDaemon(
        Stream.runForEach(
          client.listen(channel),
          (payload) => payload === "ping" ? Queue.offer(ping, undefined) : wakeAll
        )
      ),
      Fiber.interruptFork
    )
    // A ping is our own NOTIFY: it comes back only while the listen connection is alive (and listening).
    const pingReturns = Effect.gen(function*() {
      yield* Queue.takeAll(ping)
      yield* sendPing
      return Option.isSome(yield* Queue.take(ping).pipe(Effect.timeout(PING_WAIT_MS), Effect.option))
    })
    // LISTEN runs once the new connection is up, so ping until one comes back (or give up and start over).
    const listening = yield* Effect.gen(function*() {
      while (true) {
        yield* sendPing
        if (Option.isSome(yield* Queue.take(ping).pipe(Effect.timeout(250), Effect.option))) return
      }
    }).pipe(Effect.timeout(PING_EVERY_MS), Effect.option)
    if (Option.isNone(listening)) {
      failures += 1
      return
    }
    failures = 0
    // Listening now: sends made while it was not were never heard, so waiting receives look again.
    yield* wakeAll
    while (true) {
      yield* Effect.sleep(PING_EVERY_MS)
      if (!(yield* pingReturns)) return
    }
  }).pipe(Effect.scoped)
  return Effect.forever(
    subscription.pipe(
      Effect.catchAllCause((cause) => Effect.logDebug("chunkwise: PgQueue listener restarting", cause)),
      Effect.zipRight(Effect.suspend(() => Effect.sleep(Math.min(60_000, 500 * 2 ** failures))))
    )
  )
}

/** The Postgres queue as a layer over the service's `SqlClient`. */
export const layer = (
  options: Options = {}
): Layer.Layer<QueueAdapter, Errors.ConfigurationError | Errors.StoreUnavailable, SqlClient.SqlClient> =>
  Layer.scoped(QueueAdapter, make(options))
