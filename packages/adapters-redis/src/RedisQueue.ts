/**
 * The queue on Redis Streams with consumer groups. It keeps the `QueueAdapter` contract of
 * `@chunkwise/core` (see that module): at-least-once delivery, visibility timeouts, release with delay,
 * extend, batches, dead-lettering after `maxReceives` with the reason, redrive, depth and stale receipts.
 *
 * How: a queue is one stream read by one consumer group. A receive is one Lua script that moves due
 * delayed messages into the stream, reclaims expired deliveries (XAUTOCLAIM), reads new ones
 * (XREADGROUP) and sets each delivery's visibility deadline; a receive that finds nothing waits on its
 * own connection (a blocking XREAD that wakes on a new entry), bounded by the next delayed message's
 * due time and `blockInterval`. Visibility is kept in the group's pending list: a delivery expires
 * when its idle time reaches a horizon of 7 days, so a receive or an extend with visibility V sets the
 * idle time to 7 days - V (XCLAIM IDLE JUSTID, which is not a delivery). A receipt is the entry id
 * with its delivery count, so a receipt is stale as soon as the message was delivered again.
 * Acks of one turn of the event loop (or every 16 of them, which start at once) share one script call,
 * which, while a consumer is receiving, also fetches its next messages (`prefetch`, BullMQ's
 * fetch-next). Released messages wait in a sorted set scored by their due time; dead letters go to a
 * stream of their own with the reason. Every key of a queue shares one hash tag, so Redis Cluster keeps
 * a queue in one slot, and starts with `prefix`, so several applications share one Redis.
 *
 * Outside the contract, as for every driver: ordering, exactly-once delivery. Messages live in Redis
 * memory: a Redis without persistence (AOF) loses them on restart, which chunkwise survives because
 * the store, not the queue, decides what runs (D1).
 *
 * @since 0.1.0
 */
import { Errors, QueueAdapter } from "@chunkwise/core"
import { Clock, Config, ConfigError, Duration, Effect, Layer, Redacted, Schema, type Scope } from "effect"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import * as Connection from "./internal/connection.js"
import * as Scripts from "./internal/scripts.js"

/** What a queue is, on a client it is given. */
export interface QueueOptions {
  /** Starts every key, so several applications share one Redis (default `chunkwise:`; no `{` or `}`). */
  readonly prefix?: string | undefined
  /** The queue's name (default `chunkwise`); several queues share one Redis and one prefix. */
  readonly queue?: string | undefined
  /** Dead-letter a message on its next receive after this many (default 50, D11). */
  readonly maxReceives?: number | undefined
  /** Largest body in bytes (default 262,144). */
  readonly maxMessageBytes?: number | undefined
  /**
   * Longest single blocking wait of a receive (default 1 s): how late at most an idle receiver sees a
   * delivery whose visibility expired (new and released messages wake it at once).
   */
  readonly blockInterval?: Duration.DurationInput | undefined
  /**
   * Fetch-next (default true): while a consumer is receiving, acks also fetch as many new messages in
   * the same script call, for its next receive, as BullMQ does. Such a message is in flight from then
   * on; if no receive takes it within a second (a quarter of its visibility at most), or the queue
   * closes first, it is released, keeping its receive count.
   */
  readonly prefetch?: boolean | undefined
}

/** A queue with its own connections, opened from a URL. */
export interface Options extends QueueOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS. */
  readonly url: Redacted.Redacted<string>
  /** The password, when it is not in the URL (it wins over the URL's). */
  readonly password?: Redacted.Redacted<string> | undefined
  /** The name the connections show in `CLIENT LIST` (default `chunkwise`; no spaces). */
  readonly connectionName?: string | undefined
}

/** The defaults of the options. */
export const defaults = {
  prefix: "chunkwise:",
  queue: "chunkwise",
  maxReceives: 50,
  maxMessageBytes: 262_144,
  blockInterval: Duration.seconds(1),
  prefetch: true,
  connectionName: Connection.defaultConnectionName
} as const

