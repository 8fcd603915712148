import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schema, type Scope } from "effect"
import pg from "pg"
import { Job, PgStateStore, Probe, QueueAdapter, Runner, StateStore, Step, Worker } from "../src/index.js"
import { migrations } from "../src/internal/pgMigrations.js"
import { crashOnce } from "./fixtures.js"
import {
  applied,
  awaitRun,
  expectedApplied,
  freshSchema,
  liveWorker,
  pgClient,
  pgEngine,
  pgEngineWithPgQueue,
  pgJob,
  withSchemas
} from "./pg.js"

/** A pool for `workers` workers of `concurrency` each in this process: together they need the sum of `concurrency + 2`. */
const sharedPool = (workers: number, concurrency: number) => pgClient({ maxConnections: workers * (concurrency + 2) })

/** Runs `body` with a fresh store schema and app schema on real Postgres. */
const onPostgres = <A, E>(
  body: (
    app: string
  ) => Effect.Effect<A, E, StateStore.StateStore | SqlClient.SqlClient | QueueAdapter.QueueAdapter | Scope.Scope>,
  client = pgClient()
) => {
  const store = freshSchema("cw_store")
  const app = freshSchema("cw_app")
  return Effect.gen(function*() {
    yield* withSchemas(store, app)
    // Workers stop (inner scope) before the engine closes, and the engine before the schemas drop.
    return yield* body(app).pipe(Effect.scoped, Effect.provide(pgEngine(store)))
  }).pipe(Effect.scoped, Effect.provide(Layer.orDie(client)))
}

/**
 * A fresh store schema, dropped when the scope closes, holding run `r1` (running) and `count` units
 * `u00001`, `u00002`, ...: pending unless `status` says otherwise, of weight 1, or their number when
 * `weighted`.
 */
const storeWithRun = (
  prefix: string,
  count: number,
  options: { readonly status?: string; readonly weighted?: boolean } = {}
) =>
  Effect.gen(function*() {
    const schema = freshSchema(prefix)
    const sql = yield* SqlClient.SqlClient
    yield* Effect.addFinalizer(() => Effect.orDie(sql`drop schema if exists ${sql(schema)} cascade`))
    yield* PgStateStore.migrate({ schema })
    const s = sql(schema)
    yield* sql`insert into ${s}.runs (run_id, job, run_key, params, definition, fingerprint, status)
      values ('r1', 'j', 'k', '{}', '{}', 'f', 'running')`
    yield* sql`insert into ${s}.units (run_id, unit_id, job, kind, partition_key, weight, status)
      select 'r1', 'u' || lpad(g::text, 5, '0'), 'j', 'partition', g::text,
        case when ${options.weighted === true}::boolean then g else 1 end, ${options.status ?? "pending"}
      from generate_series(1, ${count}::int) g`
    return schema
  })

/**
 * `effect`'s result, in a transaction, with the rows of the store's units table it read (by index and
 * by scan): the difference of this connection's unreported reads, which add up across transactions.
 */
const readingUnits = <A, E, R>(schema: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const reads = Effect.map(
      sql<{ readonly rows: number }>`
        select (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::int as rows
        from pg_stat_xact_user_tables where schemaname = ${schema} and relname = 'units'`,
      (rows) => rows[0]?.rows ?? 0
    )
    return yield* sql.withTransaction(Effect.gen(function*() {
      const before = yield* reads
      const result = yield* effect
      return { result, rowsRead: (yield* reads) - before }
    }))
  })

