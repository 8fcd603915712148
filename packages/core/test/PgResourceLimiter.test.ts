/**
 * Resource limits on real Postgres, across workers on separate connection pools and across two worker
 * processes. Measured by what the database saw (each chunk's interval on its clock, inside the chunk
 * transaction) and by the grants the limiter reported on that clock, never by wall-clock assertions.
 */
import { ResourceLimiterConformance } from "@chunkwise/testing"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { type Context, type Duration, Effect, Layer, Logger, LogLevel, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { PgResourceLimiter, PgStateStore, ResourceLimiter, Runner, type StateStore, Worker } from "../src/index.js"
import { createLimitTables, grants, limitedJob, overlaps, workerStack } from "./limitsFixtures.js"
import { awaitRun, freshSchema, liveWorker, pgClient, withSchemas } from "./pg.js"

/** The store and limiter an operator (or the runner) uses, on the test's own pool. */
type Control = Context.Context<StateStore.StateStore | ResourceLimiter.ResourceLimiter>

const onPostgres = <A, E>(
  body: (store: string, app: string, control: Control) => Effect.Effect<A, E, SqlClient.SqlClient | Scope.Scope>
) =>
  Effect.gen(function*() {
    const store = freshSchema("cw_store")
    const app = freshSchema("cw_app")
    yield* withSchemas(store, app)
    yield* createLimitTables(app)
    const control = yield* Layer.build(
      Layer.mergeAll(PgStateStore.layer({ schema: store }), PgResourceLimiter.layer({ schema: store }))
    )
    return yield* body(store, app, control).pipe(Effect.scoped)
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.orDie(pgClient({ maxConnections: 6 }))),
    Logger.withMinimumLogLevel(LogLevel.Warning)
  )

/** A worker on its own pool (named `id`, which the executions record). */
const startWorker = (
  store: string,
  app: string,
  job: ReturnType<typeof limitedJob>,
  id: string,
  limits: ResourceLimiter.Limits,
  cacheTtl?: Duration.DurationInput
) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(workerStack(store, app, id, cacheTtl))
    return yield* Worker.make({ jobs: [job], ...liveWorker, workerId: id, limits }).pipe(Effect.provide(context))
  })

/** Grant times are microseconds on the database's clock, read as float epoch ms: allow a thousandth of a permit. */
const tolerance = 1e-3

const most = (rows: ReadonlyArray<{ readonly running: number }>) => Math.max(0, ...rows.map((r) => r.running))