/** Visibility is capped here: a delivery is expired once its pending-list idle time reaches it. */
const horizonMs = 7 * 24 * 60 * 60 * 1000
/** Messages (or receipts) per script call or pipeline; keeps each call short on a shared Redis. */
const batchSize = 500
/**
 * Acks that start their script call at once, without waiting for the end of the turn of the event
 * loop: with many handlers ending together, Redis then acks (and fetches for) the first ones while the
 * process is still running the others.
 */
const ackBatch = 16
/** Due delayed messages moved into the stream by one receive. */
const promoteLimit = 1000
/** At most this many expired deliveries are counted by `depth`. */
const depthScanLimit = 100_000
/** Acks prefetch only this soon after a receive, and a prefetched message stays fresh this long at most. */
const prefetchWindowMs = 1000
const group = "chunkwise"
/**
 * One consumer for every process: who holds a delivery is the store's business (leases), and a fixed
 * name means dead processes leave no consumers behind in the group.
 */
const consumer = "chunkwise"

/** The keys of one queue. Operators: these are what `redis-cli` inspects. */
export interface Keys {
  /** The stream of ready and in-flight messages, read by the consumer group `chunkwise`. */
  readonly stream: string
  /** Released and delayed messages, scored by their due time in ms. */
  readonly delayed: string
  /** Dead letters, with their reason. */
  readonly dead: string
  /** Where the reclaiming of expired deliveries (XAUTOCLAIM) continues. */
  readonly cursor: string
}

/** The keys of a queue: `<prefix>{<queue>}:<what>`, one hash tag per queue for Redis Cluster. */
export const keys = (options: Pick<QueueOptions, "prefix" | "queue"> = {}): Keys => {
  const base = `${options.prefix ?? defaults.prefix}{${options.queue ?? defaults.queue}}`
  return { stream: `${base}:stream`, delayed: `${base}:delayed`, dead: `${base}:dead`, cursor: `${base}:reclaim` }
}

/**
 * The options read from the environment: `CHUNKWISE_REDIS_URL` (required, redacted),
 * `CHUNKWISE_REDIS_PASSWORD` (redacted), `CHUNKWISE_REDIS_PREFIX`, `CHUNKWISE_REDIS_QUEUE`,
 * `CHUNKWISE_REDIS_MAX_RECEIVES`, `CHUNKWISE_REDIS_MAX_MESSAGE_BYTES`, `CHUNKWISE_REDIS_BLOCK_INTERVAL`
 * (a duration such as `1 second`), `CHUNKWISE_REDIS_PREFETCH` and `CHUNKWISE_REDIS_CONNECTION_NAME`, with the `defaults`.
 */
export const config: Config.Config<Options> = Config.all({
  ...Connection.config,
  prefix: Config.string(Connection.configName("PREFIX")).pipe(
    Config.withDefault(defaults.prefix),
    Config.withDescription("starts every key of the queue")
  ),
  queue: Config.string(Connection.configName("QUEUE")).pipe(
    Config.withDefault(defaults.queue),
    Config.withDescription("the queue's name")
  ),
  maxReceives: Config.integer(Connection.configName("MAX_RECEIVES")).pipe(
    Config.withDefault(defaults.maxReceives),
    Config.withDescription("dead-letter a message on its next receive after this many")
  ),
  maxMessageBytes: Config.integer(Connection.configName("MAX_MESSAGE_BYTES")).pipe(
    Config.withDefault(defaults.maxMessageBytes),
    Config.withDescription("largest body in bytes")
  ),
  blockInterval: Config.duration(Connection.configName("BLOCK_INTERVAL")).pipe(
    Config.withDefault(defaults.blockInterval),
    Config.withDescription("longest single blocking wait of a receive")
  ),
  prefetch: Config.boolean(Connection.configName("PREFETCH")).pipe(
    Config.withDefault(defaults.prefetch),
    Config.withDescription("acks fetch the next messages for the following receive")
  ),
  connectionName: Connection.config.connectionName
})

const invalid = (message: string) => new Errors.ConfigurationError({ message: `RedisQueue: ${message}` })

interface Settings {
  readonly keys: Keys
  readonly queue: string
  readonly maxReceives: number
  readonly maxMessageBytes: number
  readonly blockMs: number
  readonly prefetch: boolean
}