describe("PgStateStore on real Postgres", () => {
  it.live("runs every partition and applies every item exactly once; the hook commits once", () =>
    onPostgres((app) =>
      Effect.gen(function*() {
        const job = pgJob(app, { partitions: 4, size: 10 })
        yield* Worker.make({ jobs: [job], ...liveWorker })
        const { runId } = yield* Runner.start(job, { label: "all" })
        const progress = yield* awaitRun(runId)
        expect(progress.run.status).toBe("succeeded")
        expect(progress.items).toBe(40)
        expect(yield* applied(app)).toEqual(expectedApplied(4, 10))
        const sql = yield* SqlClient.SqlClient
        expect(yield* sql`select count from ${sql(app)}.completions`).toEqual([{ count: 1 }])
        const store = yield* StateStore.StateStore
        const units = yield* store.listUnits(runId, { limit: 10 })
        for (const unit of units.filter((u) => u.kind === "partition")) {
          expect(yield* store.ledger(runId, unit.unitId)).toHaveLength(3)
        }
      })
    ))

  it.live("never applies a chunk twice when the worker dies at any point of its life", () =>
    Effect.gen(function*() {
      for (const point of ["before-effect", "after-effect", "after-commit", "before-ack"] as const) {
        yield* onPostgres((app) =>
          Effect.gen(function*() {
            const job = pgJob(app, { partitions: 2, size: 8 })
            const crash = crashOnce((p, info) =>
              p === point && (p === "before-ack" || (info.step === "apply" && info.chunkSeq === 1))
            )
            yield* Worker.make({ jobs: [job], ...liveWorker, leaseDuration: "1 second" }).pipe(
              Effect.provideService(Probe.Probe, crash.probe)
            )
            const { runId } = yield* Runner.start(job, { label: point })
            const progress = yield* awaitRun(runId)
            expect(crash.crashed(), point).toBe(true)
            expect(progress.run.status, point).toBe("succeeded")
            expect(yield* applied(app), point).toEqual(expectedApplied(2, 8))
          })
        )
      }
    }), 120_000)

  it.live(
    "a zombie whose lease expired cannot commit: its writes roll back",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          const executions: Array<string> = []
          const job = pgJob(app, { partitions: 1, size: 8, chunkDelay: 2500, executions })
          // The zombie's first heartbeat hangs past its lease (a long GC pause, a network partition).
          let paused = false
          const frozen = {
            at: (point: Probe.Point) =>
              point === "heartbeat" && !paused
                ? Effect.suspend(() => (paused = true, Effect.sleep("3 seconds")))
                : Effect.void
          }
          yield* Worker.make({ jobs: [job], ...liveWorker, leaseDuration: "1 second", workerId: "zombie" }).pipe(
            Effect.provideService(Probe.Probe, Probe.make(frozen))
          )
          const { runId } = yield* Runner.start(job, { label: "zombie" })
          yield* Effect.sleep("300 millis")
          yield* Worker.make({ jobs: [job], ...liveWorker, leaseDuration: "1 second", workerId: "healthy" })
          const progress = yield* awaitRun(runId, 20)
          expect(progress.run.status).toBe("succeeded")
          expect(executions.filter((e) => e.startsWith("p0/0/")).length).toBeGreaterThanOrEqual(2)
          expect(yield* applied(app)).toEqual(expectedApplied(1, 8))
          const failures = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listFailures(runId, { limit: 10 }))
          expect(failures.map((f) => [f.errorTag, f.outcome])).toContainEqual(["LeaseLost", "abandoned"])
        })
      ),
    60_000
  )

  it.live(
    "several workers racing finish with the same state as one, and the hook commits once",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          const job = pgJob(app, { partitions: 16, size: 12, chunkSize: 3 })
          for (const id of ["a", "b", "c"]) yield* Worker.make({ jobs: [job], ...liveWorker, workerId: id })
          const { runId } = yield* Runner.start(job, { label: "race" })
          expect((yield* awaitRun(runId)).run.status).toBe("succeeded")
          expect(yield* applied(app)).toEqual(expectedApplied(16, 12))
          const sql = yield* SqlClient.SqlClient
          expect(yield* sql`select count from ${sql(app)}.completions`).toEqual([{ count: 1 }])
        }), sharedPool(3, 4)),
    60_000
  )

  it.live(
    "finishes a run of many small units on several workers without the sweeper; the hook commits once",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          // Unit ends race all the time here; completion must come from the ends themselves (D7), with no
          // sweep to repair a missed check.
          const job = pgJob(app, { partitions: 150, size: 2, chunkSize: 2 })
          for (const workerId of ["a", "b", "c"]) {
            yield* Worker.make({ jobs: [job], ...liveWorker, sweepInterval: "1 hour", concurrency: 4, workerId })
          }
          const { runId } = yield* Runner.start(job, { label: "many" })
          const progress = yield* awaitRun(runId, 30)
          expect(progress.run.status).toBe("succeeded")
          expect(yield* applied(app)).toEqual(expectedApplied(150, 2))
          const sql = yield* SqlClient.SqlClient
          expect(yield* sql`select count from ${sql(app)}.completions`).toEqual([{ count: 1 }])
        }), sharedPool(3, 4)),
    60_000
  )

  it.live(
    "runs a single chunk-mode step in the last transaction of the step before it; its failure stays its own",
    () =>
      Effect.gen(function*() {
        for (const failing of [false, true]) {
          yield* onPostgres((app) =>
            Effect.gen(function*() {
              const tx = { apply: [] as Array<string>, total: [] as Array<string> }
              const job = Job.make({
                name: "pg-fused",
                params: Schema.Struct({}),
                partitions: () => ["p0"],
                steps: (step) => [
                  step.chunked("apply", {
                    cursor: Schema.Number,
                    start: 0,
                    chunkSize: 1,
                    transaction: "chunk",
                    process: ({ cursor }) =>
                      Effect.gen(function*() {
                        const sql = yield* SqlClient.SqlClient
                        const [row] = yield* sql<{ readonly tx: string }>`
                        insert into ${sql(app)}.applied (item, count) values (${cursor}, 1)
                        on conflict (item) do update set count = applied.count + 1
                        returning txid_current()::text as tx`
                        tx.apply.push(row!.tx)
                        return Step.advance(cursor + 1 >= 3 ? Step.done : cursor + 1, 1)
                      })
                  }),
                  step.single("total", {
                    transaction: "chunk",
                    run: () =>
                      Effect.gen(function*() {
                        const sql = yield* SqlClient.SqlClient
                        const [row] = yield* sql<{ readonly tx: string }>`
                        insert into ${sql(app)}.summaries values ('p0', 1)
                        on conflict (partition) do update set count = summaries.count + 1
                        returning txid_current()::text as tx`
                        tx.total.push(row!.tx)
                        if (failing) return yield* Effect.fail(new Error("the total does not add up"))
                      })
                  })
                ]
              })
              yield* Worker.make({ jobs: [job], ...liveWorker })
              const { runId } = yield* Runner.start(job, {})
              const progress = yield* awaitRun(runId, 20)
              const sql = yield* SqlClient.SqlClient
              const applied = yield* sql`select item, count from ${sql(app)}.applied order by item`
              const summaries = yield* sql`select partition, count from ${sql(app)}.summaries`
              if (!failing) {
                expect(progress.run.status).toBe("succeeded")
                // One transaction for the last chunk and the step after it: three chunks, three transactions.
                expect(tx.total).toEqual([tx.apply[2]])
                expect(applied).toEqual([0, 1, 2].map((item) => ({ item, count: 1 })))
                expect(summaries).toEqual([{ partition: "p0", count: 1 }])
                const store = yield* StateStore.StateStore
                const [unit] = (yield* store.listUnits(runId, { limit: 10 })).filter((u) => u.kind === "partition")
                // Still one checkpoint and ledger row per chunk and per step.
                expect(yield* store.ledger(runId, unit!.unitId)).toHaveLength(4)
              } else {
                // The failing step rolled the last chunk back with it; the chunk was redone alone and kept,
                // and the step failed on its own (unclassified: not retried), its writes rolled back.
                expect(progress.run.status).toBe("failed")
                expect(tx.apply).toHaveLength(4)
                expect(tx.total).toHaveLength(2)
                expect(tx.total[1]).not.toBe(tx.apply[3])
                expect(applied).toEqual([0, 1, 2].map((item) => ({ item, count: 1 })))
                expect(summaries).toEqual([])
                const [failure] = yield* Effect.flatMap(
                  StateStore.StateStore,
                  (st) => st.listFailures(runId, { limit: 10 })
                )
                expect(failure).toMatchObject({ errorTag: "Unclassified", step: "total" })
              }
            })
          )
        }
      }),
    60_000
  )

  it.live(
    "a fused step that breaks its transaction (a caught SQL error) fails as itself, TransactionAborted, not the store",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          const calls = { apply: 0, total: 0 }
          const job = Job.make({
            name: "pg-fused-aborted",
            params: Schema.Struct({}),
            partitions: () => ["p0"],
            steps: (step) => [
              step.chunked("apply", {
                cursor: Schema.Number,
                start: 0,
                chunkSize: 1,
                transaction: "chunk",
                process: ({ cursor }) =>
                  Effect.gen(function*() {
                    calls.apply += 1
                    const sql = yield* SqlClient.SqlClient
                    yield* sql`insert into ${sql(app)}.applied (item, count) values (${cursor}, 1)
                      on conflict (item) do update set count = applied.count + 1`
                    return Step.advance(cursor + 1 >= 2 ? Step.done : cursor + 1, 1)
                  })
              }),
              step.single("total", {
                transaction: "chunk",
                run: () =>
                  Effect.gen(function*() {
                    calls.total += 1
                    const sql = yield* SqlClient.SqlClient
                    // The step's bug: a failed statement whose error it swallows leaves the transaction
                    // aborted, so the commit after it is refused (SQLSTATE 25P02).
                    yield* sql`select 1 / 0`.pipe(Effect.ignore)
                  })
              })
            ]
          })
          yield* Worker.make({ jobs: [job], ...liveWorker })
          const { runId } = yield* Runner.start(job, {})
          const progress = yield* awaitRun(runId, 20)
          const sql = yield* SqlClient.SqlClient
          expect(progress.run.status).toBe("failed")
          // The last chunk ran with the step, was rolled back with it, and was redone alone: kept once.
          expect(calls).toEqual({ apply: 3, total: 2 })
          expect(yield* sql`select item, count from ${sql(app)}.applied order by item`).toEqual(
            [0, 1].map((item) => ({ item, count: 1 }))
          )
          // One failure, the step's own, with its runbook; nothing says the store was unavailable.
          const failures = yield* Effect.flatMap(StateStore.StateStore, (s) => s.listFailures(runId, { limit: 10 }))
          expect(failures).toHaveLength(1)
          expect(failures[0]).toMatchObject({ step: "total", errorTag: "TransactionAborted", outcome: "failed" })
        })
      ),
    60_000
  )

  it.live("works on a client with name transforms and a custom int8 parser (D15)", () =>
    onPostgres(
      (app) =>
        Effect.gen(function*() {
          const job = pgJob(app, { partitions: 2, size: 5 })
          yield* Worker.make({ jobs: [job], ...liveWorker })
          const { runId } = yield* Runner.start(job, { label: "transforms" })
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("succeeded")
          expect(progress.items).toBe(10)
        }),
      pgClient({
        transformResultNames: (name) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
        transformQueryNames: (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
        types: {
          getTypeParser: ((oid: number, format?: "text" | "binary") =>
            oid === 20
              ? (v: string) => BigInt(v)
              : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser
        }
      })
    ), 60_000)

  it.live("runs end to end with the Postgres queue too, crashes included", () =>
    Effect.gen(function*() {
      const store = freshSchema("cw_store")
      const app = freshSchema("cw_app")
      yield* withSchemas(store, app)
      yield* Effect.gen(function*() {
        const job = pgJob(app, { partitions: 6, size: 9, chunkSize: 3 })
        let crashes = 0
        const probe = {
          at: (p: Probe.Point, info: Probe.Info) =>
            p === "after-commit" && info.chunkSeq === 1 && crashes < 2
              ? Effect.suspend(() => (crashes += 1, Effect.interrupt))
              : Effect.void
        }
        for (const id of ["q1", "q2"]) {
          yield* Worker.make({ jobs: [job], ...liveWorker, leaseDuration: "1 second", workerId: id }).pipe(
            Effect.provideService(Probe.Probe, Probe.make(probe))
          )
        }
        const { runId } = yield* Runner.start(job, { label: "pg-queue" })
        expect((yield* awaitRun(runId, 30)).run.status).toBe("succeeded")
        expect(crashes).toBe(2)
        expect(yield* applied(app)).toEqual(expectedApplied(6, 9))
        const depth = yield* Effect.flatMap(QueueAdapter.QueueAdapter, (q) => q.depth)
        expect(depth.dead).toBe(0)
      }).pipe(
        Effect.scoped,
        Effect.provide(pgEngineWithPgQueue(store))
      )
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))), 60_000)

  it.live(
    "classifies SQL errors by SQLSTATE: a constraint violation fails the partition once, recorded",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          let runs = 0
          const job = Job.make({
            name: "pg-rejects",
            params: Schema.Struct({}),
            partitions: () => ["bad", "good"],
            steps: (step) => [
              step.single("insert", {
                transaction: "chunk",
                run: ({ partition }) =>
                  Effect.flatMap(SqlClient.SqlClient, (sql) => {
                    runs += 1
                    return partition.key === "bad"
                      ? sql`insert into ${sql(app)}.applied (item, count) values (1, null)`
                      : sql`insert into ${sql(app)}.applied (item, count) values (2, 1)`
                  })
              })
            ]
          })
          yield* Worker.make({ jobs: [job], ...liveWorker })
          const { runId } = yield* Runner.start(job, {})
          const progress = yield* awaitRun(runId, 20)
          expect(progress.run.status).toBe("failed")
          expect(progress.units).toMatchObject({ succeeded: 1, failed: 1 })
          expect(runs).toBe(2) // DatabaseRejected is never retried
          const [failure] = yield* Effect.flatMap(StateStore.StateStore, (st) => st.listFailures(runId, { limit: 10 }))
          expect(failure).toMatchObject({ errorTag: "DatabaseRejected", runbookId: "chunkwise-database-rejected" })
          expect(yield* applied(app)).toEqual({ "2": 1 })
        })
      ),
    30_000
  )

  it.live(
    "refuses a chunk step whose SqlClient reaches another database than the store's (D4)",
    () =>
      Effect.gen(function*() {
        const schema = freshSchema("cw_store")
        const job = pgJob("unused", { partitions: 1, size: 1 })
        const store = PgStateStore.layer({ schema }).pipe(Layer.provide(pgClient()))
        const error = yield* Effect.flip(
          Effect.scoped(Worker.make({ jobs: [job] })).pipe(
            Effect.provide(Layer.mergeAll(store, QueueAdapter.layerMemory(), pgClient({ database: "postgres" })))
          )
        )
        expect(error._tag).toBe("ConfigurationError")
        expect(error.message).toMatch(/reaches postgres@.* while the state store writes to test@/)
        yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql`drop schema ${sql(schema)} cascade`).pipe(
          Effect.provide(pgClient())
        )
      }).pipe(Effect.orDie),
    30_000
  )

  it.live("survives its database connections dropping again and again mid-run; nothing lost or doubled", () => {
    // Like a database restart: every connection the workers hold is killed, over and over, for 3 s.
    const name = `cw-drop-${process.pid}-${Date.now()}`
    return onPostgres(
      (app) =>
        Effect.gen(function*() {
          const job = pgJob(app, { partitions: 6, size: 12, chunkSize: 2, chunkDelay: 30 })
          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "a" })
          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "b" })
          const { runId } = yield* Runner.start(job, { label: "drops" })
          const killed = yield* Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            let killed = 0
            for (let i = 0; i < 10; i++) {
              yield* Effect.sleep("300 millis")
              const rows = yield* sql`
                select pg_terminate_backend(pid) from pg_stat_activity
                where application_name = ${name} and pid <> pg_backend_pid()`
              killed += rows.length
            }
            return killed
          }).pipe(Effect.provide(pgClient({ applicationName: `${name}-killer` })))
          expect(killed).toBeGreaterThan(0)
          const progress = yield* awaitRun(runId, 60)
          expect(progress.run.status).toBe("succeeded")
          expect(yield* applied(app)).toEqual(expectedApplied(6, 12))
        }),
      pgClient({ applicationName: name })
    )
  }, 90_000)

  it.live("migrations are safe when many workers start at once, and a newer schema is refused", () =>
    Effect.gen(function*() {
      const schema = freshSchema("cw_migrate")
      const sql = yield* SqlClient.SqlClient
      yield* Effect.all(Array.from({ length: 6 }, () => PgStateStore.migrate({ schema })), { concurrency: "unbounded" })
      const rows = yield* sql`select migration_id from ${sql(schema)}.chunkwise_migrations`
      const known = Object.keys(migrations(schema)).map((name) => ({ migration_id: Number.parseInt(name) }))
      expect(rows).toEqual(known)
      expect(known.length).toBeGreaterThanOrEqual(8)
      yield* sql`insert into ${sql(schema)}.chunkwise_migrations (migration_id, name) values (99, 'future')`
      const error = yield* Effect.flip(PgStateStore.migrate({ schema }))
      expect(error.message).toContain("newer than this code knows")
      const bad = yield* Effect.flip(PgStateStore.migrate({ schema: "Bad-Name" }))
      expect(bad.message).toContain("lower-case identifier")
      yield* sql`drop schema ${sql(schema)} cascade`
    }).pipe(Effect.provide(Layer.orDie(pgClient()))))
})

