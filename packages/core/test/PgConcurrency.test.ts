/**
 * Job-wide concurrency on Postgres (D16): `concurrency.total` is enforced by slot rows claimed with the
 * unit, across workers; slots come back when units end; and a worker refuses a pool too small for its
 * concurrency.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Fiber, Layer, Schema, type Scope } from "effect"
import { Job, type QueueAdapter, Runner, type StateStore, Step, Worker } from "../src/index.js"
import { applied, awaitRun, expectedApplied, freshSchema, liveWorker, pgClient, pgEngine, withSchemas } from "./pg.js"

/** Partition `pN` upserts items N*1000 .. N*1000+size-1, `chunkSize` at a time, each chunk taking `delayMs`. */
const cappedJob = (app: string, options: { partitions: number; size: number; total: number; delayMs: number }) =>
  Job.make({
    name: "pg-capped-job",
    params: Schema.Struct({ label: Schema.String }),
    concurrency: { perWorker: 4, total: options.total },
    partitions: () => Array.from({ length: options.partitions }, (_, i) => ({ key: `p${i}`, weight: 1 })),
    steps: (step) => [
      step.chunked("apply", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: 2,
        transaction: "chunk",
        process: ({ chunkSize, cursor, partition }) =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            const base = Number(partition.key.slice(1)) * 1000
            const end = Math.min(cursor.next + chunkSize, options.size)
            yield* sql`
              insert into ${sql(app)}.applied (item, count)
              select g, 1 from generate_series(${base + cursor.next}::int, ${base + end - 1}::int) g
              on conflict (item) do update set count = applied.count + 1`
            yield* Effect.sleep(options.delayMs)
            return Step.advance(end >= options.size ? Step.done : { next: end }, end - cursor.next)
          })
      })
    ]
  })

/** Runs `body` with a fresh store schema and app schema, on a pool of `maxConnections`. */
const onPostgres = <A, E>(
  body: (
    store: string,
    app: string
  ) => Effect.Effect<A, E, StateStore.StateStore | SqlClient.SqlClient | QueueAdapter.QueueAdapter | Scope.Scope>,
  maxConnections = 12
) => {
  const store = freshSchema("cw_store")
  const app = freshSchema("cw_app")
  return Effect.gen(function*() {
    yield* withSchemas(store, app)
    return yield* body(store, app).pipe(Effect.scoped, Effect.provide(pgEngine(store)))
  }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient({ maxConnections }))))
}

