import { SqlClient, SqlError } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel, Schema, type Scope } from "effect"
import * as Cli from "../src/Cli.js"
import { Job, PgStateStore, Probe, type QueueAdapter, Runbook, Runner, StateStore, Step, Worker } from "../src/index.js"
import { exec } from "./cliFixtures.js"
import { crashOnce } from "./fixtures.js"
import { awaitRun, freshSchema, liveWorker, pgClient, pgEngine, withSchemas } from "./pg.js"

/** The database refused a record: its amount breaks the `billed` table's check. */
class InvalidRecord extends Schema.TaggedError<InvalidRecord>()("InvalidRecord", { detail: Schema.String }) {}

const Record = Schema.Struct({ id: Schema.Number, amount: Schema.Number })

/**
 * `size` records per partition `pN` (ids 0..size-1); a record is bad (a negative amount, which the
 * table's check constraint refuses) while its id is in `bad`. The write is one set-based INSERT of the
 * whole chunk, as a real job's would be: one bad record fails the statement and aborts the transaction.
 */
const billingJob = (app: string, options: {
  readonly partitions: number
  readonly size: number
  readonly bad: { current: ReadonlySet<number> }
  readonly budget: number | `${number}%`
  readonly runBudget?: number | undefined
  readonly chunkSize?: number | undefined
  readonly split?: boolean | undefined
}) =>
  Job.make({
    name: "pg-quarantine-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => Array.from({ length: options.partitions }, (_, i) => `p${i}`),
    errors: [Runbook.make(InvalidRecord, {
      id: "test-pg-invalid-record",
      title: "A record breaks the billed table's check",
      severity: "ticket",
      meaning: "Its amount is negative.",
      steps: ["Fix the record, then re-run it."]
    })],
    skipBudget: options.runBudget === undefined ? undefined : { items: options.runBudget },
    concurrency: { perWorker: 8 },
    steps: (step) => [
      step.chunked("bill", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: options.chunkSize ?? 16,
        transaction: "chunk",
        split: options.split === true
          ? { key: Schema.Number, ranges: () => Effect.succeed(Step.rangesAt([options.size / 2])) }
          : undefined,
        read: ({ chunkSize, cursor, range }) =>
          Effect.sync(() => {
            const last = Math.min(range.to ?? options.size, options.size)
            const from = Math.max(cursor.next, range.from ?? 0)
            const end = Math.min(from + chunkSize, last)
            const items = Array.from({ length: end - from }, (_, i) => ({
              id: from + i,
              amount: options.bad.current.has(from + i) ? -1 : 10
            }))
            return { items, next: end >= last ? Step.done : { next: end } }
          }),
        write: (records, { partition }) =>
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql`
              insert into ${sql(app)}.billed (partition, id, amount, count)
              select ${partition.key}, x.id, x.amount, 1
              from jsonb_to_recordset(${JSON.stringify(records)}::jsonb) as x(id integer, amount integer)
              on conflict (partition, id) do update set count = billed.count + 1`.pipe(
              Effect.catchIf(
                (e): e is SqlError.SqlError =>
                  e instanceof SqlError.SqlError && (e.cause as { code?: string } | undefined)?.code === "23514",
                (e) => new InvalidRecord({ detail: String((e.cause as { message?: string }).message) })
              )
            )),
        skip: { on: [InvalidRecord], item: Record, id: (record) => record.id, budget: options.budget }
      })
    ]
  })

const onPostgres = <A, E>(
  body: (
    app: string,
    store: string
  ) => Effect.Effect<A, E, StateStore.StateStore | SqlClient.SqlClient | QueueAdapter.QueueAdapter | Scope.Scope>
) => {
  const store = freshSchema("cw_store")
  const app = freshSchema("cw_app")
  return Effect.gen(function*() {
    yield* withSchemas(store, app)
    const sql = yield* SqlClient.SqlClient
    yield* sql`
      create table ${sql(app)}.billed (
        partition text not null, id integer not null, amount integer not null check (amount >= 0),
        count integer not null, primary key (partition, id))`
    return yield* body(app, store).pipe(Effect.scoped, Effect.provide(pgEngine(store)))
  }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient())))
}

/** The billed table as { "pN-id": count }. */
const billed = (app: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly key: string; readonly count: number }>`
        select partition || '-' || id as key, count from ${sql(app)}.billed order by partition, id`,
      (rows) => Object.fromEntries(rows.map((r) => [r.key, r.count]))
    ))

const everyRecordOnce = (partitions: number, size: number, except: ReadonlySet<number>) =>
  Object.fromEntries(
    Array.from({ length: partitions }, (_, p) => p).flatMap((p) =>
      Array.from({ length: size }, (_, id) => id).filter((id) => !except.has(id)).map((id) => [`p${p}-${id}`, 1])
    )
  )