describe("the completion check on Postgres", () => {
  it.live("reads the run's open units through their partial indexes, not every unit of the run", () =>
    Effect.gen(function*() {
      // A run of 3,000 partitions whose last (in key order) is the only one still open.
      const schema = yield* storeWithRun("cw_check", 3000, { status: "succeeded" })
      const sql = yield* SqlClient.SqlClient
      const s = sql(schema)
      yield* sql`update ${s}.units set status = 'pending' where unit_id = 'u03000'`
      const check = Effect.map(
        readingUnits(schema, sql<{ readonly unitId: string | null }>`select ${s}.try_finalize('r1') as "unitId"`),
        ({ result, rowsRead }) => ({ finalized: result[0]?.unitId ?? null, rowsRead })
      )
      const open = yield* check
      expect(open.finalized).toBeNull()
      // Walking the run's units, as the check did before migration 11, reads all 3,000 of them.
      expect(open.rowsRead).toBeLessThan(10)
      yield* sql`update ${s}.units set status = 'succeeded' where unit_id = 'u03000'`
      const done = yield* check
      expect(done.finalized).toBe("finalize-1")
      expect(done.rowsRead).toBeLessThan(10)
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))))
})

describe("the claim and the commit on Postgres", () => {
  it.live("reach their unit by its primary key, not by walking the run's live units", () =>
    Effect.gen(function*() {
      // A run of 3,000 partitions, all of them pending: the start of a large run.
      const schema = yield* storeWithRun("cw_claim", 3000)
      const sql = yield* SqlClient.SqlClient
      const s = sql(schema)
      /** `statement`'s rows, with the rows of the units table it read. */
      const reading = <A>(statement: Effect.Effect<ReadonlyArray<A>, unknown>) =>
        Effect.map(readingUnits(schema, statement), ({ result, rowsRead }) => ({ rows: result, rowsRead }))
      // Twenty claims, then their commits, on one connection: PL/pgSQL settles on its cached (generic)
      // plans, and twenty units are leased at once while the commits run.
      const units = Array.from({ length: 20 }, (_, i) => `u${String(i + 1).padStart(5, "0")}`)
      for (const unit of units) {
        const claim = yield* reading(sql<{ readonly token: string }>`
          select fencing_token::text as token from ${s}.claim_unit('r1', ${unit}, 0, 'w', 60000, 'j', null, ${`c-${unit}`})`)
        expect(claim.rows, unit).toEqual([{ token: "1" }])
        expect(claim.rowsRead, unit).toBeLessThan(5)
      }
      for (const unit of units) {
        const commit = yield* reading(sql<{ readonly status: string | null }>`
          select ${s}.commit_chunk('r1', ${unit}, 1, 'w', 0, 0, 0, 1, '{"at":1}'::jsonb, 5, false, ${`k-${unit}`},
            'apply', 60000) as status`)
        expect(commit.rows, unit).toEqual([{ status: "running" }])
        expect(commit.rowsRead, unit).toBeLessThan(5)
      }
      // And a claim or commit that does not hold still says so: a stale token commits nothing.
      const stale = yield* reading(sql<{ readonly status: string | null }>`
        select ${s}.commit_chunk('r1', 'u00001', 0, 'w', 0, 1, 0, 2, null, 0, false, 'k', 'apply', 60000) as status`)
      expect(stale.rows).toEqual([{ status: null }])
      const taken = yield* reading(
        sql`select * from ${s}.claim_unit('r1', 'u00001', 0, 'w2', 60000, 'j', null, 'c-w2')`
      )
      expect(taken.rows).toEqual([])
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient({ maxConnections: 1 })))))
})

