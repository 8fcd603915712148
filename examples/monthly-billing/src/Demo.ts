/**
 * The one-command demo: migrate, seed a month, start a worker in this process, bill the month with a
 * progress bar, print a summary, check every invoice against the independent computation, then run
 * the same month again (attaching to the finished run, and as an explicit re-run) and show that
 * nothing changed.
 *
 * @since 0.1.0
 */
import { type Errors, type Job, type QueueAdapter, Runner, StateStore, Worker } from "@chunkwise/core"
import type { SqlClient, SqlError } from "@effect/sql"
import { Clock, Console, type Duration, Effect, type Scope } from "effect"
import type { BillingError } from "./Errors.js"
import * as Expected from "./Expected.js"
import * as Seed from "./Seed.js"
import * as Tables from "./Tables.js"

/** Options of `run`. */
export interface Options {
  readonly job: Job.Job<{ readonly month: string }, SqlClient.SqlClient>
  readonly schema: string
  readonly month: string
  readonly companies: number
  readonly records: number
  readonly seed: number
  readonly concurrency: number
  readonly leaseDuration: Duration.DurationInput
  /** Draw a live progress bar (default: when stderr is a terminal). */
  readonly progress?: boolean | undefined
  /** Labels the run, so a demo on a database with earlier demos bills again (default: the time). */
  readonly label?: string | undefined
}

/** What the demo measured and checked. */
export interface Result {
  readonly runId: string
  readonly status: string
  readonly seconds: number
  readonly recordsPerSecond: number
  readonly verification: Expected.Verification
  readonly first: Expected.Snapshot
  readonly afterAttach: Expected.Snapshot
  readonly afterRerun: Expected.Snapshot
  readonly rerunPartitions: number
}

const yen = (n: bigint | string) => `¥${BigInt(n).toLocaleString("en-US")}`
const count = (n: number) => n.toLocaleString("en-US")

const bar = (done: number, total: number, width = 30) => {
  const filled = total === 0 ? width : Math.round((done / total) * width)
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`
}

/** Runs the demo on the database, store and queue in context. */
export const run = (
  options: Options
): Effect.Effect<
  Result,
  | BillingError
  | SqlError.SqlError
  | Errors.ConfigurationError
  | Errors.StoreUnavailable
  | Errors.NotFound
  | Errors.RunKeyConflict
  | Errors.RunAlreadyActive
  | Errors.EnumerationFailed
  | Errors.InvalidParams,
  SqlClient.SqlClient | StateStore.StateStore | QueueAdapter.QueueAdapter | Scope.Scope
> =>
  Effect.gen(function*() {
    const { month, schema } = options
    const now = Clock.currentTimeMillis
    yield* Tables.migrate(schema)
    yield* Console.log(
      `1. seed ${count(options.records)} work records of ${count(options.companies)} companies ` +
        `around ${month} (seed ${options.seed})`
    )
    const seedStart = yield* now
    yield* Seed.seed({ schema, month, companies: options.companies, records: options.records, seed: options.seed })
    yield* Console.log(`   done in ${(((yield* now) - seedStart) / 1000).toFixed(1)} s`)

    // The worker runs in this scope, beside the demo; the in-memory queue lives in this process.
    yield* Worker.make({ jobs: [options.job], concurrency: options.concurrency, leaseDuration: options.leaseDuration })
    const label = options.label ?? `demo-${yield* now}`
    const started = yield* now
    const { partitions, runId } = yield* Runner.start(options.job, { month }, { rerun: label })
    yield* Console.log(`2. bill ${month}: run ${runId}, ${count(partitions)} companies, heaviest first`)
    const progress = yield* watch(runId, options.progress ?? process.stderr.isTTY === true)
    const seconds = ((yield* now) - started) / 1000
    const recordsPerSecond = progress.items / Math.max(seconds, 0.001)
    const first = yield* Expected.snapshot(schema, month)
    yield* Console.log(
      [
        `   ${progress.run.status} in ${seconds.toFixed(1)} s: ${count(first.invoices)} invoices, ` +
        `${count(first.lines)} invoice lines, ${count(first.notifications)} notifications, total ${
          yen(first.totalYen)
        }`,
        `   ${count(progress.items)} records billed in ${count(progress.chunks)} chunks: ` +
        `${count(Math.round(recordsPerSecond))} records/s`
      ].join("\n")
    )

    yield* Console.log(`3. check every invoice, line, record and notification against the rules, computed again`)
    const verification = yield* Expected.verify(schema, month)
    yield* Console.log(
      verification.problems.length === 0
        ? `   all correct: ${count(verification.invoices)} invoices, ${count(verification.lines)} lines, ` +
          `${yen(verification.totalYen)}`
        : `   WRONG:\n${verification.problems.map((p) => `   - ${p}`).join("\n")}`
    )

    yield* Console.log(`4. run ${month} again`)
    const again = yield* Runner.start(options.job, { month }, { rerun: label })
    const afterAttach = yield* Expected.snapshot(schema, month)
    yield* Console.log(
      `   the same run: attached to ${again.runId} (${again.status}, created: ${again.created}); ` +
        (same(first, afterAttach) ? "nothing changed" : "SOMETHING CHANGED")
    )
    const rerun = yield* Runner.start(options.job, { month }, { rerun: `${label}-again` })
    yield* watch(rerun.runId, false)
    const afterRerun = yield* Expected.snapshot(schema, month)
    yield* Console.log(
      `   an explicit re-run (${rerun.runId}): ${count(rerun.partitions)} companies left to bill; ` +
        (same(first, afterRerun) ? "nothing changed" : "SOMETHING CHANGED")
    )
    const result: Result = {
      runId,
      status: progress.run.status,
      seconds,
      recordsPerSecond,
      verification,
      first,
      afterAttach,
      afterRerun,
      rerunPartitions: rerun.partitions
    }
    return result
  })

/** Whether two snapshots are equal. */
export const same = (a: Expected.Snapshot, b: Expected.Snapshot) => JSON.stringify(a) === JSON.stringify(b)

/** Polls the run until it ends, drawing a progress bar (or nothing). */
const watch = (runId: string, draw: boolean) =>
  Effect.gen(function*() {
    const store = yield* StateStore.StateStore
    while (true) {
      const progress = yield* Runner.status(runId)
      const ended = progress.units.succeeded + progress.units.failed + progress.units.skipped +
        progress.units.cancelled
      const total = progress.run.partitionCount
      if (draw) {
        yield* Effect.sync(() =>
          process.stderr.write(
            `\r\x1b[2K   ${bar(ended, total)} ${count(ended)}/${count(total)} companies · ` +
              `${count(progress.items)} records · ${count(progress.chunks)} chunks`
          )
        )
      }
      if (StateStore.isTerminalRun(progress.run.status)) {
        if (draw) yield* Effect.sync(() => process.stderr.write("\n"))
        if (progress.run.status !== "succeeded") {
          const failures = yield* store.listFailures(runId, { limit: 5 })
          for (const f of failures) {
            yield* Console.log(`   failed: company ${f.partitionKey}, ${f.step}: [${f.errorTag}] ${f.message}`)
          }
        }
        return progress
      }
      yield* Effect.sleep("200 millis")
    }
  })