describe("PgResourceLimiter on real Postgres", () => {
  it.live(
    "an in-flight cap of 2 holds across two workers on separate pools, and is reached",
    () =>
      onPostgres((store, app, control) =>
        Effect.gen(function*() {
          const job = limitedJob(app, { partitions: 6, chunks: 5, delayMs: 40 })
          const limits = { "primary-db": { inFlight: 2 } }
          yield* startWorker(store, app, job, "A", limits)
          yield* startWorker(store, app, job, "B", limits)
          const { runId } = yield* Runner.start(job, { label: "in-flight" }).pipe(Effect.provide(control))
          const progress = yield* awaitRun(runId, 60).pipe(Effect.provide(control))
          expect(progress.run.status).toBe("succeeded")
          const rows = yield* overlaps(app)
          expect(rows).toHaveLength(30)
          expect(most(rows)).toBe(2)
          expect(new Set(rows.map((r) => r.worker))).toEqual(new Set(["A", "B"]))
          // Every slot came back.
          const usage = yield* Effect.flatMap(ResourceLimiter.ResourceLimiter, (l) => l.settings).pipe(
            Effect.provide(control)
          )
          expect(usage.map((u) => [u.resource, u.inFlight, u.inUse, u.waiting])).toEqual([["primary-db", 2, 0, 0]])
        })
      ),
    60_000
  )

  it.live(
    "a rate grants no more than rate × elapsed + burst across two pools, on the database's clock",
    () =>
      onPostgres((store, app, control) =>
        Effect.gen(function*() {
          const rate = 20
          const burst = 3
          const job = limitedJob(app, { partitions: 6, chunks: 8, delayMs: 0 })
          const limits = { "primary-db": { chunksPerSecond: rate, burst } }
          yield* startWorker(store, app, job, "A", limits)
          yield* startWorker(store, app, job, "B", limits)
          const { runId } = yield* Runner.start(job, { label: "rate" }).pipe(Effect.provide(control))
          expect((yield* awaitRun(runId, 60).pipe(Effect.provide(control))).run.status).toBe("succeeded")
          const granted = yield* grants(app)
          expect(granted).toHaveLength(48)
          // Demand was far above the rate: most chunks waited for their token.
          expect(granted.filter((g) => g.waitedMs > 0).length).toBeGreaterThan(30)
          expect(ResourceLimiterConformance.worstExcess(granted.map((g) => g.grantedAt), rate, burst))
            .toBeLessThanOrEqual(tolerance)
          // What the database saw: by each chunk's start, at most burst + rate × (time since the bucket was
          // made, full) chunks had started; a chunk never starts before its token is due.
          const sql = yield* SqlClient.SqlClient
          const [made] = yield* sql<{ readonly at: number }>`
          select (extract(epoch from min(at)) * 1000)::float8 as at from ${sql(store)}.resource_limit_audit`
          const starts = (yield* overlaps(app)).map((r) => r.startedAt)
          starts.forEach((startedAt, k) => {
            expect(k + 1).toBeLessThanOrEqual(burst + (rate * (startedAt - made!.at)) / 1000 + 0.1)
          })
        })
      ),
    60_000
  )

  it.live(
    "a limit changed mid-run is picked up by every worker within the cache TTL, and audited",
    () =>
      onPostgres((store, app, control) =>
        Effect.gen(function*() {
          // Enough work that the run outlives the change and its cache TTL on a fast machine.
          const job = limitedJob(app, { partitions: 8, chunks: 100, delayMs: 25 })
          // Declared without limits: an operator can throttle it later.
          const limits = { "primary-db": {} }
          yield* startWorker(store, app, job, "A", limits, "1 second")
          yield* startWorker(store, app, job, "B", limits, "1 second")
          const sql = yield* SqlClient.SqlClient
          const executed = Effect.map(
            sql<{ readonly n: number }>`select count(*)::int as n from ${sql(app)}.executions`,
            (rows) => rows[0]!.n
          )
          const operator = Effect.provide(ResourceLimiter.ResourceLimiter, control)
          const { runId } = yield* Runner.start(job, { label: "change" }).pipe(Effect.provide(control))
          while ((yield* executed) < 20) yield* Effect.sleep("20 millis")
          const slowed = yield* Effect.flatMap(
            operator,
            (l) =>
              l.set("primary-db", { inFlight: 1 }, { actor: "ops", reason: "primary at 95% CPU" }, { create: false })
          )
          yield* Effect.sleep("3 seconds")
          const lifted = yield* Effect.flatMap(
            operator,
            (l) =>
              l.set("primary-db", { inFlight: null }, { actor: "ops", reason: "load is back to normal" }, {
                create: false
              })
          )
          expect((yield* awaitRun(runId, 60).pipe(Effect.provide(control))).run.status).toBe("succeeded")
          const rows = yield* overlaps(app)
          expect(rows).toHaveLength(800)
          // Before the change, chunks ran side by side; from one cache TTL (1 s, plus a chunk) after it
          // until it was lifted, one at a time, while work still went on.
          expect(most(rows.filter((r) => r.startedAt < slowed.updatedAt))).toBeGreaterThan(1)
          const capped = rows.filter((r) => r.startedAt > slowed.updatedAt + 1500 && r.startedAt < lifted.updatedAt)
          expect(capped.length).toBeGreaterThan(5)
          expect(most(capped)).toBe(1)
          // Lifted: the claim reads the cap in its statement, so chunks run side by side again at once.
          expect(most(rows.filter((r) => r.startedAt > lifted.updatedAt))).toBeGreaterThan(1)
          const history = yield* Effect.flatMap(operator, (l) => l.history({ resource: "primary-db", limit: 10 }))
          expect(history.map((c) => [c.actor, c.reason, c.before, c.after])).toEqual([
            ["worker A", "first use: the default declared in code", null, {}],
            ["ops", "primary at 95% CPU", {}, { inFlight: 1 }],
            ["ops", "load is back to normal", { inFlight: 1 }, {}]
          ])
          expect(history[1]!.at - slowed.updatedAt).toBeGreaterThanOrEqual(0)
          expect(history[1]!.at - slowed.updatedAt).toBeLessThan(1000)
        })
      ),
    60_000
  )

  it.live(
    "a slot held by a worker that died comes back when it expires, and nothing runs before",
    () =>
      onPostgres((store, app, control) =>
        Effect.gen(function*() {
          const job = limitedJob(app, { partitions: 2, chunks: 3, delayMs: 10 })
          const sql = yield* SqlClient.SqlClient
          yield* Effect.flatMap(
            ResourceLimiter.ResourceLimiter,
            (l) => l.declare([{ resource: "primary-db", limit: { inFlight: 1 } }], "test")
          ).pipe(Effect.provide(control))
          // A worker died holding the only slot: nobody renews it, it expires in 1.5 s.
          const [dead] = yield* sql<{ readonly expiresAt: number }>`
          update ${sql(store)}.resource_slots set permit_id = 'dead.1', run_id = 'run_dead', unit_id = 'p_dead',
            worker_id = 'dead', expires_at = clock_timestamp() + interval '1500 milliseconds'
          where resource = 'primary-db' and slot = 1
          returning (extract(epoch from expires_at) * 1000)::float8 as "expiresAt"`
          yield* startWorker(store, app, job, "A", { "primary-db": { inFlight: 1 } })
          const { runId } = yield* Runner.start(job, { label: "dead-holder" }).pipe(Effect.provide(control))
          expect((yield* awaitRun(runId, 60).pipe(Effect.provide(control))).run.status).toBe("succeeded")
          const rows = yield* overlaps(app)
          expect(rows).toHaveLength(6)
          expect(Math.min(...rows.map((r) => r.startedAt))).toBeGreaterThanOrEqual(dead!.expiresAt)
          expect(most(rows)).toBe(1)
          const slots = yield* sql<{ readonly permitId: string | null }>`
          select permit_id as "permitId" from ${sql(store)}.resource_slots where resource = 'primary-db'`
          expect(slots).toEqual([{ permitId: null }])
        })
      ),
    60_000
  )

  it.live(
    "bad settings are refused with the setting and the fix, and change nothing",
    () =>
      onPostgres((_store, _app, control) =>
        Effect.gen(function*() {
          const limiter = yield* ResourceLimiter.ResourceLimiter
          yield* limiter.declare([{ resource: "primary-db", limit: { chunksPerSecond: 50, inFlight: 8 } }], "test")
          const actor = { actor: "ops", reason: "test" }
          const nan = yield* Effect.flip(
            limiter.set("primary-db", { chunksPerSecond: Number.NaN }, actor, { create: false })
          )
          expect(nan.message).toContain(`limit of "primary-db": chunksPerSecond must be a positive number`)
          const zero = yield* Effect.flip(limiter.set("primary-db", { inFlight: 0 }, actor, { create: false }))
          expect(zero.message).toContain("inFlight must be an integer from 1 to 10000")
          const unknown = yield* Effect.flip(limiter.set("primary-dbb", { inFlight: 2 }, actor, { create: false }))
          expect(unknown._tag).toBe("NotFound")
          const badName = yield* Effect.flip(limiter.set("Primary DB", { inFlight: 2 }, actor, { create: true }))
          expect(badName.message).toContain(`resource "Primary DB" is not a valid name`)
          const [setting] = yield* limiter.settings
          expect(ResourceLimiter.limitOf(setting!)).toEqual({ chunksPerSecond: 50, inFlight: 8 })
          expect(yield* limiter.history({ limit: 10 })).toHaveLength(1)
          // An operator may create a resource before its first use, and remove its rate (and burst with it).
          yield* limiter.set("billing-api", { chunksPerSecond: 5, burst: 2 }, actor, { create: true })
          const cleared = yield* limiter.set("billing-api", { chunksPerSecond: null }, actor, { create: false })
          expect(ResourceLimiter.limitOf(cleared)).toEqual({})
        }).pipe(Effect.provide(control))
      ),
    60_000
  )

  it.live(
    "both buckets live on the resource's row, which no index covers but its key; a debt stored as tokens is honoured",
    () =>
      onPostgres((store, _app, control) =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const limiter = yield* Effect.provide(ResourceLimiter.ResourceLimiter, control)
          yield* limiter.declare([{
            resource: "billing-api",
            limit: { chunksPerSecond: 10, burst: 1, itemsPerSecond: 1000, itemsBurst: 100 }
          }], "test")
          // The bucket columns change on every permit: only the primary key indexes the row, so updates stay HOT.
          const indexes = yield* sql<{ readonly name: string }>`
            select indexname as name from pg_indexes where schemaname = ${store} and tablename = 'resource_limits'`
          expect(indexes.map((i) => i.name)).toEqual(["resource_limits_pkey"])
          // A debt written as negative tokens at the last refill (as reservations before migration 9 left it):
          // 5 chunks owed at 10/s, so the next chunk token is due 600 ms after that refill.
          const [refill] = yield* sql<{ readonly at: number }>`
            update ${sql(store)}.resource_limits set tokens = -5, refilled_at = clock_timestamp()
            where resource = 'billing-api'
            returning (extract(epoch from refilled_at) * 1000)::float8 as at`
          const next = yield* limiter.acquire(
            ["billing-api"],
            {
              runId: "run_1",
              unitId: "u1",
              partitionKey: "p1",
              job: "job",
              step: "step",
              workerId: "w"
            },
            10_000,
            { items: 50 }
          )
          const [grant] = next.grants
          expect(grant!.grantedAt - refill!.at).toBeCloseTo(600, 0)
          expect(grant!.items).toBe(50)
          const [row] = yield* sql<{ readonly tokens: number; readonly itemTokens: number; readonly at: number }>`
            select tokens, item_tokens as "itemTokens", (extract(epoch from refilled_at) * 1000)::float8 as at
            from ${sql(store)}.resource_limits where resource = 'billing-api'`
          // Both buckets were charged at the grant time: the chunk bucket empty, the item bucket full less 50.
          expect(row!.at).toBeCloseTo(grant!.grantedAt, 0)
          expect(row!.tokens).toBeCloseTo(0, 6)
          expect(row!.itemTokens).toBeCloseTo(50, 6)
        })
      ),
    60_000
  )
})

