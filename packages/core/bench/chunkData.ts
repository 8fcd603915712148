/**
 * What the chunk benchmarks share: their settings (from the environment), the data set, the chunk's SQL,
 * the database, and timing. PARTITIONS × ROWS rows in `<schema>.items`; a chunk copies the next CHUNK
 * rows of one partition into a target table.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import type { Connection } from "@effect/sql/SqlConnection"
import type { SqlError } from "@effect/sql/SqlError"
import { Deferred, Effect, Exit, FiberId, Layer, Logger, type LogLevel } from "effect"
import { type Job, PgStateStore, QueueAdapter, Runner, StateStore } from "../src/index.js"

export const PARTITIONS = Number(process.env["PARTITIONS"] ?? 16)
export const ROWS = Number(process.env["ROWS"] ?? 25_000)
export const CHUNK = Number(process.env["CHUNK"] ?? 1000)
export const CONCURRENCY = Number(process.env["CONCURRENCY"] ?? 4)
export const ROUNDS = Number(process.env["ROUNDS"] ?? 3)
/** Rounds run first and not counted: the JIT warms up on them (otherwise the first contender pays for it). */
export const WARMUP = Number(process.env["WARMUP"] ?? 1)
/** The contender that goes `i`-th in `round` (rounds from -WARMUP), so each takes its turn first. */
export const rotated = <A>(contenders: ReadonlyArray<A>, round: number, i: number): A =>
  contenders[(((round + i) % contenders.length) + contenders.length) % contenders.length]!
/** Chunks in a whole copy (each partition ends with one empty chunk). */
export const CHUNKS = PARTITIONS * Math.ceil((ROWS + 1) / CHUNK)

/** Copies the CHUNK rows of `partition` after id `after` into `target`; returns the last id copied and the count. */
export const copyChunk = (schema: string, target: string, partition: number, after: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly last: number | null; readonly n: number }>`
        with c as (
          select id, v from ${sql(schema)}.items where p = ${partition} and id > ${after} order by id limit ${CHUNK}),
        ins as (insert into ${sql(schema)}.${sql(target)} (id, v) select id, v * 2 from c)
        select max(id)::int as last, count(*)::int as n from c`,
      ([row]) => ({ last: row?.last ?? null, n: row?.n ?? 0 })
    ))

/** Creates the schema afresh: the items, one empty table per target, and the checkpoints table. */
export const createData = (schema: string, targets: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`drop schema if exists ${sql(schema)} cascade`
    yield* sql`create schema ${sql(schema)}`
    yield* sql`create table ${sql(schema)}.items (p int not null, id int not null, v int not null, primary key (p, id))`
    yield* sql`insert into ${sql(schema)}.items select p, i, i % 1000 from generate_series(0, ${PARTITIONS - 1}) p,
      generate_series(1, ${ROWS}) i`
    yield* sql`analyze ${sql(schema)}.items`
    for (const t of targets) yield* sql`create table ${sql(schema)}.${sql(t)} (id int not null, v int not null)`
    yield* sql`create table ${sql(schema)}.checkpoints (p int primary key, after_id int not null, chunks int not null)`
  })

/** Empties the targets and resets the checkpoints, before a round. */
export const resetData = (schema: string, targets: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const t of targets) yield* sql`truncate ${sql(schema)}.${sql(t)}`
    yield* sql`delete from ${sql(schema)}.checkpoints`
    yield* sql`insert into ${sql(schema)}.checkpoints select p, 0, 0 from generate_series(0, ${PARTITIONS - 1}) p`
  })

/** Runs `body` for every partition, CONCURRENCY at a time. */
export const forPartitions = <E, R>(body: (p: number) => Effect.Effect<void, E, R>) =>
  Effect.forEach(Array.from({ length: PARTITIONS }, (_, p) => p), body, { concurrency: CONCURRENCY, discard: true })

/**
 * A store-path contender's start: starts a run of `job` and calls `perUnit` with each partition unit,
 * claimed straight from the store as a worker would (CONCURRENCY at a time), with no Worker around it.
 */
export const forClaimedUnits = <E, R>(
  job: Job.Any,
  round: number,
  perUnit: (claim: StateStore.ClaimResult & { readonly _tag: "Claimed" }, runId: string) => Effect.Effect<void, E, R>
) =>
  Effect.gen(function*() {
    const store = yield* StateStore.StateStore
    const { runId } = yield* Runner.start(job, { round })
    const units = (yield* store.listUnits(runId, { limit: 100_000 })).filter((u) => u.kind === "partition")
    yield* Effect.forEach(units, (unit) =>
      Effect.gen(function*() {
        const claim = yield* store.claim({
          message: { v: 1, job: job.name, runId, unitId: unit.unitId, seq: 1_000_000_000 },
          workerId: "bench",
          leaseMs: 60_000,
          jobConcurrency: undefined
        })
        if (claim._tag !== "Claimed") return yield* Effect.die(new Error(`claim: ${JSON.stringify(claim)}`))
        yield* perUnit(claim, runId)
      }), { concurrency: CONCURRENCY, discard: true })
  })

/**
 * A transaction on `connection`, kept by the caller between transactions: BEGIN, `effect` with the
 * connection as its transaction connection (so `sql` statements in it use it), COMMIT or ROLLBACK. What
 * a hand-written loop that holds one connection per partition does in place of `withTransaction`.
 */
