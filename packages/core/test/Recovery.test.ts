import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Schema, Scope } from "effect"
import { Job, Probe, RetryPolicy, Runbook, Runner, StateStore, Worker } from "../src/index.js"
import { exec, makeCli, onPostgres } from "./cliFixtures.js"
import { applied, awaitRun, expectedApplied, liveWorker, pgJob } from "./pg.js"

class FlakyUpstream extends Schema.TaggedError<FlakyUpstream>()("FlakyUpstream", { message: Schema.String }) {}
class BadRecord extends Schema.TaggedError<BadRecord>()("BadRecord", { partition: Schema.String }) {}

/** Polls (real time) until `check` holds, failing loudly after `seconds`. */
const eventually = <E, R>(what: string, check: Effect.Effect<boolean, E, R>, seconds = 30) =>
  Effect.gen(function*() {
    while (!(yield* check)) yield* Effect.sleep("20 millis")
  }).pipe(
    Effect.timeoutFail({
      duration: `${seconds} seconds`,
      onTimeout: () => new Error(`not true in ${seconds}s: ${what}`)
    })
  )

describe("automatic recovery on real Postgres", () => {
  it.live(
    "a partition whose worker died (its lease expired) is re-sent and resumed from its checkpoint",
    () =>
      onPostgres(({ app }) =>
        Effect.gen(function*() {
          const executions: Array<string> = []
          const job = pgJob(app, { partitions: 1, size: 6, chunkSize: 2, executions })
          const store = yield* StateStore.StateStore
          // Worker A commits chunk 1 of p0, then hangs for good: no more chunks, no more heartbeats.
          const hung = yield* Deferred.make<void>()
          const probe = Probe.make({
            at: (point: Probe.Point, info: Probe.Info) =>
              Effect.gen(function*() {
                if (point === "after-commit" && info.workerId === "A" && info.chunkSeq === 1) {
                  yield* Deferred.succeed(hung, undefined)
                  return yield* Effect.never
                }
                if (point === "heartbeat" && info.workerId === "A" && (yield* Deferred.isDone(hung))) {
                  return yield* Effect.never
                }
              })
          })
          const scopeA = yield* Scope.make()
          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "A", concurrency: 1, leaseDuration: "1 second" })
            .pipe(Effect.provideService(Probe.Probe, probe), Scope.extend(scopeA))
          const { runId } = yield* Runner.start(job, { label: "dead-worker" })
          yield* Deferred.await(hung)
          // The store sees the expired lease (the `chunkwise_units{state="expired_lease"}` gauge).
          yield* eventually("the lease expires", Effect.map(store.backlog, (b) => b.expiredLeases === 1))

          yield* Worker.make({ jobs: [job], ...liveWorker, workerId: "B" })
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("succeeded")
          // B resumed at chunk 2: nothing A committed ran again, nothing was skipped; the takeover is an attempt.
          expect(executions).toEqual(["p0/0/1", "p0/1/1", "p0/2/2"])
          expect(yield* applied(app)).toEqual(expectedApplied(1, 6))
          const [unit] = (yield* store.listUnits(runId, { limit: 10 })).filter((u) => u.kind === "partition")
          expect(yield* store.ledger(runId, unit!.unitId)).toHaveLength(3)
          expect(unit).toMatchObject({ status: "succeeded", chunks: 3, items: 6, crashesSinceProgress: 0 })
          expect(yield* store.backlog).toEqual({ ready: 0, delayed: 0, running: 0, expiredLeases: 0 })
          yield* Scope.close(scopeA, Exit.void)
        })
      ),
    60_000
  )

  it.live(
    "a failure whose class allows a delayed retry is retried from the store when due, up to its limit",
    () =>
      onPostgres(() =>
        Effect.gen(function*() {
          const executions: Array<string> = []
          let p0Failures = 1
          const job = Job.make({
            name: "delayed-retry",
            params: Schema.Struct({}),
            partitions: () => ["p0", "p1"],
            steps: (step) => [
              step.single("call", {
                transaction: "none",
                run: ({ attempt, idempotencyKey, partition }) =>
                  Effect.gen(function*() {
                    executions.push(`${partition.key}/${attempt}/${idempotencyKey}`)
                    if (partition.key === "p1" || p0Failures-- > 0) {
                      return yield* new FlakyUpstream({ message: `upstream timed out for ${partition.key}` })
                    }
                  })
              })
            ],
            errors: [
              Runbook.make(FlakyUpstream, {
                id: "recovery-flaky-upstream",
                title: "The upstream timed out",
                severity: "info",
                meaning: "A transient upstream failure.",
                steps: ["Nothing; it retries."],
                retry: RetryPolicy.exponential({ base: "1500 millis", times: 1, jitter: false })
              })
            ]
          })
          const store = yield* StateStore.StateStore
          // Every wait goes through the store (as a wait of 30 s or more does by default).
          yield* Worker.make({ jobs: [job], ...liveWorker, inProcessRetryLimit: 0 })
          const { runId } = yield* Runner.start(job, {})
          // While it waits, the unit is back in the store, pending with its retry time, and no worker holds it.
          yield* eventually(
            "p0 waits in the store for its retry",
            Effect.map(store.listUnits(runId, { limit: 10 }), (units) =>
              units.some((u) =>
                u.partitionKey === "p0" && u.status === "pending" && u.retryAt !== null && u.leaseOwner === null &&
                u.attempt === 2
              ))
          )
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("failed")
          expect(progress.units).toMatchObject({ succeeded: 1, failed: 1 })
          const byPartition = (key: string) =>
            executions.filter((e) => e.startsWith(`${key}/`))
          // Two attempts each (times: 1), with the same idempotency key.
          for (const key of ["p0", "p1"]) {
            const runs = byPartition(key)
            expect(runs.map((e) =>
              e.split("/")[1]
            )).toEqual(["1", "2"])
            expect(new Set(runs.map((e) => e.split("/")[2])).size).toBe(1)
          }
          const failures = yield* store.listFailures(runId, { limit: 10 })
          expect(failures.map((f) => [f.partitionKey, f.outcome, f.attempt]).sort()).toEqual([
            ["p0", "retry", 1],
            ["p1", "failed", 2],
            ["p1", "retry", 1]
          ])
        })
      ),
    60_000
  )

  it.live(
    "the failure budget stops a run: the rest is cancelled, and status says why",
    () =>
      onPostgres(({ app, store: storeSchema }) =>
        Effect.gen(function*() {
          const executions: Array<string> = []
          const keys = Array.from({ length: 8 }, (_, i) => `p${i}`)
          const job = Job.make({
            name: "budgeted",
            params: Schema.Struct({}),
            // Heaviest first: the three bad partitions run first.
            partitions: () => keys.map((key, i) => ({ key, weight: keys.length - i })),
            steps: (step) => [
              step.single("check", {
                transaction: "none",
                run: ({ partition }) =>
                  Effect.gen(function*() {
                    executions.push(partition.key)
                    if (["p0", "p1", "p2"].includes(partition.key)) {
                      return yield* new BadRecord({ partition: partition.key })
                    }
                  })
              })
            ],
            errors: [
              Runbook.make(BadRecord, {
                id: "recovery-bad-record",
                title: "A record is invalid",
                severity: "ticket",
                meaning: "The partition's data is invalid.",
                steps: ["Fix the data, then retry the partition."]
              })
            ],
            failureBudget: { partitions: 1 },
            concurrency: { perWorker: 1 }
          })
          yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 1 })
          const { runId } = yield* Runner.start(job, {})
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("failed")
          const reason = "failure budget exceeded: 2 of 8 partitions failed (the budget allows 1)"
          expect(progress.run.reason).toBe(reason)
          expect(progress.units).toMatchObject({ failed: 2, cancelled: 6, succeeded: 0 })
          expect(executions).toEqual(["p0", "p1"])

          const cli = makeCli(storeSchema, app, [])
          const view = (yield* exec(cli, "status", runId, "--json")).json()
          expect(view.run).toMatchObject({ status: "failed", reason, failureBudget: 1 })
          expect(view.failures).toEqual([expect.objectContaining({ errorTag: "BadRecord", failedPartitions: 2 })])
          const text = (yield* exec(cli, "status", runId)).stdout
          expect(text).toContain(`reason          ${reason}`)
          expect(text).toContain("failure budget  1 partition(s)")
        })
      ),
    60_000
  )
})
