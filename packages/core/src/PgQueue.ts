/**
 * The queue on Postgres, for teams without a broker: `FOR UPDATE SKIP LOCKED` receives, visibility
 * timeouts in database time, delayed release, extend, batch send and ack, dead-lettering after N
 * receives with the reason, and depth. It keeps the `QueueAdapter` contract (see that module).
 *
 * Limits: receives poll (every `pollInterval`, default 100 ms, while a receive waits), so an idle
 * worker costs a few cheap index reads a second; the tables live in the store's schema and share its
 * migrations; messages of all queue names share one table, told apart by `queue`.
 *
 * @since 0.1.0
 */
import { SqlClient, type SqlError } from "@effect/sql"
import { Context, Duration, Effect, Layer } from "effect"
import * as Errors from "./Errors.js"
import { migrate } from "./PgStateStore.js"
import type { DeadLetter, Delivery, QueueAdapterShape } from "./QueueAdapter.js"
import { QueueAdapter } from "./QueueAdapter.js"

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
  /** How often a waiting receive looks again (default 100 ms). */
  readonly pollInterval?: Duration.DurationInput | undefined
}

type Row = Record<string, unknown>

const unavailable = (operation: string) => (error: SqlError.SqlError) =>
  new Errors.QueueUnavailable({ operation, message: error.message, cause: error })

/** Makes the queue over the `SqlClient` in context; migrates the schema first. */
export const make = (options: Options = {}): Effect.Effect<
  QueueAdapterShape,
  Errors.ConfigurationError | Errors.StoreUnavailable,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    yield* migrate({ schema: options.schema })
    const schema = options.schema ?? "chunkwise"
    const queue = options.queue ?? "chunkwise"
    const maxReceives = options.maxReceives ?? 50
    if (!Number.isInteger(maxReceives) || maxReceives < 1) {
      return yield* new Errors.ConfigurationError({
        message: `PgQueue: maxReceives must be a positive integer (got ${maxReceives}); the default is 50`
      })
    }
    const maxBytes = options.maxMessageBytes ?? 262_144
    const pollMs = Duration.toMillis(options.pollInterval ?? "100 millis")
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const ms = (value: number) => sql`(${value}::float8 * interval '1 millisecond')`
    /** Queue calls never join a chunk transaction: a message must not roll back with a chunk (D4). */
    const op = <A>(operation: string, effect: Effect.Effect<A, SqlError.SqlError>) =>
      Effect.mapInputContext(
        Effect.mapError(effect, unavailable(operation)),
        (context: Context.Context<never>) =>
          Context.omit(SqlClient.TransactionConnection)(context) as Context.Context<never>
      )

    const receiveOnce = (max: number, visibilityMs: number) =>
      sql<Row>`
        with picked as (
          select id, receive_count from ${s}.queue_messages
          where queue = ${queue} and visible_at <= clock_timestamp()
          order by visible_at, id
          limit ${max}
          for update skip locked),
        dead as (
          delete from ${s}.queue_messages m using picked
          where m.id = picked.id and picked.receive_count >= ${maxReceives}
          returning m.id, m.queue, m.body, m.receive_count),
        buried as (
          insert into ${s}.queue_dead (id, queue, body, reason, receive_count)
          select id, queue, body,
            'received ' || receive_count || ' times without being acknowledged (maxReceives ' || ${maxReceives}::int || ')',
            receive_count
          from dead
          on conflict (id) do nothing)
        update ${s}.queue_messages m set
          receive_count = m.receive_count + 1,
          visible_at = clock_timestamp() + ${ms(visibilityMs)},
          receipt = m.id || ':' || (m.receive_count + 1)
        from picked
        where m.id = picked.id and picked.receive_count < ${maxReceives}
        returning m.id::text as id, m.body, m.receive_count as "receiveCount", m.receipt`

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
        return op(
          "send",
          Effect.asVoid(sql`
            insert into ${s}.queue_messages (queue, body, group_id, visible_at)
            select ${queue}, x.body, x.group_id, clock_timestamp() + ${ms(sendOptions?.delayMs ?? 0)}
            from jsonb_to_recordset(${
            JSON.stringify(messages.map((m) => ({ body: m.body, group_id: m.groupId ?? null })))
          }::jsonb) as x(body text, group_id text)`)
        )
      },

      receive: ({ max, visibilityMs, waitMs }) =>
        op(
          "receive",
          Effect.gen(function*() {
            const deadline = Date.now() + waitMs
            while (true) {
              const rows = yield* receiveOnce(max, visibilityMs)
              if (rows.length > 0 || Date.now() >= deadline) {
                return rows.map((r): Delivery => ({
                  messageId: r["id"] as string,
                  receipt: r["receipt"] as string,
                  body: r["body"] as string,
                  receiveCount: Number(r["receiveCount"])
                }))
              }
              yield* Effect.sleep(Math.min(pollMs, Math.max(1, deadline - Date.now())))
            }
          })
        ),

      ack: (receipts) =>
        receipts.length === 0 ? Effect.void : op(
          "ack",
          Effect.asVoid(sql`delete from ${s}.queue_messages where queue = ${queue} and receipt in ${sql.in(receipts)}`)
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

/** The Postgres queue as a layer over the service's `SqlClient`. */
export const layer = (
  options: Options = {}
): Layer.Layer<QueueAdapter, Errors.ConfigurationError | Errors.StoreUnavailable, SqlClient.SqlClient> =>
  Layer.effect(QueueAdapter, make(options))