// ---- two worker processes

const script = fileURLToPath(new URL("./limited-worker-process.ts", import.meta.url))

const spawnWorker = (env: Record<string, string>): ChildProcess =>
  spawn(process.execPath, ["--import", "tsx", script], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "inherit"]
  })

const exited = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

describe("resource limits across two worker processes", () => {
  it.live(
    "an in-flight cap of 2 and a rate hold across processes, measured by the database",
    () =>
      onPostgres((store, app, control) =>
        Effect.gen(function*() {
          const settings = { partitions: 6, chunks: 8, delayMs: 30 }
          const rate = 25
          const burst = 2
          const job = limitedJob(app, settings)
          const { runId } = yield* Runner.start(job, { label: "two-processes" }).pipe(Effect.provide(control))
          const children = yield* Effect.acquireRelease(
            Effect.sync(() =>
              ["P1", "P2"].map((id) =>
                spawnWorker({
                  CW_STORE: store,
                  CW_APP: app,
                  CW_WORKER: id,
                  CW_PARTITIONS: String(settings.partitions),
                  CW_CHUNKS: String(settings.chunks),
                  CW_DELAY_MS: String(settings.delayMs),
                  CW_IN_FLIGHT: "2",
                  CW_RATE: String(rate),
                  CW_BURST: String(burst)
                })
              )
            ),
            (cs) => Effect.sync(() => cs.forEach((c) => c.kill("SIGKILL")))
          )
          expect((yield* awaitRun(runId, 90).pipe(Effect.provide(control))).run.status).toBe("succeeded")
          const rows = yield* overlaps(app)
          expect(rows).toHaveLength(48)
          expect(new Set(rows.map((r) => r.worker))).toEqual(new Set(["P1", "P2"]))
          expect(most(rows)).toBeLessThanOrEqual(2)
          const granted = yield* grants(app)
          expect(granted).toHaveLength(48)
          expect(ResourceLimiterConformance.worstExcess(granted.map((g) => g.grantedAt), rate, burst))
            .toBeLessThanOrEqual(tolerance)
          for (const child of children) child.kill("SIGTERM")
          expect(yield* Effect.forEach(children, exited)).toEqual([0, 0])
        })
      ),
    120_000
  )
})
