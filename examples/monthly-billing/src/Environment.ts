/**
 * The example's settings, read through Effect `Config` from the environment, and the layers they
 * select: the database (a real Postgres at `DATABASE_URL`, or the embedded PGlite), the chunkwise
 * store on it, and the queue (`CHUNKWISE_QUEUE`: memory, postgres, redis or sqs).
 *
 * | variable | default | meaning |
 * | --- | --- | --- |
 * | `DATABASE_URL` | (embedded PGlite) | a Postgres URL; secret, never logged |
 * | `CHUNKWISE_QUEUE` | `memory` | `memory` (one process), `postgres`, `redis` (`CHUNKWISE_REDIS_URL`), `sqs` (`CHUNKWISE_SQS_QUEUE_URL`) |
 * | `BILLING_SCHEMA` | `billing` | the schema of the billing tables |
 * | `CHUNKWISE_SCHEMA` | `chunkwise` | the schema of the chunkwise store (and the Postgres queue) |
 * | `BILLING_CONCURRENCY` | `4` | companies one worker bills at once |
 * | `BILLING_CHUNK_SIZE` | `1000` | work records per chunk |
 * | `BILLING_SPLIT_RECORDS` | `50000` | a company with more records is billed as ranges of days in parallel |
 * | `BILLING_MAX_CONNECTIONS` | concurrency + 4 | the worker's connection pool (at least concurrency + 2) |
 *
 * @since 0.1.0
 */
import { RedisQueue } from "@chunkwise/adapters-redis"
import { SqsQueue } from "@chunkwise/adapters-sqs"
import { type Errors, type Job, PgQueue, PgStateStore, QueueAdapter, type StateStore } from "@chunkwise/core"
import type { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Config, type ConfigError, type Duration, Effect, type Layer, Option, type Redacted } from "effect"
import * as Embedded from "./Embedded.js"
import { BillingError } from "./Errors.js"
import * as MonthlyBilling from "./MonthlyBilling.js"
import { checkSchema } from "./Tables.js"

/** The queue kinds `CHUNKWISE_QUEUE` selects. */
export type QueueKind = "memory" | "postgres" | "redis" | "sqs"

/** The example's settings. */
export interface Settings {
  readonly databaseUrl: Option.Option<Redacted.Redacted>
  readonly queue: QueueKind
  readonly billingSchema: string
  readonly storeSchema: string
  readonly concurrency: number
  readonly chunkSize: number
  readonly splitRecords: number
  readonly maxConnections: number
}

const positiveInteger = (name: string) =>
  Config.integer(name).pipe(
    Config.validate({ message: `${name} must be a positive integer`, validation: (n) => n >= 1 })
  )
const positive = (name: string, fallback: number) => positiveInteger(name).pipe(Config.withDefault(fallback))

/** The settings from the environment. */
export const settings: Config.Config<Settings> = Config.all({
  databaseUrl: Config.option(
    Config.redacted("DATABASE_URL").pipe(Config.withDescription("a Postgres URL; unset: the embedded PGlite"))
  ),
  queue: Config.literal("memory", "postgres", "redis", "sqs")("CHUNKWISE_QUEUE").pipe(
    Config.withDefault("memory" as const),
    Config.withDescription("the queue: memory, postgres, redis or sqs")
  ),
  billingSchema: Config.string("BILLING_SCHEMA").pipe(Config.withDefault("billing")),
  storeSchema: Config.string("CHUNKWISE_SCHEMA").pipe(Config.withDefault("chunkwise")),
  concurrency: positive("BILLING_CONCURRENCY", 4),
  chunkSize: positive("BILLING_CHUNK_SIZE", 1000),
  splitRecords: positive("BILLING_SPLIT_RECORDS", 50_000),
  maxConnections: Config.option(positiveInteger("BILLING_MAX_CONNECTIONS"))
}).pipe(
  Config.validate({
    // The worker refuses a pool below concurrency + 2 (a connection per unit's chunk transaction, plus
    // the heartbeat and the feeder); said here in the example's own terms.
    message: "BILLING_MAX_CONNECTIONS must be at least BILLING_CONCURRENCY + 2 (a connection per company " +
      "billed at once, plus the heartbeat and the feeder); raise it, or unset it for BILLING_CONCURRENCY + 4",
    validation: (c) => !Option.exists(c.maxConnections, (max) => max < c.concurrency + 2)
  }),
  Config.map((c) => ({
    ...c,
    maxConnections: Option.getOrElse(c.maxConnections, () => c.concurrency + 4)
  }))
)