const settingsOf = (options: QueueOptions): Effect.Effect<Settings, Errors.ConfigurationError> => {
  const prefix = options.prefix ?? defaults.prefix
  const queue = options.queue ?? defaults.queue
  const maxReceives = options.maxReceives ?? defaults.maxReceives
  const maxMessageBytes = options.maxMessageBytes ?? defaults.maxMessageBytes
  const blockMs = Duration.toMillis(options.blockInterval ?? defaults.blockInterval)
  if (/[{}]/.test(prefix)) {
    return Effect.fail(invalid(`prefix must not contain { or } (got "${prefix}"): the queue name is the hash tag`))
  }
  if (queue === "" || /[{}]/.test(queue)) {
    return Effect.fail(invalid(`queue must be a non-empty name without { or } (got "${queue}")`))
  }
  if (!Number.isInteger(maxReceives) || maxReceives < 1) {
    return Effect.fail(invalid(`maxReceives must be a positive integer (got ${maxReceives}); the default is 50`))
  }
  if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 1 || maxMessageBytes > 512 * 1024 * 1024) {
    return Effect.fail(
      invalid(
        `maxMessageBytes must be an integer from 1 to 536,870,912 (got ${maxMessageBytes}); the default is 262,144`
      )
    )
  }
  if (!(blockMs >= 1) || !Number.isFinite(blockMs)) {
    return Effect.fail(invalid(`blockInterval must be at least 1 ms (got ${blockMs} ms); the default is 1 second`))
  }
  return Effect.succeed({
    keys: keys({ prefix, queue }),
    queue,
    maxReceives,
    maxMessageBytes,
    blockMs,
    prefetch: options.prefetch ?? defaults.prefetch
  })
}

/** A receipt: `<entry id>#<delivery count>`. */
const receiptPattern = /^\d+-\d+#\d+$/

const parseReceipt = (receipt: string): readonly [string, string] | undefined => {
  if (!receiptPattern.test(receipt)) return undefined
  const hash = receipt.indexOf("#")
  return [receipt.slice(0, hash), receipt.slice(hash + 1)]
}

/** Current receipts as (entry id, delivery count) pairs; malformed ones are stale by definition. */
const receiptArgs = (receipts: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  for (const receipt of receipts) {
    const parsed = parseReceipt(receipt)
    if (parsed !== undefined) out.push(parsed[0], parsed[1])
  }
  return out
}

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  if (items.length <= size) return [items]
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

/**
 * Joins calls into batches, one `run` over the items of each (added in groups of `unit`); every caller
 * waits for its batch's run and sees its outcome. A batch takes the calls of one turn of the event loop,
 * or starts as soon as it holds `size` items, the next calls opening another: then Redis works on one
 * batch while the process is still making the next.
 */
const coalesce = <A>(run: (items: ReadonlyArray<A>) => Promise<unknown>, unit: number, size: number) => {
  let open: { readonly items: Array<A>; readonly start: () => void; readonly done: Promise<void> } | undefined
  return (items: ReadonlyArray<A>): Promise<void> => {
    if (items.length % unit !== 0) throw new Error(`coalesce: items come in groups of ${unit}`)
    let batch = open
    if (batch === undefined) {
      const batchItems: Array<A> = []
      let start: () => void = () => {}
      const started = new Promise<void>((resolve) => {
        start = resolve
        setImmediate(resolve)
      })
      const opened = {
        items: batchItems,
        start,
        done: started.then(() => {
          if (open === opened) open = undefined
          return run(batchItems).then(() => undefined)
        })
      }
      batch = open = opened
    }
    for (const item of items) batch.items.push(item)
    if (batch.items.length >= size * unit) {
      open = undefined
      batch.start()
    }
    return batch.done
  }
}

// The scripts' replies, checked on arrival: a Redis reply crosses a process.
// Replies that carry deliveries are checked by shape only: a Schema over each of their fields costs
// more per message than the rest of a receive (about 5 µs a message), and each field is converted where
// it is read (see `deliveriesOf`).
const isDeliveries = (flat: unknown): flat is ReadonlyArray<string | number> =>
  Array.isArray(flat) && flat.length % 5 === 0
