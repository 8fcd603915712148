/**
 * Real-Postgres fixtures: every test gets its own store schema and app schema on the `test` database
 * at 127.0.0.1:5432 (user postgres), dropped afterwards. A missing server fails the test loudly.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, LogLevel, Schema } from "effect"
import { Job, PgQueue, PgStateStore, QueueAdapter, Runner, Step } from "../src/index.js"

export const pgClient = (options: Partial<PgClient.PgClientConfig> = {}) =>
  PgClient.layer({
    host: "127.0.0.1",
    port: 5432,
    username: "postgres",
    database: "test",
    maxConnections: 12,
    ...options
  })

let counter = 0
/** A fresh schema name for one test. */
export const freshSchema = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`

/** Creates the app schema with its table, and drops both schemas when the scope closes. */
export const withSchemas = (storeSchema: string, appSchema: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`create schema ${sql(appSchema)}`
      yield* sql`create table ${sql(appSchema)}.applied (item integer primary key, count integer not null)`
      yield* sql`create table ${sql(appSchema)}.completions (run_id text primary key, count integer not null)`
      yield* sql`create table ${sql(appSchema)}.summaries (partition text primary key, count integer not null)`
    }),
    () =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.all([
          sql`drop schema if exists ${sql(appSchema)} cascade`,
          sql`drop schema if exists ${sql(storeSchema)} cascade`
        ])).pipe(Effect.orDie)
  )

/** The Postgres store (over the `SqlClient` in context) and the in-memory queue, with quiet logs. */
export const pgEngine = (storeSchema: string) =>
  Layer.mergeAll(
    PgStateStore.layer({ schema: storeSchema }),
    QueueAdapter.layerMemory(),
    Logger.minimumLogLevel(process.env["CW_TEST_LOGS"] ? LogLevel.Debug : LogLevel.None)
  )

/** The Postgres store and the Postgres queue (over the `SqlClient` in context), with quiet logs. */
export const pgEngineWithPgQueue = (storeSchema: string) =>
  Layer.mergeAll(
    PgStateStore.layer({ schema: storeSchema }),
    PgQueue.layer({ schema: storeSchema }),
    Logger.minimumLogLevel(LogLevel.None)
  )

export const liveWorker = {
  leaseDuration: "2 seconds",
  pollInterval: "20 millis",
  feedInterval: "50 millis",
  sweepInterval: "500 millis",
  shutdownTimeout: "3 seconds"
} as const

/** Partition `pN` holds items N*1000 .. N*1000+size-1; each chunk upserts its items, counting applications. */
export const pgJob = (appSchema: string, options: {
  readonly partitions: number
  readonly size: number
  readonly chunkSize?: number
  readonly mode?: "chunk" | "none"
  readonly chunkDelay?: number
  readonly executions?: Array<string>
  /** Adds a second step: a single upsert per partition into `summaries`, in the same mode. */
  readonly summarise?: boolean
  /** Splits each partition's apply step into this many ranges of item indexes. */
  readonly split?: number | undefined
}) =>
  Job.make({
    name: "pg-test-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => Array.from({ length: options.partitions }, (_, i) => ({ key: `p${i}`, weight: i + 1 })),
    steps: (step) => [
      step.chunked("apply", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: options.chunkSize ?? 4,
        transaction: options.mode ?? "chunk",
        split: options.split === undefined ? undefined : {
          key: Schema.Number,
          ranges: () =>
            Effect.succeed(Step.rangesAt(
              Array.from(
                { length: options.split! - 1 },
                (_, i) => Math.round((i + 1) * options.size / options.split!)
              )
            ))
        },
        process: ({ attempt, chunkSeq, chunkSize, cursor, partition, range }) =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            options.executions?.push(`${partition.key}/${chunkSeq}/${attempt}`)
            const base = Number(partition.key.slice(1)) * 1000
            const from = Math.max(cursor.next, range.from ?? 0)
            const last = Math.min(range.to ?? options.size, options.size)
            const end = Math.min(from + chunkSize, last)
            yield* sql`
              insert into ${sql(appSchema)}.applied (item, count)
              select g, 1 from generate_series(${base + from}::int, ${base + end - 1}::int) g
              on conflict (item) do update set count = applied.count + 1`
            if (options.chunkDelay !== undefined) yield* Effect.sleep(options.chunkDelay)
            return Step.advance(end >= last ? Step.done : { next: end }, end - from)
          })
      }),
      ...(options.summarise === true ?
        [step.single("summarise", {
          transaction: options.mode ?? "chunk",
          run: ({ partition }) =>
            Effect.flatMap(SqlClient.SqlClient, (sql) =>
              sql`insert into ${sql(appSchema)}.summaries values (${partition.key}, 1)
                  on conflict (partition) do update set count = summaries.count + 1`)
        })] :
        [])
    ],
    onComplete: ({ runId }) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`insert into ${sql(appSchema)}.completions values (${runId}, 1)
            on conflict (run_id) do update set count = completions.count + 1`)
  })

/** Waits (real time) for the run to end, failing loudly after `seconds`. */
export const awaitRun = (runId: string, seconds = 60) =>
  Runner.awaitTerminal(runId, { pollInterval: "50 millis" }).pipe(
    Effect.timeoutFail({
      duration: `${seconds} seconds`,
      onTimeout: () => new Error(`run ${runId} did not end in ${seconds}s`)
    })
  )

/** The app table as { item: count }. */
export const applied = (appSchema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly item: number; readonly count: number }>`select item, count from ${
        sql(appSchema)
      }.applied order by item`,
      (rows) => Object.fromEntries(rows.map((r) => [String(r.item), r.count]))
    ))

export const expectedApplied = (partitions: number, size: number) => {
  const out: Record<string, number> = {}
  for (let p = 0; p < partitions; p++) for (let i = 0; i < size; i++) out[String(p * 1000 + i)] = 1
  return out
}