describe("job-wide concurrency on Postgres (D16)", () => {
  it.live(
    "two workers with total 2 never lease more than 2 units at once, and do run 2 at once",
    () =>
      onPostgres((store, app) =>
        Effect.gen(function*() {
          const job = cappedJob(app, { partitions: 8, size: 6, total: 2, delayMs: 40 })
          const sql = yield* SqlClient.SqlClient
          // Sample the units table: live leases, by owner.
          const samples: Array<{ readonly leased: number; readonly owners: number }> = []
          const sampler = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
            const [row] = yield* sql<{ readonly leased: number; readonly owners: number }>`
            select count(*)::int as leased, count(distinct lease_owner)::int as owners from ${sql(store)}.units
            where status = 'leased' and lease_expires_at > clock_timestamp()`
            samples.push(row!)
            yield* Effect.sleep("5 millis")
          })))
          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "A" })
          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "B" })
          const { runId } = yield* Runner.start(job, { label: "capped" })
          const progress = yield* awaitRun(runId, 120)
          yield* Fiber.interrupt(sampler)

          expect(progress.run.status).toBe("succeeded")
          expect(yield* applied(app)).toEqual(expectedApplied(8, 6))
          const most = Math.max(...samples.map((s) => s.leased))
          expect(samples.length).toBeGreaterThan(20)
          expect(most).toBe(2)
          // Not serialised below the cap: two units ran at once in a fair share of the samples taken while
          // any ran (without the cap's slots freed promptly at each unit's end, this share collapses).
          const busy = samples.filter((s) => s.leased > 0)
          expect(busy.filter((s) => s.leased === 2).length / busy.length).toBeGreaterThan(0.25)
          // Every slot was given back when its unit ended; only `total` slot rows exist.
          const slots = yield* sql<{ readonly slot: number; readonly unitId: string | null }>`
          select slot, unit_id as "unitId" from ${sql(store)}.job_slots where job = ${job.name} order by slot`
          expect(slots).toEqual([{ slot: 1, unitId: null }, { slot: 2, unitId: null }])
        })
      ),
    { timeout: 180_000 }
  )

  it.live(
    "a slot held by a worker that died comes back when its lease expires",
    () =>
      onPostgres((store, app) =>
        Effect.gen(function*() {
          const job = cappedJob(app, { partitions: 3, size: 4, total: 1, delayMs: 10 })
          const sql = yield* SqlClient.SqlClient
          const { runId } = yield* Runner.start(job, { label: "dead-holder" })
          // A worker died holding the only slot for p0: its lease (and so the slot) expires in 1 s. Like any
          // claimed unit, p0 was sent (an hour ago, say).
          yield* sql`insert into ${sql(store)}.job_slots (job, slot) values (${job.name}, 1) on conflict do nothing`
          yield* sql`
          with u as (
            update ${sql(store)}.units set status = 'leased', fencing_token = fencing_token + 1, lease_owner = 'dead',
              lease_expires_at = clock_timestamp() + interval '1 second', enqueued_at = clock_timestamp() - interval '1 hour'
            where run_id = ${runId} and partition_key = 'p0'
            returning run_id, unit_id, fencing_token, lease_expires_at)
          update ${sql(store)}.job_slots j set run_id = u.run_id, unit_id = u.unit_id, fencing_token = u.fencing_token,
            expires_at = u.lease_expires_at
          from u where j.job = ${job.name} and j.slot = 1`
          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "A" })
          const progress = yield* awaitRun(runId, 120)
          expect(progress.run.status).toBe("succeeded")
          expect(yield* applied(app)).toEqual(expectedApplied(3, 4))
          const [slot] = yield* sql<{ readonly unitId: string | null }>`
          select unit_id as "unitId" from ${sql(store)}.job_slots where job = ${job.name}`
          expect(slot!.unitId).toBeNull()
        })
      ),
    { timeout: 180_000 }
  )

  it.live("a worker refuses to start on a pool smaller than its concurrency + 2, and names the fix", () =>
    onPostgres(
      (_store, app) =>
        Effect.gen(function*() {
          const job = cappedJob(app, { partitions: 1, size: 2, total: 2, delayMs: 0 })
          const refused = yield* Effect.exit(
            Worker.make({ jobs: [job], ...liveWorker, concurrency: 4, poolCheckTimeout: "1 second" })
          )
          expect(Exit.isFailure(refused)).toBe(true)
          const message = JSON.stringify(refused)
          expect(message).toContain("ConfigurationError")
          expect(message).toContain("needs a SqlClient pool of at least 6 connections")
          expect(message).toContain("served only 5 at once")
          // The pool is whole afterwards: a worker that fits starts, and the pool still serves 5 at once.
          yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 3 })
          const sql = yield* SqlClient.SqlClient
          yield* Effect.all(
            Array.from({ length: 5 }, () => sql.withTransaction(sql`select pg_sleep(0.05)`)),
            { concurrency: "unbounded" }
          ).pipe(Effect.timeout("10 seconds"))
        }),
      5
    ), { timeout: 60_000 })

  it.live(
    "workers of one process on one pool are held to the sum of their needs, each counted until it stops",
    () =>
      onPostgres(
        (_store, app) =>
          Effect.gen(function*() {
            const job = cappedJob(app, { partitions: 1, size: 2, total: 2, delayMs: 0 })
            // Pool of 8: a worker of concurrency 3 needs 5, one of 2 needs 4, 9 together.
            const refused = yield* Effect.scoped(Effect.gen(function*() {
              yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 3, workerId: "A" })
              return yield* Effect.exit(Worker.make({ jobs: [job], ...liveWorker, concurrency: 2, workerId: "B" }))
            }))
            expect(Exit.isFailure(refused)).toBe(true)
            const message = JSON.stringify(refused)
            expect(message).toContain("ConfigurationError")
            expect(message).toContain("1 other worker(s) of this process share that pool (concurrency 3")
            expect(message).toContain("the pool needs at least 9 connections, but it holds 8")
            // A worker whose start fails (limits declared, no ResourceLimiter provided) is not counted.
            const failed = yield* Effect.exit(
              Worker.make({ jobs: [job], ...liveWorker, concurrency: 2, workerId: "F", limits: { x: { inFlight: 1 } } })
            )
            expect(Exit.isFailure(failed)).toBe(true)
            // Worker A stopped with its scope: B fits alone, and then one of concurrency 2 beside it (8).
            yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 2, workerId: "B" })
            yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 2, workerId: "C" })
          }),
        8
      ),
    { timeout: 60_000 }
  )

  it.live(
    "of workers starting at once on one pool, those past its size are refused, each counting the ones before",
    () =>
      onPostgres(
        (_store, app) =>
          Effect.gen(function*() {
            const job = cappedJob(app, { partitions: 1, size: 2, total: 2, delayMs: 0 })
            // Pool of 8: three workers of concurrency 2 need 4 each; two fit, the third would need 12.
            const starts = yield* Effect.all(
              ["A", "B", "C"].map((workerId) =>
                Effect.either(Worker.make({ jobs: [job], ...liveWorker, concurrency: 2, workerId }))
              ),
              { concurrency: "unbounded" }
            )
            const refused = starts.filter(Either.isLeft).map((e) => e.left.message)
            expect(starts.filter(Either.isRight)).toHaveLength(2)
            expect(refused).toHaveLength(1)
            expect(refused[0]).toContain("2 other worker(s) of this process share that pool (concurrency 2, 2")
            expect(refused[0]).toContain("needs at least 12 connections, but it holds 8")
          }),
        8
      ),
    { timeout: 60_000 }
  )
})
