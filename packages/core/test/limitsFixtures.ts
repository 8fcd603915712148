/**
 * Fixtures for resource-limit tests on Postgres: a job whose chunks load `primary-db` and record when
 * they ran (the database's clock, inside the chunk transaction, so the interval lies within the time
 * the chunk held its permits), a limiter that records every rate grant with its items, and the measures
 * computed from those rows: the most chunks at once, and the worst excess of grants over
 * `rate × time + burst`.
 */
import { SqlClient } from "@effect/sql"
import { type Duration, Effect, Layer, Logger, LogLevel, Schema } from "effect"
import { Job, PgQueue, PgResourceLimiter, PgStateStore, ResourceLimiter, Step } from "../src/index.js"
import { pgClient } from "./pg.js"

/** The app tables: chunk executions and rate grants. */
export const createLimitTables = (app: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      sql`create table ${sql(app)}.executions (
        id serial primary key, worker text not null, partition text not null, chunk integer not null,
        started_at timestamptz not null, ended_at timestamptz not null)`,
      sql`create table ${sql(app)}.grants (
        id serial primary key, resource text not null, granted_at float8 not null, waited_ms float8 not null,
        items integer not null)`
    ]))

/** Partition `pN` runs `chunks` chunks on `primary-db`; each records its interval and sleeps `delayMs`. */
export const limitedJob = (app: string, options: {
  readonly partitions: number
  readonly chunks: number
  readonly delayMs: number
  readonly perWorker?: number
}) =>
  Job.make({
    name: "limited-job",
    params: Schema.Struct({ label: Schema.String }),
    concurrency: { perWorker: options.perWorker ?? 4 },
    partitions: () => Array.from({ length: options.partitions }, (_, i) => `p${i}`),
    steps: (step) => [
      step.chunked("load", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: 1,
        transaction: "chunk",
        resources: ["primary-db"],
        process: ({ cursor, partition }) =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            const [row] = yield* sql<{ readonly id: number }>`
              insert into ${sql(app)}.executions (worker, partition, chunk, started_at, ended_at)
              values (current_setting('application_name'), ${partition.key}, ${cursor.next}, clock_timestamp(),
                clock_timestamp())
              returning id`
            if (options.delayMs > 0) yield* Effect.sleep(options.delayMs)
            yield* sql`update ${sql(app)}.executions set ended_at = clock_timestamp() where id = ${row!.id}`
            return cursor.next + 1 >= options.chunks ? Step.done : { next: cursor.next + 1 }
          })
      })
    ]
  })

/** The Postgres limiter, recording each rate grant in `<app>.grants` (outside any transaction). */
export const observedLimiter = (store: string, app: string, cacheTtl: Duration.DurationInput = "5 seconds") =>
  Layer.effect(
    ResourceLimiter.ResourceLimiter,
    Effect.gen(function*() {
      const limiter = yield* PgResourceLimiter.make({ schema: store, cacheTtl })
      const sql = yield* SqlClient.SqlClient
      return {
        ...limiter,
        acquire: (resources, holder, ttlMs, options) =>
          Effect.tap(
            limiter.acquire(resources, holder, ttlMs, options),
            (permits) =>
              Effect.forEach(permits.grants, (g) =>
                sql`insert into ${sql(app)}.grants (resource, granted_at, waited_ms, items)
                  values (${g.resource}, ${g.grantedAt}, ${g.waitedMs}, ${g.items})`.pipe(Effect.orDie), {
                discard: true
              })
          )
      } satisfies ResourceLimiter.ResourceLimiterShape
    })
  )

/** Everything one worker process needs, on its own pool named `name` (it shows in `executions.worker`). */
export const workerStack = (store: string, app: string, name: string, cacheTtl?: Duration.DurationInput) =>
  Layer.mergeAll(
    PgStateStore.layer({ schema: store }),
    PgQueue.layer({ schema: store }),
    observedLimiter(store, app, cacheTtl),
    Logger.minimumLogLevel(process.env["CW_TEST_LOGS"] ? LogLevel.Debug : LogLevel.None)
  ).pipe(Layer.provideMerge(pgClient({ maxConnections: 8, applicationName: name })))

/** Each execution with the number of executions running at its start (itself included), by the database's clock. */
export const overlaps = (app: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly worker: string; readonly startedAt: number; readonly running: number }>`
      select e.worker, (extract(epoch from e.started_at) * 1000)::float8 as "startedAt",
        (select count(*) from ${sql(app)}.executions o
         where o.started_at <= e.started_at and o.ended_at > e.started_at)::int as running
      from ${sql(app)}.executions e order by e.started_at`
  )

/** Rate grants recorded by `observedLimiter`, in epoch ms of the database's clock, with the items each took. */
export const grants = (app: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<{ readonly grantedAt: number; readonly waitedMs: number; readonly items: number }>`
      select granted_at as "grantedAt", waited_ms as "waitedMs", items from ${sql(app)}.grants order by granted_at`
  )
