import { Chaos } from "@chunkwise/testing"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Runner, StateStore } from "../src/index.js"
import {
  applied,
  awaitRun,
  expectedApplied,
  freshSchema,
  pgClient,
  pgEngineWithPgQueue,
  pgJob,
  withSchemas
} from "./pg.js"

const script = fileURLToPath(new URL("./worker-process.ts", import.meta.url))

const startWorker = (env: Record<string, string>): ChildProcess =>
  spawn(process.execPath, ["--import", "tsx", script], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"]
  })

const exited = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

describe("several worker processes on one database", () => {
  it.live("finish with the state one worker gives, even when one is killed mid-run", () =>
    Effect.gen(function*() {
      const store = freshSchema("cw_store")
      const app = freshSchema("cw_app")
      yield* withSchemas(store, app)
      const env = { CW_STORE: store, CW_APP: app }
      const job = pgJob(app, { partitions: 12, size: 20, chunkSize: 2, chunkDelay: 20 })
      yield* Effect.gen(function*() {
        const { runId } = yield* Runner.start(job, { label: "multi-process" })
        const children = yield* Effect.acquireRelease(
          Effect.sync(() => ["w1", "w2", "w3"].map((id) => startWorker({ ...env, CW_WORKER: id }))),
          (cs) => Effect.sync(() => cs.forEach((c) => c.kill("SIGKILL")))
        )
        // Let them work, then kill one without warning (no drain, no release: its leases must expire).
        yield* Effect.sleep("2500 millis")
        children[0]!.kill("SIGKILL")
        const progress = yield* awaitRun(runId, 90)
        expect(progress.run.status).toBe("succeeded")
        expect(yield* applied(app)).toEqual(expectedApplied(12, 20))
        // The survivors drain on SIGTERM and exit cleanly.
        for (const child of children.slice(1)) child.kill("SIGTERM")
        const codes = yield* Effect.forEach(children.slice(1), exited)
        expect(codes).toEqual([0, 0])
      }).pipe(
        Effect.scoped,
        Effect.provide(pgEngineWithPgQueue(store))
      )
    }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))), 120_000)

  it.live(
    "split partitions run their ranges across processes, each item once and each summary once, with one killed",
    () =>
      Effect.gen(function*() {
        const store = freshSchema("cw_store")
        const app = freshSchema("cw_app")
        yield* withSchemas(store, app)
        const env = { CW_STORE: store, CW_APP: app, CW_PARTITIONS: "4", CW_SIZE: "40", CW_SPLIT: "4" }
        const job = pgJob(app, { partitions: 4, size: 40, chunkSize: 2, chunkDelay: 20, summarise: true, split: 4 })
        yield* Effect.gen(function*() {
          const { runId } = yield* Runner.start(job, { label: "split" })
          const children = yield* Effect.acquireRelease(
            Effect.sync(() => ["w1", "w2", "w3"].map((id) => startWorker({ ...env, CW_WORKER: id }))),
            (cs) => Effect.sync(() => cs.forEach((c) => c.kill("SIGKILL")))
          )
          yield* Effect.sleep("1500 millis")
          children[0]!.kill("SIGKILL")
          const progress = yield* awaitRun(runId, 90)
          expect(progress.run.status).toBe("succeeded")
          expect(progress.ranges).toMatchObject({ succeeded: 16, failed: 0, cancelled: 0 })
          expect(progress.units).toMatchObject({ succeeded: 4, waiting: 0 })
          expect(yield* applied(app)).toEqual(expectedApplied(4, 40))
          const sql = yield* SqlClient.SqlClient
          const summaries = yield* sql<{ readonly partition: string; readonly count: number }>`
            select partition, count from ${sql(app)}.summaries order by partition`
          expect(summaries.map((r) => [r.partition, r.count])).toEqual([["p0", 1], ["p1", 1], ["p2", 1], ["p3", 1]])
          // Every range committed its own chunks: 5 per range, none twice.
          const [ledger] = yield* sql<{ readonly n: number; readonly keys: number }>`
            select count(*)::int as n, count(distinct idempotency_key)::int as keys
            from ${sql(store)}.ledger where unit_id like '%~%'`
          expect(ledger).toEqual({ n: 80, keys: 80 })
        }).pipe(Effect.scoped, Effect.provide(pgEngineWithPgQueue(store)))
      }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))),
    120_000
  )

  it.live(
    "survive a chaos run: workers SIGKILLed at random and restarted, every row applied exactly once",
    () =>
      Effect.gen(function*() {
        const store = freshSchema("cw_store")
        const app = freshSchema("cw_app")
        yield* withSchemas(store, app)
        const job = pgJob(app, { partitions: 16, size: 100, chunkSize: 2, chunkDelay: 20 })
        yield* Effect.gen(function*() {
          const { runId } = yield* Runner.start(job, { label: "chaos" })
          const report = yield* Chaos.run({
            worker: {
              args: ["--import", "tsx", script],
              readyLine: "ready",
              env: { CW_STORE: store, CW_APP: app, CW_PARTITIONS: "16", CW_SIZE: "100" }
            },
            processes: 3,
            seed: 7,
            killEvery: "400 millis",
            maxKills: 4,
            until: Effect.map(Runner.status(runId), (p) => StateStore.isTerminalRun(p.run.status)),
            timeout: "150 seconds"
          })
          expect(report.kills.length).toBeGreaterThan(0)
          expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
          expect(yield* applied(app)).toEqual(expectedApplied(16, 100))
          expect(report.survivorExitCodes).toEqual([0, 0, 0])
        }).pipe(Effect.scoped, Effect.provide(pgEngineWithPgQueue(store)))
      }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient()))),
    180_000
  )
})