describe("a claim by a worker of the version before on Postgres", () => {
  it.live("clears the unit's claim id, so a repeat of the claim before it never gets its lease", () =>
    Effect.gen(function*() {
      const schema = yield* storeWithRun("cw_claim_old", 1)
      const sql = yield* SqlClient.SqlClient
      const s = sql(schema)
      const token = (rows: ReadonlyArray<{ readonly token: string }>) => rows.map((r) => r.token)
      const lost = yield* sql<{ readonly token: string }>`
        select fencing_token::text as token from ${s}.claim_unit('r1', 'u00001', 0, 'w', 60000, 'j', null, 'k')`
      expect(token(lost)).toEqual(["1"])
      yield* sql`update ${s}.units set lease_expires_at = clock_timestamp() - interval '1 second'`
      // The same worker id on the version before (7 arguments): a new lease, its crash counted.
      const old = yield* sql<{ readonly token: string }>`
        select fencing_token::text as token from ${s}.claim_unit('r1', 'u00001', 0, 'w', 60000, 'j', null)`
      expect(token(old)).toEqual(["2"])
      const repeat = yield* sql`select * from ${s}.claim_unit('r1', 'u00001', 0, 'w', 60000, 'j', null, 'k')`
      expect(repeat).toEqual([])
      const [unit] = yield* sql<{ readonly claimId: string | null; readonly crashes: number }>`
        select claim_id as "claimId", crashes_since_progress as crashes from ${s}.units`
      expect(unit).toEqual({ claimId: null, crashes: 1 })
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient({ maxConnections: 1 })))))
})

