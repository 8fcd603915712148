/**
 * Where a harness trial runs: a store and a queue, built fresh for every trial, and the worker timers
 * that suit how time passes there (`TestClock` in process, real time against a database or a broker).
 *
 * @since 0.1.0
 */
import { MemoryDatabase, PgQueue, PgStateStore, QueueAdapter, StateStore } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { type Duration, Effect, Layer } from "effect"

/** How time passes in an engine. */
export type Time = "test-clock" | "live"

/** Worker timers a trial uses. */
export interface Timers {
  readonly leaseDuration: Duration.DurationInput
  readonly pollInterval: Duration.DurationInput
  readonly feedInterval: Duration.DurationInput
  readonly sweepInterval: Duration.DurationInput
  readonly shutdownTimeout: Duration.DurationInput
  /** A killed worker's replacement starts after this long. */
  readonly restartDelay: Duration.DurationInput
  /** A trial that has not ended after this long fails as "did not finish". */
  readonly deadline: Duration.DurationInput
}

/** A store and queue for trials. `S` is what else the engine provides (e.g. `MemoryDatabase`). */
export interface Engine<S = never, E = never, R = never> {
  readonly name: string
  readonly time: Time
  /** A fresh store and queue for trial number `trial` (0 is the fault-free run). */
  readonly layer: (trial: number) => Layer.Layer<StateStore.StateStore | QueueAdapter.QueueAdapter | S, E, R>
  readonly timers: Timers
  /**
   * Ends, as their expiry would, the leases of a worker that was killed: live engines do it in the
   * store rather than wait for the clock (optional; in-memory time is driven by `TestClock`).
   */
  readonly expireLeases?: ((workerId: string) => Effect.Effect<void, unknown, S | R>) | undefined
}

/** Timers for `TestClock`: a 10 s lease costs nothing when time is simulated. */
export const testClockTimers: Timers = {
  leaseDuration: "10 seconds",
  // The in-memory queue wakes a waiting receive at once and the feeder runs whenever a unit ends, so
  // long intervals cost nothing and save simulated ticks.
  pollInterval: "1 second",
  feedInterval: "1 second",
  sweepInterval: "2 seconds",
  shutdownTimeout: "5 seconds",
  restartDelay: "1 second",
  deadline: "1 hour"
}

/** Timers for real time: short leases, so kills and zombies cost a second or two. */
export const liveTimers: Timers = {
  leaseDuration: "2 seconds",
  pollInterval: "50 millis",
  feedInterval: "100 millis",
  sweepInterval: "1 second",
  shutdownTimeout: "2 seconds",
  restartDelay: "100 millis",
  deadline: "60 seconds"
}

/**
 * The in-memory engine: store, `MemoryDatabase` (the job's writes) and queue, all driven by
 * `TestClock`, so a trial is deterministic and takes milliseconds. Run it inside `it.effect`.
 */
export const memory = (
  options: { readonly queue?: QueueAdapter.MemoryOptions | undefined; readonly timers?: Partial<Timers> } = {}
): Engine<MemoryDatabase.MemoryDatabase> => ({
  name: "memory",
  time: "test-clock",
  layer: () => Layer.merge(StateStore.layerMemory, QueueAdapter.layerMemory(options.queue ?? {})),
  timers: { ...testClockTimers, ...options.timers }
})

/** A queue for the Postgres engine: a name for reports and a fresh queue per trial. */
export interface QueueChoice<E, R> {
  readonly name: string
  readonly layer: (trial: number) => Layer.Layer<QueueAdapter.QueueAdapter, E, R>
}

/** Options of the Postgres engine. */
export interface PostgresOptions<E = never, R = never> {
  /** The store's schema (default `chunkwise`); trials share it, each in its own run. */
  readonly schema?: string | undefined
  /**
   * The queue: in memory (default, real time), the Postgres queue in the same schema, or any driver
   * (e.g. `{ name: "redis", layer: (trial) => RedisQueue.layer({ url, queue: \`trial-${trial}\` }) }`).
   */
  readonly queue?: "memory" | "postgres" | QueueChoice<E, R> | undefined
  readonly timers?: Partial<Timers> | undefined
}

/**
 * The Postgres engine: `PgStateStore` on the `SqlClient` in context (the job's own client, so `chunk`
 * transactions are real), with the in-memory or the Postgres queue, in real time with short leases.
 * Every trial is a new run of the job in the same schema; the harness's `reset` clears the job's tables.
 */
export const postgres = <QE = never, QR = never>(
  options: PostgresOptions<QE, QR> = {}
): Engine<never, unknown, SqlClient.SqlClient | QR> => {
  const schema = options.schema ?? "chunkwise"
  const queue = options.queue ?? "memory"
  const queueLayer = (trial: number): Layer.Layer<QueueAdapter.QueueAdapter, unknown, SqlClient.SqlClient | QR> =>
    queue === "memory"
      ? QueueAdapter.layerMemory()
      : queue === "postgres"
      ? PgQueue.layer({ schema, queue: `harness-${trial}`, pollInterval: "20 millis" })
      : queue.layer(trial)
  return {
    name: `postgres + ${typeof queue === "string" ? queue : queue.name} queue`,
    time: "live",
    layer: (trial) => Layer.merge(PgStateStore.layer({ schema }), queueLayer(trial)),
    timers: { ...liveTimers, ...options.timers },
    expireLeases: (workerId) =>
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) =>
          sql`update ${sql(schema)}.units set lease_expires_at = clock_timestamp()
            where lease_owner = ${workerId} and lease_expires_at > clock_timestamp()`
      )
  }
}