const decodeReceived = Schema.decodeUnknownSync(
  Schema.declare(
    (reply: unknown): reply is readonly [ReadonlyArray<string | number>, number, string] =>
      Array.isArray(reply) && reply.length === 3 && isDeliveries(reply[0]) && typeof reply[1] === "number" &&
      typeof reply[2] === "string",
    { identifier: "ReceiveReply", description: "[entryId, count, messageId, body, receives]*, nextDueMs, lastId" }
  )
)
const decodeAcked = Schema.decodeUnknownSync(
  Schema.declare(
    (reply: unknown): reply is readonly [number, ReadonlyArray<string | number>] =>
      Array.isArray(reply) && reply.length === 2 && typeof reply[0] === "number" && isDeliveries(reply[1]),
    { identifier: "AckReply", description: "acked, [entryId, count, messageId, body, receives]*" }
  )
)

/** The deliveries of a receive's flat list (entryId, count, messageId, body, receives per message). */
const deliveriesOf = (flat: ReadonlyArray<string | number>): Array<QueueAdapter.Delivery> => {
  const deliveries: Array<QueueAdapter.Delivery> = []
  for (let i = 0; i < flat.length; i += 5) {
    deliveries.push({
      receipt: `${flat[i]}#${flat[i + 1]}`,
      messageId: String(flat[i + 2]),
      body: String(flat[i + 3]),
      receiveCount: Number(flat[i + 4])
    })
  }
  return deliveries
}
const decodeDepth = Schema.decodeUnknownSync(
  Schema.Tuple(Schema.Number, Schema.Number, Schema.Number, Schema.Number, Schema.Number)
)
const decodeRedriven = Schema.decodeUnknownSync(Schema.Tuple(Schema.Number, Schema.String))

const fieldsOf = (flat: ReadonlyArray<string>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!
  return out
}

const minVersion = [6, 2] as const

/**
 * Makes the queue on a client the service already has. The client stays the caller's: the queue
 * defines its scripts on it (named `chunkwise_*`) and never quits it; blocking waits run on a
 * duplicate, which the queue opens and closes with the scope.
 */