describe("a run started by a worker of the version before migration 23 on Postgres", () => {
  it.live("holds a re-run of its params back, though it has no base key of its own, and is held back by one", () =>
    Effect.gen(function*() {
      // Run r1 of job j, key k, running, inserted as a worker before migration 23 does: no base key.
      const schema = yield* storeWithRun("cw_base_old", 1)
      const store = yield* PgStateStore.make({ schema, migrate: false })
      const rerun: StateStore.NewRun = {
        runId: "r2",
        job: "j",
        runKey: "k#rerun:again",
        baseKey: "k",
        params: {},
        definition: { version: 1, steps: [] },
        fingerprint: "f"
      }
      expect(yield* Effect.flip(store.createRun(rerun))).toMatchObject({
        _tag: "RunAlreadyActive",
        activeRunId: "r1",
        activeStatus: "running"
      })
      const sql = yield* SqlClient.SqlClient
      yield* sql`update ${sql(schema)}.runs set status = 'failed'`
      yield* sql`update ${sql(schema)}.units set status = 'failed'`
      expect((yield* store.createRun(rerun)).created).toBe(true)
      // Nor does it re-open beside the re-run it let start.
      const operator = { actor: "test", reason: "test" }
      expect(yield* Effect.flip(store.retry("r1", { dryRun: true }, operator))).toMatchObject({
        _tag: "RunAlreadyActive",
        activeRunId: "r2"
      })
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))))
})

