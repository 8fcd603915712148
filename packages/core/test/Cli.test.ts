import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { PgQueue, StateStore, Worker } from "../src/index.js"
import { cliJob, exec, makeCli, onPostgres, PARTITIONS, SIZE, unitsByPartition } from "./cliFixtures.js"
import { applied, awaitRun, liveWorker } from "./pg.js"

const expectedAll = () => {
  const out: Record<string, number> = {}
  PARTITIONS.forEach((_, p) => {
    for (let i = 0; i < SIZE; i++) out[String(p * 1000 + i)] = 1
  })
  return out
}

const badRows = (app: string, rows: ReadonlyArray<readonly [string, number]>) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      Effect.forEach(rows, ([partition, item]) => sql`insert into ${sql(app)}.bad values (${partition}, ${item})`)
  )

const fixRows = (app: string) => Effect.flatMap(SqlClient.SqlClient, (sql) => sql`delete from ${sql(app)}.bad`)

describe("operator CLI on a real Postgres store", () => {
  it.live(
    "bad arguments name the input and the fix, with exit code 2; start is idempotent",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          const cli = makeCli(store, app, [])
          const unknownJob = yield* exec(cli, "start", "nope", "--params", "{}")
          expect(unknownJob.code).toBe(2)
          expect(unknownJob.stderr).toContain(`unknown job "nope"; this CLI knows: cli-job`)

          const notJson = yield* exec(cli, "start", "cli-job", "--params", "{label")
          expect(notJson.code).toBe(2)
          expect(notJson.stderr).toContain("--params is not JSON")
          expect(notJson.stderr).toContain(`--params '{"label":"..."}'`)

          const badParams = yield* exec(cli, "start", "cli-job", "--params", `{"label":1}`)
          expect(badParams.code).toBe(2)
          expect(badParams.stderr).toContain(`invalid params for job "cli-job"`)
          expect(badParams.stderr).toContain("expects { readonly label: string }")

          const unknownRun = yield* exec(cli, "status", "run_nope")
          expect(unknownRun.code).toBe(2)
          expect(unknownRun.stderr).toContain(`run "run_nope" not found in the store. \`billing status\``)

          const noSelection = yield* exec(cli, "retry", "run_nope", "--dry-run")
          expect(noSelection.code).toBe(2)
          expect(noSelection.stderr).toContain("--partition <key> (repeatable) or --failed")

          const unknownCommand = yield* exec(cli, "frobnicate")
          expect(unknownCommand.code).toBe(2)

          const first = yield* exec(cli, "start", "cli-job", "--params", `{"label":"idem"}`, "--json")
          expect(first.code).toBe(0)
          const started = first.json()
          expect(Object.keys(started).sort()).toEqual(["created", "job", "partitions", "runId", "status"])
          expect(started).toMatchObject({ job: "cli-job", created: true, status: "running", partitions: 4 })
          const again = (yield* exec(cli, "start", "cli-job", "--params", `{"label":"idem"}`, "--json")).json()
          expect(again).toMatchObject({ runId: started.runId, created: false, partitions: 4 })
          // A re-run beside the live run is refused, naming it, and writes nothing.
          const rerun = yield* exec(cli, "start", "cli-job", "--params", `{"label":"idem"}`, "--rerun", "again")
          expect(rerun.code).toBe(2)
          expect(rerun.stderr).toContain(`run ${started.runId} of the same params is still running`)

          const listed = yield* exec(cli, "status", "--json")
          expect(listed.json().runs.map((r: any) => r.runId)).toEqual([started.runId])
          // A bad number is the operator's input, named as such: not "the store is unavailable".
          const badLimit = yield* exec(cli, "status", "--limit", "-1")
          expect(badLimit.code).toBe(2)
          expect(badLimit.stderr).toContain("--limit must be at least 1")
          expect((yield* exec(cli, "failures", started.runId, "--limit", "0")).code).toBe(2)
          const table = yield* exec(cli, "status")
          expect(table.stdout).toMatch(/^RUN\s+JOB\s+STATUS\s+PARTITIONS/)
          expect(table.stdout).toContain(started.runId)
        })
      ),
    60_000
  )

  it.live(
    "a failed run from alert to recovery: status, failures, dry run, retry; the dry run lists what re-runs",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          const executions: Array<string> = []
          const cli = makeCli(store, app, executions)
          yield* badRows(app, [["b", 3], ["d", 0]])
          yield* Worker.make({ jobs: [cliJob(app, executions)], ...liveWorker })

          const waited = yield* exec(
            cli,
            "start",
            "cli-job",
            "--params",
            `{"label":"2026-10"}`,
            "--wait",
            "--interval-ms",
            "50"
          )
          expect(waited.code).toBe(1)
          expect(waited.stderr).toMatch(/\[[#.]+\] \d\/4 partitions · \d done · \d failed · \d running/)
          expect(waited.stderr).toContain("ended failed: 2 partition(s) failed. Next: `billing failures run_")
          expect(waited.stdout).toContain("Failures by error class")
          const runId = /run (run_[a-z0-9]+) of cli-job/.exec(waited.stdout)![1]!

          const status = (yield* exec(cli, "status", runId, "--json")).json()
          expect(Object.keys(status).sort()).toEqual([
            "failures",
            "partitions",
            "quarantine",
            "ranges",
            "run",
            "slowest",
            "steps",
            "throttled",
            "throughput"
          ])
          expect(status.run).toMatchObject({ runId, job: "cli-job", status: "failed", reason: "2 partition(s) failed" })
          expect(status.partitions).toMatchObject({ total: 4, succeeded: 2, failed: 2, pending: 0, leased: 0 })
          expect(status.ranges).toMatchObject({ total: 0 })
          // load: a and c did 3 chunks each, b one before its bad chunk, d none; publish ran for a and c.
          expect(status.steps).toEqual([
            { name: "load", index: 0, done: 2, active: 0, failed: 2, chunks: 7 },
            { name: "publish", index: 1, done: 2, active: 0, failed: 0, chunks: 2 }
          ])
          expect(status.throughput).toMatchObject({ chunks: 9, items: 14, etaMs: null })
          expect(status.slowest).toHaveLength(4)
          expect(status.failures).toEqual([
            expect.objectContaining({
              errorTag: "BadRow",
              runbookId: "cli-bad-row",
              runbookTitle: "A row cannot be loaded",
              severity: "ticket",
              failedPartitions: 2,
              partitions: 2,
              occurrences: 2
            })
          ])
          const statusText = (yield* exec(cli, "status", runId)).stdout
          expect(statusText).toMatch(
            /STEP\s+DONE\s+ACTIVE\s+FAILED\s+CHUNKS\nload\s+2\s+0\s+2\s+7\npublish\s+2\s+0\s+0\s+2/
          )
          expect(statusText).toContain("cli-bad-row: A row cannot be loaded")

          const failures = (yield* exec(cli, "failures", runId, "--json")).json()
          expect(failures.failures.map((f: any) => [f.partition, f.step, f.errorTag, f.cursor, f.attempts])).toEqual([
            ["b", "load", "BadRow", JSON.stringify({ next: 2 }), 1],
            ["d", "load", "BadRow", null, 1]
          ])
          expect(failures.failures[0]).toMatchObject({
            runbookId: "cli-bad-row",
            runbookTitle: "A row cannot be loaded",
            retryCommand: `billing retry ${runId} --partition b --reason '...'`
          })
          expect((yield* exec(cli, "failures", runId)).stdout).toContain("cursor     {\"next\":2}")

          // Without a reason, nothing happens.
          const noReason = yield* exec(cli, "retry", runId, "--failed")
          expect(noReason.code).toBe(2)
          expect(noReason.stderr).toContain(`retry needs --reason "<why>"`)

          const dry = yield* exec(cli, "retry", runId, "--failed", "--dry-run", "--json")
          expect(dry.code).toBe(0)
          const plan = dry.json()
          expect(plan).toMatchObject({ action: "retry", runId, dryRun: true, reason: null })
          expect(plan.units.map((u: any) => [u.partition, u.fromStep, u.fromChunk, u.keysChange])).toEqual([
            ["b", "load", 1, false],
            ["d", "load", 0, false]
          ])
          // The dry run changed nothing.
          const storeApi = yield* StateStore.StateStore
          expect(yield* storeApi.auditLog(runId)).toEqual([])
          const units = yield* unitsByPartition(runId)
          expect([units["b"]!.status, units["d"]!.status]).toEqual(["failed", "failed"])
          expect((yield* exec(cli, "retry", runId, "--failed", "--dry-run")).stdout).toContain(
            "b          failed  load, chunk 1"
          )

          yield* fixRows(app)
          const before = executions.length
          const real = yield* exec(
            cli,
            "retry",
            runId,
            "--failed",
            "--reason",
            "fixed the rows",
            "--actor",
            "alice",
            "--json"
          )
          expect(real.code).toBe(0)
          expect(real.json()).toMatchObject({
            action: "retry",
            dryRun: false,
            actor: "alice",
            reason: "fixed the rows"
          })
          expect(real.json().units).toEqual(plan.units)
          const progress = yield* awaitRun(runId)
          expect(progress.run.status).toBe("succeeded")
          // Exactly what the dry run listed ran again: b from chunk 1, d from its start; a and c not at all.
          expect(executions.slice(before).sort()).toEqual(
            ["b/load/1", "b/load/2", "b/publish", "d/load/0", "d/load/1", "d/load/2", "d/publish"]
          )
          expect(yield* applied(app)).toEqual(expectedAll())

          const audit = (yield* exec(cli, "audit", runId, "--json")).json()
          expect(audit.entries).toEqual([
            expect.objectContaining({ action: "retry", actor: "alice", reason: "fixed the rows", runId })
          ])
          expect(audit.entries[0].details.units).toEqual(["b", "d"])
          expect((yield* exec(cli, "status", runId, "--json")).json().run).toMatchObject({
            status: "succeeded",
            reason: null
          })
        })
      ),
    90_000
  )

  it.live(
    "retry from a step changes the keys; skip and cancel preview, act and are audited",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          const executions: Array<string> = []
          const cli = makeCli(store, app, executions)
          yield* badRows(app, [["a", 0]])
          const runId = (yield* exec(cli, "start", "cli-job", "--params", `{"label":"skip"}`, "--json")).json().runId
          yield* Effect.scoped(Effect.gen(function*() {
            yield* Worker.make({ jobs: [cliJob(app, executions)], ...liveWorker })
            expect((yield* awaitRun(runId)).run.status).toBe("failed")

            const fromStep = (yield* exec(cli, "retry", runId, "-p", "c", "--from-step", "load", "--dry-run", "--json"))
              .json()
            expect(fromStep.units).toEqual([{
              partition: "c",
              unitId: expect.any(String),
              status: "succeeded",
              fromStep: "load",
              fromStepIndex: 0,
              fromChunk: 0,
              generation: 1,
              keysChange: true
            }])
            const unknownPartition = yield* exec(cli, "retry", runId, "-p", "zz", "--dry-run")
            expect(unknownPartition.code).toBe(2)
            expect(unknownPartition.stderr).toContain(`"zz" not found`)
            const unknownStep = yield* exec(cli, "retry", runId, "--failed", "--from-step", "nope", "--dry-run")
            expect(unknownStep.code).toBe(2)
            expect(unknownStep.stderr).toContain("(steps: load, publish)")

            const skipPlan = (yield* exec(cli, "skip", runId, "--failed", "--dry-run", "--json")).json()
            expect(skipPlan.units.map((u: any) => [u.partition, u.status])).toEqual([["a", "failed"]])
            const skipped = yield* exec(
              cli,
              "skip",
              runId,
              "--failed",
              "--reason",
              "not billed",
              "--actor",
              "carol",
              "--json"
            )
            expect(skipped.json().units).toEqual(skipPlan.units)
            const after = yield* awaitRun(runId)
            expect(after.run.status).toBe("succeeded")
            expect(after.units).toMatchObject({ succeeded: 3, skipped: 1 })
          }))

          // No worker now: a new run stays running, so cancel has something to stop.
          const other =
            (yield* exec(cli, "start", "cli-job", "--params", `{"label":"cancel-me"}`, "--json")).json().runId
          const cancelPlan = (yield* exec(cli, "cancel", other, "--dry-run", "--json")).json()
          expect(cancelPlan.units.map((u: any) => u.partition).sort()).toEqual(["a", "b", "c", "d"])
          expect((yield* unitsByPartition(other))["a"]!.status).toBe("pending")
          expect((yield* exec(cli, "cancel", other)).code).toBe(2)
          const cancelled = (yield* exec(cli, "cancel", other, "--reason", "wrong month", "--actor", "bob", "--json"))
            .json()
          expect(cancelled.units).toEqual(cancelPlan.units)
          const view = (yield* exec(cli, "status", other, "--json")).json()
          expect(view.run).toMatchObject({ status: "cancelled", reason: "cancelled by bob: wrong month" })
          expect(view.partitions).toMatchObject({ cancelled: 4 })

          const storeApi = yield* StateStore.StateStore
          expect((yield* storeApi.auditLog(runId)).map((e) => [e.action, e.actor, e.reason])).toEqual([
            ["skip", "carol", "not billed"]
          ])
          expect((yield* storeApi.auditLog(other)).map((e) => [e.action, e.actor, e.reason])).toEqual([
            ["cancel", "bob", "wrong month"]
          ])
        })
      ),
    90_000
  )

  it.live(
    "runbooks renders every error class of every job; redrive lists dead letters with their reason",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          const cli = makeCli(store, app, [])
          const printed = yield* exec(cli, "runbooks")
          expect(printed.code).toBe(0)
          expect(printed.stdout).toContain("## cli-job")
          expect(printed.stdout).toContain("### A row cannot be loaded")
          expect(printed.stdout).toContain("- id: `chunkwise-crash-loop`")
          expect((yield* exec(cli, "runbooks", "--job", "nope")).code).toBe(2)

          const dir = mkdtempSync(join(tmpdir(), "cw-runbooks-"))
          try {
            const written = (yield* exec(cli, "runbooks", "--out", dir, "--json")).json()
            expect(written.files).toEqual([join(dir, "cli-job.md"), join(dir, "README.md")])
            const page = readFileSync(join(dir, "cli-job.md"), "utf8")
            expect(page).toContain("# Runbooks: cli-job")
            expect(page).toContain("- id: `cli-bad-row`")
            expect(readFileSync(join(dir, "README.md"), "utf8")).toContain("| cli-job | [cli-bad-row](cli-job.md) |")
          } finally {
            rmSync(dir, { recursive: true, force: true })
          }

          // A message that is not chunkwise's, dead-lettered by a worker with its reason.
          const queue = yield* PgQueue.make({ schema: store })
          yield* queue.send([{ body: "hello" }])
          const [delivery] = yield* queue.receive({ max: 1, visibilityMs: 10_000, waitMs: 0 })
          yield* queue.deadLetter(delivery!.receipt, "MalformedMessage: not JSON")
          const listed = (yield* exec(cli, "redrive", "--list", "--json")).json()
          expect(listed.deadLetters).toEqual([
            expect.objectContaining({
              messageId: delivery!.messageId,
              reason: "MalformedMessage: not JSON",
              body: "hello"
            })
          ])
          expect((yield* exec(cli, "redrive", "--list")).stdout).toContain("MalformedMessage: not JSON")
          const moved = (yield* exec(cli, "redrive", "--id", delivery!.messageId, "--json")).json()
          expect(moved).toEqual({ redriven: 1, messageIds: [delivery!.messageId] })
          // Redriven already (or mistyped): said, not reported as done.
          const again = yield* exec(cli, "redrive", "--id", delivery!.messageId)
          expect(again.code).toBe(2)
          expect(again.stderr).toContain("redrove 0 of 1 message(s)")
          expect((yield* exec(cli, "redrive", "--list")).stdout).toBe("No dead-lettered messages.")
          expect((yield* queue.depth).ready).toBe(1)
        })
      ),
    60_000
  )

  it.live(
    "runs as a real bin: exit codes and JSON on stdout",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          const bin = fileURLToPath(new URL("./cli-bin.ts", import.meta.url))
          const spawnBin = (...args: ReadonlyArray<string>) =>
            Effect.async<{ code: number | null; stdout: string; stderr: string }>((resume) => {
              const child = spawn(process.execPath, ["--import", "tsx", bin, ...args], {
                env: { ...process.env, CW_STORE: store, CW_APP: app },
                stdio: ["ignore", "pipe", "pipe"]
              })
              let stdout = ""
              let stderr = ""
              child.stdout.on("data", (d) => (stdout += d))
              child.stderr.on("data", (d) => (stderr += d))
              child.on("exit", (code) => resume(Effect.succeed({ code, stdout, stderr })))
            })
          const started = yield* spawnBin("start", "cli-job", "--params", `{"label":"bin"}`, "--json")
          expect(started.code).toBe(0)
          expect(JSON.parse(started.stdout)).toMatchObject({ job: "cli-job", created: true, partitions: 4 })
          const missing = yield* spawnBin("status", "run_missing")
          expect(missing.code).toBe(2)
          expect(missing.stderr).toContain(`run "run_missing" not found`)
        })
      ),
    60_000
  )
})