export const makeFromClient = (
  client: Redis,
  options: QueueOptions = {}
): Effect.Effect<QueueAdapter.QueueAdapterShape, Errors.ConfigurationError | Errors.QueueUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const settings = yield* settingsOf(options)
    const { blockMs, maxMessageBytes, maxReceives, prefetch, queue } = settings
    const k = settings.keys
    const unavailable = (operation: string) => (cause: unknown) =>
      new Errors.QueueUnavailable({
        operation,
        message: `Redis ${operation} on queue "${queue}" failed: ${Connection.messageOf(cause)}`,
        cause: Connection.scrub(cause)
      })
    const call = <A>(operation: string, run: () => Promise<A>): Effect.Effect<A, Errors.QueueUnavailable> =>
      Effect.tryPromise({ try: run, catch: unavailable(operation) })

    const version = yield* call("connect", () => client.info("server")).pipe(
      Effect.map((info) => /redis_version:(\d+)\.(\d+)/.exec(info)),
      // An ACL may deny INFO; then the first command that needs 6.2 says so.
      Effect.catchIf((error) => Connection.messageOf(error.cause).startsWith("NOPERM"), () => Effect.succeed(null))
    )
    if (version !== null) {
      const [major, minor] = [Number(version[1]), Number(version[2])]
      if (major < minVersion[0] || (major === minVersion[0] && minor < minVersion[1])) {
        return yield* invalid(`Redis ${major}.${minor} is too old: the queue needs Redis 6.2 or newer (XAUTOCLAIM)`)
      }
    }
    const script = Scripts.define(client, Scripts.queue)
    yield* call("create the consumer group", () => client.xgroup("CREATE", k.stream, group, "0", "MKSTREAM")).pipe(
      Effect.catchIf((error) => Connection.messageOf(error.cause).startsWith("BUSYGROUP"), () => Effect.void)
    )

    // Blocking waits hold their connection, so they get their own.
    const { client: blocker } = yield* Connection.ownClient(
      () => client.duplicate({ lazyConnect: false }),
      "blocking",
      false
    )

    /**
     * One blocking read at a time per queue, shared by every receive that waits: it resolves when an
     * entry newer than `afterId` is added (a send, a release, a redrive), at its timeout, or, with
     * `false`, when the connection failed.
     */
    let waking: Promise<boolean> | undefined
    const activity = (afterId: string, timeoutMs: number): Promise<boolean> => {
      if (waking === undefined) {
        const current = blocker.xread("COUNT", 1, "BLOCK", timeoutMs, "STREAMS", k.stream, afterId).then(
          () => true,
          () => false
        )
        waking = current
        void current.then(() => {
          if (waking === current) waking = undefined
        })
      }
      return waking
    }

    // The keys of a receive, and of an ack, which may receive too.
    const receiveKeys = [k.stream, k.delayed, k.dead, k.cursor]
    const fetch = (max: number, visibilityMs: number) =>
      script("receive", receiveKeys, [group, consumer, max, visibilityMs, horizonMs, maxReceives, promoteLimit]).then(
        (reply) => {
          const [flat, nextDueMs, lastId] = decodeReceived(reply)
          return { deliveries: deliveriesOf(flat), nextDueMs, lastId }
        }
      )

    /** `undelivered`: a prefetched delivery no handler took; its receive is taken back (D11). */
    const release = (receipt: string, delayMs: number, undelivered = false) => {
      const parsed = parseReceipt(receipt)
      return parsed === undefined ?
        Effect.void :
        call(
          "release",
          () =>
            script("release", [k.stream, k.delayed], [
              group,
              ...parsed,
              Math.max(0, Math.round(delayMs)),
              undelivered ? 1 : 0
            ])
        ).pipe(
          Effect.asVoid
        )
    }

    /**
     * Fetch-next, as BullMQ does on completion. A consumer acks a message, its slot frees and its next
     * receive follows at once; so while a consumer is receiving, the acks of one turn of the event loop
     * also fetch as many messages, in their script call, and the next receive with the same visibility
     * takes those without a round trip. One not taken while fresh, or still held at close, is given
     * back with its receive count as it was: no handler received it.
     */
    interface Prefetched {
      readonly delivery: QueueAdapter.Delivery
      readonly visibilityMs: number
      readonly freshUntil: number
    }
    let prefetched: Array<Prefetched> = []
    let lastReceive: { readonly visibilityMs: number; readonly at: number } | undefined
    /** Gives deliveries no handler received back: visible at once, their receive taken back. */
    const giveBack = (deliveries: ReadonlyArray<QueueAdapter.Delivery>) =>
      Effect.forEach(deliveries, (d) => Effect.ignore(release(d.receipt, 0, true)), {
        concurrency: "unbounded",
        discard: true
      })
    yield* Effect.addFinalizer(() => Effect.suspend(() => giveBack(prefetched.splice(0).map((p) => p.delivery))))

    /**
     * Prefetched deliveries for a receive: up to `max` fresh ones with its visibility, released first
     * with the stale ones.
     */
    const takePrefetched = (max: number, visibilityMs: number): Effect.Effect<Array<QueueAdapter.Delivery>> => {
      const now = Date.now()
      const out: Array<QueueAdapter.Delivery> = []
      const stale: Array<Prefetched> = []
      const kept: Array<Prefetched> = []
      for (const p of prefetched) {
        if (p.freshUntil < now || p.visibilityMs !== visibilityMs) stale.push(p)
        else if (out.length < max) out.push(p.delivery)
        else kept.push(p)
      }
      prefetched = kept
      return stale.length === 0 ? Effect.succeed(out) : Effect.as(giveBack(stale.map((p) => p.delivery)), out)
    }

    /**
     * Every handler acks its own message: the acks of one turn of the event loop, or each `ackBatch` of
     * them, share one script call (one per `batchSize` receipts), which, while a consumer is receiving,
     * also fetches as many messages for its next receive (fetch-next; at most 1,000 a batch).
     */
    const acks = coalesce<string>(
      (args) => {
        const receiving = lastReceive
        const fetching = prefetch && receiving !== undefined && Date.now() - receiving.at <= prefetchWindowMs
        const visibilityMs = receiving?.visibilityMs ?? 0
        let toFetch = fetching ? Math.min(args.length / 2, 1000) : 0
        return Promise.all(
          chunks(args, batchSize * 2).map((batch) => {
            const fetch = Math.min(batch.length / 2, toFetch)
            toFetch -= fetch
            return script("ack", receiveKeys, [
              group,
              consumer,
              fetch,
              visibilityMs,
              horizonMs,
              maxReceives,
              promoteLimit,
              ...batch
            ]).then((reply) => {
              const [, flat] = decodeAcked(reply)
              if (flat.length === 0) return
              const freshUntil = Date.now() + Math.min(visibilityMs / 4, prefetchWindowMs)
              for (const delivery of deliveriesOf(flat)) prefetched.push({ delivery, visibilityMs, freshUntil })
            })
          })
        )
      },
      2,
      ackBatch
    )

    /** A receive that found nothing prefetched: fetches, and waits for messages up to `waitMs`. */
    const poll = (count: number, visibility: number, waitMs: number) =>
      Effect.gen(function*() {
        const deadline = (yield* Clock.currentTimeMillis) + waitMs
        while (true) {
          // Interrupted once the script ran (a worker draining): its deliveries go back, receives taken back.
          const { deliveries, lastId, nextDueMs } = yield* QueueAdapter.receiveOrGiveBack(
            call("receive", () => fetch(count, visibility)),
            (received) => giveBack(received.deliveries)
          )
          const left = deadline - (yield* Clock.currentTimeMillis)
          if (deliveries.length > 0 || left <= 0) {
            lastReceive = { visibilityMs: visibility, at: Date.now() }
            return deliveries
          }
          const timeout = Math.ceil(Math.max(1, Math.min(left, blockMs, nextDueMs >= 0 ? nextDueMs + 1 : Infinity)))
          const woke = yield* Effect.raceFirst(
            Effect.promise(() => activity(lastId, timeout)),
            Effect.as(Effect.sleep(timeout), true)
          )
          // The blocking connection failed (it reconnects by itself): pause instead of spinning.
          if (!woke) yield* Effect.sleep(Math.min(100, left))
        }
      })

    const shape: QueueAdapter.QueueAdapterShape = {
      kind: "redis",

      send: (messages, sendOptions) => {
        for (const message of messages) {
          const bytes = Buffer.byteLength(message.body, "utf8")
          if (bytes > maxMessageBytes) {
            return Effect.fail(
              new Errors.MessageRejected({
                reason:
                  `message body is ${bytes} bytes; the Redis queue "${queue}" accepts at most ${maxMessageBytes} ` +
                  `(maxMessageBytes)`
              })
            )
          }
        }
        const delayMs = Math.max(0, Math.round(sendOptions?.delayMs ?? 0))
        return Effect.forEach(chunks(messages, batchSize), (batch) =>
          delayMs > 0
            ? call("send", () =>
              script("send-delayed", [k.delayed], [delayMs, ...batch.flatMap((m) => [randomUUID(), m.body])]))
            : call("send", async () => {
              const pipeline = client.pipeline()
              for (const message of batch) {
                pipeline.xadd(k.stream, "*", "b", message.body)
              }
              for (const [error] of (await pipeline.exec()) ?? []) {
                if (error) {
                  throw error
                }
              }
            }), { discard: true })
      },

      receive: ({ max, visibilityMs, waitMs }) =>
        Effect.suspend(() => {
          const count = Math.min(Math.floor(max), 1000)
          if (!(count >= 1)) return Effect.succeed([])
          const visibility = Math.min(Math.max(0, Math.round(visibilityMs)), horizonMs)
          lastReceive = { visibilityMs: visibility, at: Date.now() }
          if (prefetched.length === 0) return poll(count, visibility, waitMs)
          return Effect.flatMap(
            takePrefetched(count, visibility),
            (ready) => ready.length > 0 ? Effect.succeed(ready) : poll(count, visibility, waitMs)
          )
        }),

      ack: (receipts) => {
        const args = receiptArgs(receipts)
        return args.length === 0 ? Effect.void : call("ack", () => acks(args))
      },

      release,

      extend: (receipts, visibilityMs) => {
        const visibility = Math.min(Math.max(0, Math.round(visibilityMs)), horizonMs)
        return Effect.forEach(
          chunks(receiptArgs(receipts), batchSize * 2),
          (args) =>
            call("extend", () => script("extend", [k.stream], [group, consumer, visibility, horizonMs, ...args])),
          { discard: true }
        )
      },

      deadLetter: (receipt, reason) => {
        const parsed = parseReceipt(receipt)
        return parsed === undefined ?
          Effect.void :
          call("deadLetter", () => script("dead-letter", [k.stream, k.dead], [group, ...parsed, reason])).pipe(
            Effect.asVoid
          )
      },

      depth: call(
        "depth",
        () => script("depth", [k.stream, k.delayed, k.dead], [group, horizonMs, depthScanLimit]).then(decodeDepth)
      ).pipe(
        Effect.map(([ready, inFlight, delayed, dead, age]) => ({
          ready,
          inFlight,
          delayed,
          dead,
          oldestReadyAgeMs: age < 0 ? null : age
        }))
      ),

      deadLetters: ({ limit }) =>
        limit < 1 ?
          Effect.succeed([]) :
          call("deadLetters", () => client.xrange(k.dead, "-", "+", "COUNT", Math.floor(limit))).pipe(
            Effect.map((entries) =>
              entries.map(([id, flat]): QueueAdapter.DeadLetter => {
                const fields = fieldsOf(flat)
                return {
                  messageId: fields["m"] ?? id,
                  body: fields["b"] ?? "",
                  reason: fields["r"] ?? "",
                  receiveCount: Number(fields["c"] ?? 0),
                  at: Number(id.split("-")[0])
                }
              })
            )
          ),

      redrive: ({ messageIds }) =>
        messageIds !== undefined && messageIds.length === 0 ? Effect.succeed(0) : Effect.gen(function*() {
          let moved = 0
          let cursor = "-"
          while (cursor !== "") {
            const [count, next] = yield* call(
              "redrive",
              () =>
                script("redrive", [k.stream, k.dead], [cursor, batchSize, ...(messageIds ?? [])]).then(decodeRedriven)
            )
            moved += count
            cursor = next
          }
          return moved
        })
    }
    return shape
  })