describe("a unit's end on Postgres", () => {
  it.live("does not wait for another unit's end while a pending unit is left to check completion after both", () =>
    Effect.gen(function*() {
      const schema = yield* storeWithRun("cw_end", 4)
      const sql = yield* SqlClient.SqlClient
      const s = sql(schema)
      const connect = Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new pg.Client({ host: "127.0.0.1", port: 5432, user: "postgres", database: "test" })
          await client.connect()
          return client
        }),
        (client) => Effect.promise(() => client.end())
      )
      const [a, b, c] = [yield* connect, yield* connect, yield* connect]
      const query = (client: pg.Client, text: string) =>
        Effect.tryPromise(() => client.query(text)).pipe(Effect.map((r) => r.rows as Array<Record<string, unknown>>))
      const claim = (client: pg.Client, unit: string) =>
        query(
          client,
          `select fencing_token::text as token from ${schema}.claim_unit('r1', '${unit}', 0, 'w', 60000, 'j', null, 'c-${unit}')`
        )
      const end = (client: pg.Client, unit: string) =>
        query(
          client,
          `select ${schema}.commit_chunk('r1', '${unit}', 1, 'w', 0, 0, 1, 0, null, 0, true, 'end-${unit}', 'go', 60000) as status`
        ).pipe(Effect.map((rows) => rows[0]?.["status"]))
      expect(yield* claim(a, "u00001")).toEqual([{ token: "1" }])
      expect(yield* claim(a, "u00002")).toEqual([{ token: "1" }])
      // Two units end at once, each in its own open transaction; the second must not queue behind the first.
      yield* query(a, "begin")
      expect(yield* end(a, "u00001")).toBe("running")
      yield* query(b, "begin")
      yield* query(b, "set local lock_timeout = '500ms'")
      expect(yield* end(b, "u00002")).toBe("running")
      // Each holds a pending unit as its witness: that unit cannot be claimed until both ends are visible.
      yield* query(c, "set lock_timeout = '300ms'")
      const claims = yield* Effect.all(["u00003", "u00004"].map((u) => Effect.either(claim(c, u))))
      expect(claims.some((r) => r._tag === "Left")).toBe(true)
      yield* query(a, "commit")
      yield* query(b, "commit")
      // The remaining units run and end; the last end sees every other end and finalizes the run.
      for (const unit of ["u00003", "u00004"]) {
        const left = (yield* query(c, `select status from ${schema}.units where unit_id = '${unit}'`))[0]?.["status"]
        if (left === "pending") expect(yield* claim(c, unit)).toEqual([{ token: "1" }])
      }
      expect(yield* end(c, "u00003")).toBe("running")
      expect(yield* end(c, "u00004")).toBe("finalizing")
      expect(yield* sql`select unit_id from ${s}.units where kind = 'finalize'`).toEqual([{ unit_id: "finalize-1" }])
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))))
})

