/**
 * The database restarts mid-run (`pg_ctlcluster ... restart`): every connection drops, the server is gone
 * for a moment, and work resumes when it is back, with nothing lost and nothing applied twice.
 *
 * This disrupts every other test using Postgres, so it lives in the `serial` vitest project, which runs
 * alone after all the others (`sequence.groupOrder` in vitest.config.ts). Run it on its own with
 * `npx vitest run --project serial`.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { execFile } from "node:child_process"
import { readdirSync } from "node:fs"
import { promisify } from "node:util"
import { Runner, StateStore, Worker } from "../src/index.js"
import {
  applied,
  awaitRun,
  expectedApplied,
  freshSchema,
  liveWorker,
  pgClient,
  pgEngineWithPgQueue,
  pgJob,
  withSchemas
} from "./pg.js"

/**
 * Restarts the local cluster (Debian's pg_ctlcluster, as root) without blocking the event loop, so the
 * workers keep running (and failing) while the server is down; returns when it accepts connections again.
 */
const restartPostgres = Effect.gen(function*() {
  const versions = readdirSync("/etc/postgresql")
  if (versions.length !== 1) {
    return yield* Effect.die(new Error(`expected one PostgreSQL version in /etc/postgresql, found ${versions}`))
  }
  yield* Effect.tryPromise(() =>
    promisify(execFile)("pg_ctlcluster", ["--skip-systemctl-redirect", versions[0]!, "main", "restart"], {
      timeout: 120_000
    })
  ).pipe(Effect.orDie)
})

describe("a run survives the database restarting (serial)", () => {
  it.live("the server restarts mid-run: work resumes when it is back; the app table and ledger are exact", () => {
    const store = freshSchema("cw_store")
    const app = freshSchema("cw_app")
    const partitions = 6
    const size = 40
    const chunkSize = 4
    return Effect.gen(function*() {
      yield* withSchemas(store, app)
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const job = pgJob(app, { partitions, size, chunkSize, chunkDelay: 25 })
        yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "A" })
        yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "B" })
        const { runId } = yield* Runner.start(job, { label: "restart" })
        // Restart once the run is well under way, with chunks in flight.
        const ledgerRows = sql<{ readonly n: number }>`
          select count(*)::int as n from ${sql(store)}.ledger where run_id = ${runId}`
        yield* Effect.repeat(ledgerRows, {
          until: (rows) => rows[0]!.n >= 12,
          schedule: Schedule.spaced("20 millis")
        }).pipe(Effect.timeout("60 seconds"))
        const [before] = yield* ledgerRows
        yield* restartPostgres
        const progress = yield* awaitRun(runId, 180)

        expect(progress.run.status).toBe("succeeded")
        // The restart happened mid-run: some chunks were committed before it, and the rest after.
        expect(before!.n).toBeLessThan(partitions * (size / chunkSize))
        // Every item applied exactly once (a chunk in flight at the restart rolled back and was redone).
        expect(yield* applied(app)).toEqual(expectedApplied(partitions, size))
        expect(yield* sql`select count from ${sql(app)}.completions`).toEqual([{ count: 1 }])
        // The ledger holds exactly one row per committed chunk: chunk_seq 0..9 of `apply` for each unit.
        const ledger = yield* sql<{ readonly unitId: string; readonly seqs: Array<number> }>`
          select unit_id as "unitId", array_agg(chunk_seq order by chunk_seq) as seqs
          from ${sql(store)}.ledger where run_id = ${runId} and step = 'apply' group by unit_id`
        expect(ledger).toHaveLength(partitions)
        for (const row of ledger) expect(row.seqs).toEqual(Array.from({ length: size / chunkSize }, (_, i) => i))
        const stateStore = yield* StateStore.StateStore
        const units = yield* stateStore.listUnits(runId, { limit: 100 })
        const parts = units.filter((u) => u.kind === "partition")
        expect(parts.map((u) => [u.status, u.items])).toEqual(parts.map(() => ["succeeded", size]))
      }).pipe(Effect.scoped, Effect.provide(pgEngineWithPgQueue(store)))
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient())))
  }, { timeout: 300_000 })
})