const keysOf = (entries: ReadonlyArray<{ readonly partitionKey: string; readonly itemId: string }>) =>
  entries.map((e) => `${e.partitionKey}-${e.itemId}`).sort()

describe("item-level skips on real Postgres", () => {
  it.live(
    "bad records are set aside by bisection in savepoints; the rest commits once, even split and killed",
    () =>
      Effect.gen(function*() {
        for (const point of ["none", "before-effect", "after-effect", "after-commit"] as const) {
          yield* onPostgres((app) =>
            Effect.gen(function*() {
              const bad = new Set([3, 17, 18, 40])
              const job = billingJob(app, { partitions: 3, size: 48, bad: { current: bad }, budget: 4, split: true })
              const crash = crashOnce((p, info) => p === point && info.step === "bill" && info.chunkSeq === 1)
              yield* Worker.make({ jobs: [job], ...liveWorker, leaseDuration: "1 second" }).pipe(
                Effect.provideService(Probe.Probe, crash.probe)
              )
              const { runId } = yield* Runner.start(job, { label: point })
              const progress = yield* awaitRun(runId)
              expect(crash.crashed(), point).toBe(point !== "none")
              expect(progress.run.status, point).toBe("succeeded")
              expect(progress.quarantine, point).toEqual({ quarantined: 12, retry: 0, resolved: 0 })
              expect(yield* billed(app), point).toEqual(everyRecordOnce(3, 48, bad))
              const held = yield* Runner.quarantine(runId)
              expect(keysOf(held), point).toEqual(
                keysOf([0, 1, 2].flatMap((p) => [...bad].map((id) => ({ partitionKey: `p${p}`, itemId: String(id) }))))
              )
              expect(held.find((e) => e.partitionKey === "p0" && e.itemId === "40"), point).toMatchObject({
                item: { id: 40, amount: -1 },
                errorTag: "InvalidRecord",
                runbookId: "test-pg-invalid-record",
                range: { from: 24, to: null },
                cursor: { next: 40 },
                attempts: 1
              })
              expect(held[0]!.message, point).toMatch(/billed_amount_check/)
            })
          )
        }
      }),
    120_000
  )

  it.live(
    "a run budget holds across partitions committing at once: never more set aside than it allows",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          // Eight partitions, one bad record each, racing; the run may set aside 3.
          const job = billingJob(app, {
            partitions: 8,
            size: 8,
            bad: { current: new Set([5]) },
            budget: 1,
            runBudget: 3,
            chunkSize: 8
          })
          yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 8 })
          const { runId } = yield* Runner.start(job, { label: "race" })
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("failed")
          expect(progress.quarantine.quarantined).toBe(3)
          expect(progress.units).toMatchObject({ succeeded: 3, failed: 5 })
          const done = (yield* Runner.quarantine(runId)).map((e) => e.partitionKey)
          const rows = yield* billed(app)
          // The three that fit committed their seven good records once; the five others nothing.
          for (let p = 0; p < 8; p++) {
            const count = Object.keys(rows).filter((k) => k.startsWith(`p${p}-`)).length
            expect(count).toBe(done.includes(`p${p}`) ? 7 : 0)
          }
          expect(Object.values(rows).every((c) => c === 1)).toBe(true)
          const store = yield* StateStore.StateStore
          const failures = yield* store.listFailures(runId, { limit: 20 })
          expect(failures.filter((f) => f.errorTag === "SkipBudgetExceeded")).toHaveLength(5)
        })
      ),
    60_000
  )

  it.live(
    "an operator re-runs quarantined records after a fix: written once, resolved, the run ends again",
    () =>
      onPostgres((app) =>
        Effect.gen(function*() {
          const bad = { current: new Set([3, 17, 18]) as ReadonlySet<number> }
          const job = billingJob(app, { partitions: 2, size: 24, bad, budget: 5, split: true })
          yield* Worker.make({ jobs: [job], ...liveWorker })
          const { runId } = yield* Runner.start(job, { label: "rerun" })
          expect((yield* awaitRun(runId)).quarantine.quarantined).toBe(6)
          const actor = { actor: "ops", reason: "records fixed" }
          // The stored items carry the amount read at the time (-1): a re-run writes what was stored, so a
          // fix in code (here: the table's check relaxed) is what lets them through.
          const sql = yield* SqlClient.SqlClient
          yield* sql`alter table ${sql(app)}.billed drop constraint billed_amount_check`
          yield* sql`alter table ${
            sql(app)
          }.billed add constraint billed_amount_check check (amount >= -1 and id <> 17)`
          const planned = yield* Runner.retryQuarantine(runId, {}, actor)
          expect(planned.map((p) => [p.partitionKey, p.step, p.items]).sort()).toEqual([
            ["p0", "bill", 3],
            ["p1", "bill", 3]
          ])
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("succeeded")
          expect(progress.quarantine).toEqual({ quarantined: 2, retry: 0, resolved: 4 })
          const rows = yield* billed(app)
          expect(rows).toEqual({ ...everyRecordOnce(2, 24, new Set([17])) })
          const still = yield* Runner.quarantine(runId, { status: ["quarantined"] })
          expect(still.map((e) => [e.partitionKey, e.itemId, e.attempts])).toEqual([["p0", "17", 2], ["p1", "17", 2]])
          const store = yield* StateStore.StateStore
          expect((yield* store.auditLog(runId)).map((a) => a.action)).toEqual(["quarantine-retry"])
        })
      ),
    60_000
  )

  it.live(
    "the operator CLI lists quarantined records, shows them in status, and re-runs them with a reason",
    () =>
      onPostgres((app, storeSchema) =>
        Effect.gen(function*() {
          const bad = { current: new Set([3, 17]) as ReadonlySet<number> }
          const job = billingJob(app, { partitions: 2, size: 24, bad, budget: 5 })
          yield* Worker.make({ jobs: [job], ...liveWorker })
          const { runId } = yield* Runner.start(job, { label: "cli" })
          yield* awaitRun(runId)
          const cli = Cli.make({
            name: "billing",
            jobs: [job],
            layer: Layer.mergeAll(PgStateStore.layer({ schema: storeSchema }), Logger.minimumLogLevel(LogLevel.None))
              .pipe(Layer.provideMerge(pgClient({ maxConnections: 4 })))
          })
          const status = yield* exec(cli, "status", runId)
          expect(status.stdout).toMatch(/quarantine\s+4 set aside · 0 being re-run · 0 resolved/)
          expect((yield* exec(cli, "status", runId, "--json")).json().quarantine).toEqual({
            quarantined: 4,
            retry: 0,
            resolved: 0
          })
          const list = yield* exec(cli, "quarantine", "list", runId, "--partition", "p1")
          expect(list.code).toBe(0)
          expect(list.stdout).toMatch(/^STEP\s+PARTITION\s+ITEM\s+STATUS\s+ATTEMPTS\s+ERROR\s+RUNBOOK/)
          expect(list.stdout).toMatch(/bill\s+p1\s+17\s+quarantined\s+1\s+InvalidRecord/)
          expect(list.stdout).toContain(`billing quarantine retry ${runId}`)
          const json = (yield* exec(cli, "quarantine", "list", runId, "--json")).json()
          expect(json.items.map((i: any) => `${i.partition}-${i.item}`)).toEqual(["p0-17", "p0-3", "p1-17", "p1-3"])
          expect(json.items[0]).toMatchObject({ step: "bill", status: "quarantined", value: { id: 17, amount: -1 } })

          const noReason = yield* exec(cli, "quarantine", "retry", runId)
          expect(noReason.code).toBe(2)
          expect(noReason.stderr).toContain(`quarantine retry needs --reason "<why>"`)
          const badStep = yield* exec(cli, "quarantine", "retry", runId, "--step", "bil", "--dry-run")
          expect(badStep.code).toBe(2)
          expect(badStep.stderr).toContain(`has no step "bil"; its steps: bill`)
          const dry = yield* exec(cli, "quarantine", "retry", runId, "--partition", "p0", "--dry-run")
          expect(dry.stdout).toContain("Dry run: quarantine retry would write 2 item(s)")
          expect((yield* Runner.status(runId)).quarantine.retry).toBe(0)

          const sql = yield* SqlClient.SqlClient
          yield* sql`alter table ${sql(app)}.billed drop constraint billed_amount_check`
          const done = yield* exec(cli, "quarantine", "retry", runId, "--reason", "check relaxed", "--actor", "ops")
          expect(done.code).toBe(0)
          expect(done.stdout).toContain("quarantine retry: 4 item(s)")
          expect((yield* awaitRun(runId)).quarantine).toEqual({ quarantined: 0, retry: 0, resolved: 4 })
          expect(yield* billed(app)).toEqual(everyRecordOnce(2, 24, new Set()))
          const audit = (yield* exec(cli, "audit", runId, "--json")).json()
          expect(audit.entries.map((e: any) => [e.action, e.actor, e.reason])).toEqual([
            ["quarantine-retry", "ops", "check relaxed"]
          ])
        })
      ),
    60_000
  )
})