describe("the feeder on Postgres", () => {
  it.live("reads the next units to send and the units in flight, not every live unit of the run", () =>
    Effect.gen(function*() {
      const schema = yield* storeWithRun("cw_feed", 3000, { weighted: true })
      const sql = yield* SqlClient.SqlClient
      const s = sql(schema)
      return yield* Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const feed = (maxOutstanding = 10) =>
          Effect.map(
            readingUnits(schema, store.feed({ maxOutstanding, redeliverAfterMs: 60_000 })),
            ({ result, rowsRead }) => ({ units: result.map((m) => m.unitId), rowsRead })
          )
        const first = yield* feed()
        expect(first.units).toEqual(Array.from({ length: 10 }, (_, i) => `u0${3000 - i}`))
        // Sorting every live unit, as the feeder did before migration 15, reads all 3,000.
        expect(first.rowsRead).toBeLessThan(100)
        // Ten in flight, none stale: nothing more to send, and still no walk over the run.
        const full = yield* feed()
        expect(full.units).toEqual([])
        expect(full.rowsRead).toBeLessThan(100)
        // A unit made pending by a retry has no send time; claimed through its old message, it gets one,
        // so once its worker dies and its message goes stale the feeder sends it again.
        yield* sql`update ${s}.units set enqueued_at = null where unit_id = 'u03000'`
        yield* sql`select * from ${s}.claim_unit('r1', 'u03000', 1, 'w', 60000, 'j', null, 'c-u03000')`
        const [claimed] = yield* sql<{ readonly sent: boolean }>`
          select enqueued_at is not null as sent from ${s}.units where unit_id = 'u03000'`
        expect(claimed!.sent).toBe(true)
        yield* sql`update ${s}.units set lease_expires_at = clock_timestamp() - interval '1 second',
          enqueued_at = clock_timestamp() - interval '1 hour' where unit_id = 'u03000'`
        expect((yield* feed()).units).toEqual(["u03000"])
      }).pipe(Effect.provide(PgStateStore.layer({ schema })))
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient({ maxConnections: 1 })))))
})