/** Makes the queue with its own connections to `options.url`; they close with the scope. */
export const make = (
  options: Options
): Effect.Effect<QueueAdapter.QueueAdapterShape, Errors.ConfigurationError | Errors.QueueUnavailable, Scope.Scope> =>
  Effect.flatMap(
    Connection.connect(options, {
      invalid,
      unavailable: (message, cause) =>
        new Errors.QueueUnavailable({
          operation: "connect",
          message: `cannot connect to Redis for queue "${options.queue ?? defaults.queue}": ${message}`,
          cause
        })
    }),
    (client) => makeFromClient(client, options)
  )

/** The Redis queue as a layer, with its own connections to `options.url`. */
export const layer = (
  options: Options
): Layer.Layer<QueueAdapter.QueueAdapter, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  Layer.scoped(QueueAdapter.QueueAdapter, make(options))

/**
 * The Redis queue as a layer, its options read through `Config`: by default from the environment
 * (see `config`), or from the given config, e.g. `{ url: Config.redacted("REDIS_URL"), queue: "billing" }`.
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options> = config
): Layer.Layer<
  QueueAdapter.QueueAdapter,
  ConfigError.ConfigError | Errors.ConfigurationError | Errors.QueueUnavailable
> => Layer.scoped(QueueAdapter.QueueAdapter, Effect.flatMap(Config.unwrap(options), make))

/**
 * The Redis queue as a layer on a client the service already has: the queue never quits it (its
 * blocking waits use a duplicate connection, which it does close).
 */
export const layerFromClient = (
  client: Redis,
  options: QueueOptions = {}
): Layer.Layer<QueueAdapter.QueueAdapter, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  Layer.scoped(QueueAdapter.QueueAdapter, makeFromClient(client, options))