/** Reads the settings, checking the schema names. */
export const load = Effect.gen(function*() {
  const s = yield* settings.pipe(
    Effect.mapError((e) => new BillingError({ message: `invalid setting: ${e.toString()}`, input: true }))
  )
  yield* checkSchema(s.billingSchema)
  yield* checkSchema(s.storeSchema)
  return s
})

/** Whether the settings point at the embedded database. */
export const isEmbedded = (s: Settings) => Option.isNone(s.databaseUrl)

/**
 * How long a worker's lease lasts. On PGlite a heartbeat waits behind every transaction of the
 * process (one at a time), so the lease is far above the longest chunk; on Postgres, the default.
 */
export const leaseDuration = (s: Settings): Duration.DurationInput => (isEmbedded(s) ? "5 minutes" : "60 seconds")

/** The database: `DATABASE_URL`, else a fresh embedded PGlite (reported through `onEmbedded`). */
export const database = (
  s: Settings,
  onEmbedded: (embedded: Embedded.Embedded) => Effect.Effect<void> = () => Effect.void
) =>
  Option.match(s.databaseUrl, {
    onNone: () =>
      Embedded.layer({ maxConnections: s.maxConnections, idleInTransactionTimeoutMs: 5 * 60_000 }, onEmbedded),
    onSome: (url) => PgClient.layer({ url, maxConnections: s.maxConnections, applicationName: "monthly-billing" })
  })

/** The chunkwise store on the database in context. */
export const store = (
  s: Settings
): Layer.Layer<StateStore.StateStore, Errors.ConfigurationError | Errors.StoreUnavailable, SqlClient.SqlClient> =>
  PgStateStore.layer({ schema: s.storeSchema })

/** The queue `CHUNKWISE_QUEUE` names (the Postgres queue uses the database in context). */
export const queue = (
  s: Settings
): Layer.Layer<
  QueueAdapter.QueueAdapter,
  Errors.ConfigurationError | Errors.StoreUnavailable | Errors.QueueUnavailable | ConfigError.ConfigError,
  SqlClient.SqlClient
> => {
  switch (s.queue) {
    case "memory":
      return QueueAdapter.layerMemory()
    case "postgres":
      return PgQueue.layer({ schema: s.storeSchema, queue: "billing" })
    case "redis":
      return RedisQueue.layerConfig()
    case "sqs":
      return SqsQueue.layerConfig()
  }
}

/** The job as these settings configure it. */
export const job = (s: Settings): Job.Job<{ readonly month: string }, SqlClient.SqlClient> =>
  MonthlyBilling.make({
    schema: s.billingSchema,
    chunkSize: s.chunkSize,
    perWorker: s.concurrency,
    splitRecords: s.splitRecords
  })

/** Where the settings point, for people (the URL's password is never shown). */
export const describe = (s: Settings, embedded?: Embedded.Embedded) => {
  const db = Option.match(s.databaseUrl, {
    onNone: () => `embedded PGlite${embedded === undefined ? "" : ` on ${embedded.host}:${embedded.port}`}`,
    onSome: () => "Postgres at DATABASE_URL"
  })
  return `${db} · queue ${s.queue} · schemas ${s.billingSchema} + ${s.storeSchema} · ` +
    `${s.concurrency} companies at a time · ${s.chunkSize} records per chunk`
}