const onKeptConnection = <A, E, R>(connection: Connection, effect: Effect.Effect<A, E, R>) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      yield* connection.executeUnprepared("BEGIN", [], undefined)
      const exit = yield* Effect.exit(
        restore(Effect.provideService(effect, SqlClient.TransactionConnection, [connection, 0]))
      )
      yield* connection.executeUnprepared(Exit.isSuccess(exit) ? "COMMIT" : "ROLLBACK", [], undefined)
      return yield* exit
    })
  )

/**
 * A partition with no rows: a run over these does everything but copy (its one chunk per partition
 * finds nothing), which is what a contender costs per run rather than per chunk.
 */
export const emptyPartition = (p: number) => p + PARTITIONS

/**
 * The hand-written loop (D20): BEGIN; the chunk; optionally an UPDATE of a checkpoint row; COMMIT.
 * `keepConnection`: each partition holds one connection for all its chunks (as a chunkwise unit does)
 * instead of a `withTransaction` per chunk. `empty`: over partitions with no rows (`emptyPartition`).
 */
export const handLoop = (
  schema: string,
  target: string,
  withCheckpoint: boolean,
  keepConnection = false,
  empty = false
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* forPartitions((partition) =>
      Effect.gen(function*() {
        const p = empty ? emptyPartition(partition) : partition
        const transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R> =
          keepConnection
            ? ((connection) => (effect) => onKeptConnection(connection, effect))(yield* sql.reserve)
            : sql.withTransaction
        let after = 0
        while (true) {
          const { last } = yield* transaction(Effect.gen(function*() {
            const result = yield* copyChunk(schema, target, p, after)
            if (withCheckpoint) {
              yield* sql`update ${sql(schema)}.checkpoints set after_id = ${result.last ?? after}, chunks = chunks + 1
                where p = ${partition}`
            }
            return result
          }))
          if (last === null) return
          after = last
        }
      }).pipe(Effect.scoped)
    )
  })

/**
 * A run's end as its completion hook sees it, so a benchmark waits for the run without polling its
 * status (a poll is extra statements on the database the run is measured on). `hook` is the job's
 * `onComplete`; `awaitRun(runId)` resolves with the run's outcome.
 */
export const makeCompletions = () => {
  const ends = new Map<string, Deferred.Deferred<string>>()
  const endOf = (runId: string) =>
    Effect.sync(() => {
      let end = ends.get(runId)
      if (end === undefined) {
        end = Deferred.unsafeMake<string>(FiberId.none)
        ends.set(runId, end)
      }
      return end
    })
  return {
    hook: ({ outcome, runId }: { readonly runId: string; readonly outcome: string }) =>
      Effect.flatMap(endOf(runId), (end) => Deferred.succeed(end, outcome)),
    awaitRun: (runId: string) =>
      Effect.flatMap(
        endOf(runId),
        (end) =>
          Effect.flatMap(Deferred.await(end), (outcome) =>
            outcome === "succeeded" ? Effect.void : Effect.die(new Error(`bench run ${outcome}`)))
      )
  }
}

/** Wall time of `effect` in ms. */
export const time = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    yield* effect
    return performance.now() - start
  })

/** Wall time and this process's CPU time of `effect`, in ms: CPU per chunk is steadier than wall time on a shared machine. */
export const measure = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const cpu = process.cpuUsage()
    const wallMs = yield* time(effect)
    const { system, user } = process.cpuUsage(cpu)
    return { wallMs, cpuMs: (user + system) / 1000 }
  })

export const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** One contender's rounds, as `measure` returns them. */
export type Rounds = Array<{ readonly wallMs: number; readonly cpuMs: number }>

/** Prints one contender's median wall time, its ratio to `base`, this process's CPU per chunk, and every round. */
export const report = (name: string, rounds: Rounds, base: number, baseName: string) => {
  const m = median(rounds.map((r) => r.wallMs))
  const cpu = median(rounds.map((r) => r.cpuMs))
  console.log(
    `  ${name.padEnd(14)} ${m.toFixed(0).padStart(7)} ms  ${(m / base).toFixed(3)}x ${baseName}  ` +
      `${((m / CHUNKS) * CONCURRENCY).toFixed(2)} ms/chunk  node cpu ${((cpu / CHUNKS) * 1000).toFixed(0)} µs/chunk  ` +
      `[${rounds.map((r) => r.wallMs.toFixed(0)).join(", ")}]`
  )
}

/** The database the benchmarks run on (PGHOST, PGDATABASE), with room for CONCURRENCY + the worker's own. */
export const Database = PgClient.layer({
  host: process.env["PGHOST"] ?? "127.0.0.1",
  port: 5432,
  username: "postgres",
  database: process.env["PGDATABASE"] ?? "test",
  maxConnections: CONCURRENCY + 4
})

/**
 * Runs a benchmark's program on the Postgres store in `<schema>_store` (with the in-memory queue) over
 * `Database`, drops the store's schema once the worker and the store are closed, and exits 1 on failure.
 */
export const runOnStore = (
  schema: string,
  program: Effect.Effect<unknown, unknown, StateStore.StateStore | QueueAdapter.QueueAdapter | SqlClient.SqlClient>,
  logLevel: LogLevel.LogLevel
) =>
  Effect.runPromise(
    program.pipe(
      Effect.provide(Layer.merge(PgStateStore.layer({ schema: `${schema}_store` }), QueueAdapter.layerMemory())),
      Effect.zipRight(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql`drop schema if exists ${sql(`${schema}_store`)} cascade`)
      ),
      Effect.provide(Database),
      Logger.withMinimumLogLevel(logLevel)
    ) as Effect.Effect<unknown, unknown, never>
  ).catch((e) => {
    console.error(e)
    process.exit(1)
  })
