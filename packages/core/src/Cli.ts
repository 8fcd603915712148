/**
 * The operator CLI, built from a service's own jobs and layers with `@effect/cli`, so its commands
 * know the service's jobs, error classes and runbooks:
 *
 * ```ts
 * // bin/billing.ts
 * import * as Cli from "@chunkwise/core/Cli"
 *
 * Cli.main(Cli.make({
 *   name: "billing",
 *   jobs: [monthlyBilling],
 *   layer: PgStateStore.layer().pipe(Layer.provideMerge(Db)),   // the store + what the jobs need
 *   queue: PgQueue.layer().pipe(Layer.provide(Db))              // opened only by `worker` and `redrive`
 * }))
 * ```
 *
 * Commands: `start`, `worker`, `status`, `failures`, `retry`, `skip`, `cancel`, `audit`, `redrive`,
 * `runbooks`, `limits` (needs a `ResourceLimiter` in `layer`, e.g. `PgResourceLimiter.layer()`). Output is a table by default and JSON with `--json` (shapes: `StatusJson`,
 * `FailedPartitionJson`, `ActionJson`, ...; documented in docs/guides/operations.md). Exit codes: 0
 * success, 1 the operation or the awaited run failed, 2 bad input (unknown job, run or step, invalid
 * params or flags), each with a message that names the input and the fix.
 *
 * Import it from `@chunkwise/core/Cli`: it needs `@effect/cli` and `@effect/platform-node`, which
 * services without a CLI never load.
 *
 * @since 0.1.0
 */
import { Args, Command, Options, ValidationError } from "@effect/cli"
import type * as CliApp from "@effect/cli/CliApp"
import { FileSystem, Path } from "@effect/platform"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Config, ConfigError, Console, Data, Effect, Layer, Logger, LogLevel, Option, Schema } from "effect"
import * as os from "node:os"
import type * as Errors from "./Errors.js"
import * as F from "./internal/cli/format.js"
import * as L from "./internal/cli/limits.js"
import * as Q from "./internal/cli/quarantine.js"
import * as V from "./internal/cli/views.js"
import { positiveIntProblem } from "./internal/settings.js"
import type * as Job from "./Job.js"
import * as Quarantine from "./Quarantine.js"
import { QueueAdapter } from "./QueueAdapter.js"
import * as ResourceLimiter from "./ResourceLimiter.js"
import * as Runbook from "./Runbook.js"
import * as Runner from "./Runner.js"
import { isTerminalRun, StateStore, type UnitRecord } from "./StateStore.js"
import * as Worker from "./Worker.js"

export type { LimitJson } from "./internal/cli/limits.js"
export type { ItemJson as QuarantineItemJson, RetryJson as QuarantineRetryJson } from "./internal/cli/quarantine.js"
export type {
  ActionJson,
  ActionUnitJson,
  FailedPartitionJson,
  FailureClassJson,
  LimitChangeJson,
  RunSummaryJson,
  StatusJson,
  ThrottledJson
} from "./internal/cli/views.js"

/** Options of `Cli.make`. */
export interface Options<Jobs extends ReadonlyArray<Job.Any>, E, QE> {
  /** The executable's name, shown in help and in the commands it suggests (default `chunkwise`). */
  readonly name?: string | undefined
  readonly version?: string | undefined
  /** The service's jobs: `start` finds them by name, `runbooks` renders their error classes. */
  readonly jobs: Jobs
  /**
   * The state store and the services the jobs need (their partitioners run on `start`, their steps
   * in `worker`). It may provide the `QueueAdapter` too; pass `queue` instead to keep read-only
   * commands from opening a queue client (D19).
   */
  readonly layer: Layer.Layer<StateStore | Job.Context<Jobs[number]>, E>
  /** The queue, opened only by `worker` and `redrive`. Share the database layer by reference with `layer`. */
  readonly queue?: Layer.Layer<QueueAdapter, QE> | undefined
  /** Worker options for the `worker` command (`--concurrency` overrides `concurrency`). */
  readonly worker?: Omit<Worker.Options<Jobs>, "jobs"> | undefined
}

/** A built CLI: run it with `Cli.run` (in-process) or `Cli.main` (as a bin). */
export interface Cli {
  readonly name: string
  readonly version: string
  readonly jobs: ReadonlyMap<string, Job.Any>
  readonly command: Command.Command<string, never, CliError, unknown>
}

/** A command that could not do what it was asked; the message names the input and the fix. */
export class CliError extends Data.TaggedError("CliError")<{
  readonly message: string
  /** 1: the operation (or the awaited run) failed; 2: bad input. */
  readonly exitCode: 1 | 2
}> {}

const usage = (message: string) => new CliError({ message, exitCode: 2 })
const failed = (message: string) => new CliError({ message, exitCode: 1 })

/** Store, queue and runner errors in the operator's words. */
const explain = (cli: string) => (error: unknown): CliError => {
  if (error instanceof CliError) return error
  // A setting read from the environment: its name is in the error's text, not in its message.
  if (ConfigError.isConfigError(error)) return usage(`invalid configuration: ${String(error)}`)
  const tagged = error as { readonly _tag?: string; readonly message?: string } & Record<string, unknown>
  switch (tagged?._tag) {
    case "NotFound": {
      const e = error as Errors.NotFound
      return e.what === "run"
        ? usage(`run "${e.id}" not found in the store. \`${cli} status\` lists the recent runs.`)
        : usage(`${e.what} "${e.id}" not found. Check the name against \`${cli} status <run>\`.`)
    }
    case "InvalidParams":
      return usage(`${tagged.message}. Fix --params: it is JSON decoded with the job's params schema.`)
    case "RunKeyConflict":
    case "RunAlreadyActive":
    case "UnknownJob":
      return usage(String(tagged.message))
    case "StoreUnavailable":
      return failed(
        `the state store is unavailable (${String(tagged["operation"])}): ${tagged.message}. ` +
          `Check the database is up and the connection settings of this CLI.`
      )
    case "QueueUnavailable":
      return failed(
        `the queue is unavailable (${String(tagged["operation"])}): ${tagged.message}. ` +
          `Check the broker is up and the queue settings of this CLI.`
      )
    case "ConfigurationError":
    case "EnumerationFailed":
      return failed(String(tagged.message))
    case "SqlError": {
      // "Failed to connect" alone names no cause: the driver's says which host, database or role.
      const cause = (tagged["cause"] as { readonly message?: unknown } | undefined)?.message
      return failed(
        `${tagged.message}${typeof cause === "string" && cause !== "" ? `: ${cause}` : ""}. ` +
          `Check the database is up and the connection settings of this CLI.`
      )
    }
    default:
      return failed(
        typeof tagged?.message === "string" && tagged.message !== "" ? tagged.message : Cause.pretty(Cause.fail(error))
      )
  }
}

/** An integer flag of at least `min`: below it, a usage error that names the flag (not a failed query). */
const integerAtLeast = (name: string, min: number) =>
  Options.integer(name).pipe(
    Options.filterMap((n) => (n >= min ? Option.some(n) : Option.none()), `--${name} must be at least ${min}`)
  )

/** The operator's name for the audit log: `--actor`, else `$USER`, else the OS account. */
const actorConfig = Config.string("USER").pipe(
  Config.orElse(() => Config.string("USERNAME")),
  Config.orElse(() =>
    Config.sync(() => {
      try {
        return os.userInfo().username
      } catch {
        return "unknown"
      }
    })
  )
)

// ---- shared options and arguments

const json = Options.boolean("json").pipe(
  Options.withDescription("Print JSON instead of a table (stable shape, see the operator's guide)")
)
const runArg = Args.text({ name: "run" }).pipe(Args.withDescription("The run id (printed by start, listed by status)"))
const partitions = Options.text("partition").pipe(
  Options.withAlias("p"),
  Options.repeated,
  Options.withDescription("A partition key (repeatable)")
)
const failedFlag = Options.boolean("failed").pipe(
  Options.withDescription("Every failed partition (and those cancelled when the run failed fast)")
)
const dryRun = Options.boolean("dry-run").pipe(
  Options.withDescription("Show exactly what would change, change nothing")
)
const reason = Options.text("reason").pipe(
  Options.optional,
  Options.withDescription("Why (required unless --dry-run); recorded in the audit log")
)
const actor = Options.text("actor").pipe(
  Options.optional,
  Options.withDescription("Who (default: $USER); recorded in the audit log")
)

/**
 * Builds the operator CLI of a service from its jobs and layers.
 *
 * @example
 * ```ts
 * const cli = Cli.make({ name: "billing", jobs: [monthlyBilling], layer: StoreLive, queue: QueueLive })
 * Cli.main(cli) // in bin/billing.ts; or `yield* Cli.run(cli, ["status", runId, "--json"])`
 * ```
 */
export const make = <const Jobs extends ReadonlyArray<Job.Any>, E = never, QE = never>(
  options: Options<Jobs, E, QE>
): Cli => {
  const name = options.name ?? "chunkwise"
  const version = options.version ?? "0.1.0"
  const jobs = new Map<string, Job.Any>()
  for (const job of options.jobs) {
    if (jobs.has(job.name)) throw new TypeError(`Cli.make: two jobs are named "${job.name}"; job names must be unique`)
    jobs.set(job.name, job)
  }
  const explainError = explain(name)
  const layer = options.layer as Layer.Layer<StateStore, unknown>
  const quiet = Logger.withMinimumLogLevel(LogLevel.Warning)

  /** Runs a command's effect over the store (and the jobs' services); maps every error to a CliError. */
  const withStore = <A>(effect: Effect.Effect<A, unknown, StateStore>): Effect.Effect<A, CliError> =>
    effect.pipe(Effect.provide(layer), Effect.mapError(explainError), quiet)

  /** Also opens the queue: `queue` when given, else the QueueAdapter that `layer` provides. */
  const withQueue = <A>(effect: Effect.Effect<A, unknown, StateStore | QueueAdapter>): Effect.Effect<A, CliError> =>
    (options.queue === undefined
      ? Effect.flatMap(Effect.serviceOption(QueueAdapter), (queue) =>
        Option.isNone(queue)
          ? Effect.fail(
            failed(
              `this CLI has no queue: pass \`queue\` to Cli.make (or provide a QueueAdapter in its layer) to run ` +
                `worker and redrive`
            )
          )
          : Effect.provideService(effect, QueueAdapter, queue.value)).pipe(Effect.provide(layer))
      : effect.pipe(Effect.provide(Layer.merge(layer, options.queue as Layer.Layer<QueueAdapter, unknown>))))
      .pipe(Effect.mapError(explainError))

  const print = (asJson: boolean, data: unknown, text: () => string) =>
    Console.log(asJson ? JSON.stringify(data, null, 2) : text())

  const requireRun = (runId: string) =>
    Effect.flatMap(StateStore, (store) =>
      Effect.flatMap(store.getRun(runId), (found) =>
        Option.isNone(found)
          ? Effect.fail(usage(`run "${runId}" not found in the store. \`${name} status\` lists the recent runs.`))
          : Effect.succeed(found.value)))

  const findJob = (jobName: string) =>
    Effect.suspend(() => {
      const job = jobs.get(jobName)
      return job === undefined
        ? Effect.fail(
          usage(
            `unknown job "${jobName}"; this CLI knows: ${[...jobs.keys()].join(", ") || "(none)"}. ` +
              `Check the name, or register the job in Cli.make({ jobs }).`
          )
        )
        : Effect.succeed(job)
    })

  /** The run's report, with its throttled partitions when the CLI's layer has a `ResourceLimiter`. */
  const reportOf = (runId: string, windowMs: number, slowest: number) =>
    Effect.gen(function*() {
      const store = yield* StateStore
      const report = yield* store.report(runId, { slowest, windowMs })
      const limiter = yield* Effect.serviceOption(ResourceLimiter.ResourceLimiter)
      const waits = Option.isNone(limiter) ? undefined : yield* limiter.value.waits({ runId })
      return V.status(jobs, report, waits)
    })

  const limiterOf = Effect.flatMap(
    Effect.serviceOption(ResourceLimiter.ResourceLimiter),
    Option.match({
      onNone: () =>
        Effect.fail(
          failed(
            `this CLI has no ResourceLimiter: add PgResourceLimiter.layer({ schema }) to Cli.make's layer ` +
              `(ResourceLimiter.layerMemory() with the in-memory store)`
          )
        ),
      onSome: Effect.succeed
    })
  )

  const resolveActor = (given: Option.Option<string>) =>
    Option.match(given, {
      onSome: Effect.succeed,
      onNone: () => Effect.orElseSucceed(actorConfig, () => "unknown")
    })

  const needReason = (dry: boolean, given: Option.Option<string>, action: string) =>
    dry || Option.isSome(given)
      ? Effect.succeed(Option.getOrNull(given))
      : Effect.fail(usage(`${action} needs --reason "<why>": it is recorded in the audit log with the actor.`))

  const selectionOf = (keys: ReadonlyArray<string>, all: boolean, action: string) =>
    keys.length > 0 && all
      ? Effect.fail(usage(`${action}: give either --partition or --failed, not both`))
      : keys.length === 0 && !all
      ? Effect.fail(
        usage(
          `${action}: say which partitions: --partition <key> (repeatable) or --failed (every failed partition, ` +
            `and those cancelled when the run failed fast)`
        )
      )
      : Effect.succeed(keys.length > 0 ? keys : undefined)

  // ---- start

  const progressLine = (view: V.StatusJson) => {
    const p = view.partitions
    const ended = p.succeeded + p.failed + p.skipped + p.cancelled
    return `${F.bar(ended, p.total)} ${F.count(ended)}/${F.count(p.total)} partitions · ${
      F.count(p.succeeded)
    } done · ` +
      `${F.count(p.failed)} failed · ${F.count(p.leased)} running · ${
        view.throttled !== null && view.throttled.length > 0 ? `${F.count(view.throttled.length)} throttled · ` : ""
      }${F.rate(view.throughput.chunksPerSecond)} chunks/s · ` +
      `ETA ${F.duration(view.throughput.etaMs)} · ${view.run.status}`
  }

  const awaitRun = (runId: string, intervalMs: number) =>
    Effect.gen(function*() {
      const tty = process.stderr.isTTY === true
      let last = ""
      while (true) {
        const view = yield* reportOf(runId, 10_000, 0).pipe(
          Effect.retry({ while: (e) => e._tag === "StoreUnavailable", times: 30 })
        )
        const line = progressLine(view)
        if (tty) {
          yield* Effect.sync(() => process.stderr.write(`\r\x1b[2K${line}`))
        } else {
          // Without a terminal, one line whenever the partition counts or the status change.
          const key = line.replace(/ · [\d,]+ throttled/, "").replace(/ · [\d.,]+ chunks\/s · ETA [^·]+/, "")
          if (key !== last) yield* Console.error(line)
          last = key
        }
        if (isTerminalRun(view.run.status)) {
          if (tty) yield* Effect.sync(() => process.stderr.write("\n"))
          return view
        }
        yield* Effect.sleep(intervalMs)
      }
    })

  const start = Command.make(
    "start",
    {
      job: Args.text({ name: "job" }).pipe(Args.withDescription("The job's name")),
      params: Options.text("params").pipe(
        Options.withDefault("{}"),
        Options.withDescription("The run's params as JSON, decoded with the job's params schema")
      ),
      wait: Options.boolean("wait").pipe(
        Options.withDescription("Show live progress until the run ends; exit 1 unless it succeeds")
      ),
      rerun: Options.text("rerun").pipe(
        Options.optional,
        Options.withDescription("A label that makes a new run of the same params (joins the run key)")
      ),
      interval: integerAtLeast("interval-ms", 10).pipe(
        Options.withDefault(1000),
        Options.withDescription("How often --wait polls the store")
      ),
      json
    },
    (args) =>
      Effect.gen(function*() {
        const job = yield* findJob(args.job)
        const params = yield* Effect.try({
          try: () => JSON.parse(args.params) as unknown,
          catch: (e) =>
            usage(
              `--params is not JSON (${e instanceof Error ? e.message : String(e)}). Give the params as a JSON ` +
                `object, e.g. --params '${exampleParams(job)}'`
            )
        })
        const started = yield* withStore(
          Runner.startEncoded(job, params, { rerun: Option.getOrUndefined(args.rerun) }).pipe(
            Effect.mapError((e) =>
              e._tag === "InvalidParams"
                ? usage(
                  `${e.message}. Fix --params: job "${job.name}" expects ${
                    String(Schema.encodedSchema(job.params).ast)
                  }, e.g. --params '${exampleParams(job)}'`
                )
                : e
            )
          ) as Effect.Effect<Runner.Started, unknown, StateStore>
        )
        const startJson = { ...started, job: job.name }
        if (!args.wait) {
          return yield* print(args.json, startJson, () =>
            F.pairs([
              ["run", started.runId],
              ["job", job.name],
              ["status", `${started.status}${started.created ? "" : " (attached to the existing run)"}`],
              ["partitions", F.count(started.partitions)],
              ["next", `${name} status ${started.runId}`]
            ]))
        }
        if (!args.json) {
          yield* Console.log(
            `run ${started.runId} of ${job.name}: ${started.created ? "started" : "attached to the existing run"}, ` +
              `${F.count(started.partitions)} partitions`
          )
        }
        yield* withStore(awaitRun(started.runId, args.interval))
        const final = yield* withStore(reportOf(started.runId, 60_000, 5))
        yield* print(args.json, { ...startJson, final }, () => V.statusText(final, name))
        if (final.run.status !== "succeeded") {
          return yield* failed(
            `run ${started.runId} ended ${final.run.status}${
              final.run.reason === null ? "" : `: ${final.run.reason}`
            }. ` +
              `Next: \`${name} failures ${started.runId}\`.`
          )
        }
      })
  ).pipe(Command.withDescription("Start a run of a job (or attach to the run with the same params)"))

  // ---- worker

  const worker = Command.make(
    "worker",
    {
      concurrency: Options.integer("concurrency").pipe(
        Options.optional,
        Options.withDescription("Units this worker runs at once (default: the jobs' largest perWorker)")
      )
    },
    (args) =>
      Effect.gen(function*() {
        const concurrency = Option.getOrUndefined(args.concurrency)
        const concurrencyProblem = positiveIntProblem("--concurrency", concurrency)
        if (concurrencyProblem !== undefined) return yield* usage(concurrencyProblem)
        yield* withQueue(
          Effect.gen(function*() {
            const handle = yield* Worker.make({
              cliName: name,
              ...options.worker,
              jobs: [...jobs.values()],
              ...(concurrency === undefined ? {} : { concurrency })
            })
            yield* Console.error(
              `worker ${handle.workerId} running ${[...jobs.keys()].join(", ")}; SIGTERM or Ctrl-C drains it`
            )
            return yield* Effect.never
          }).pipe(Effect.scoped) as Effect.Effect<never, unknown, StateStore | QueueAdapter>
        )
      })
  ).pipe(Command.withDescription("Run a worker until SIGTERM/SIGINT, then drain it gracefully"))

  // ---- status

  const status = Command.make(
    "status",
    {
      run: runArg.pipe(Args.optional),
      job: Options.text("job").pipe(Options.optional, Options.withDescription("List only this job's runs")),
      limit: integerAtLeast("limit", 1).pipe(Options.withDefault(20), Options.withDescription("Runs listed")),
      slowest: integerAtLeast("slowest", 0).pipe(
        Options.withDefault(5),
        Options.withDescription("Slowest partitions shown")
      ),
      json
    },
    (args) =>
      Option.match(args.run, {
        onNone: () =>
          withStore(Effect.flatMap(StateStore, (store) =>
            Effect.flatMap(
              store.listRuns({ job: Option.getOrUndefined(args.job), limit: args.limit }),
              (runs) => {
                const rows = runs.map((run) => V.runSummary(run))
                return print(args.json, { runs: rows }, () => V.runsText(rows))
              }
            ))),
        onSome: (runId) =>
          withStore(
            Effect.flatMap(
              reportOf(runId, 60_000, args.slowest),
              (view) => print(args.json, view, () => V.statusText(view, name))
            )
          )
      })
  ).pipe(Command.withDescription("List recent runs, or show one run: partitions, steps, throughput, failures"))

  // ---- failures

  const failures = Command.make(
    "failures",
    { run: runArg, limit: integerAtLeast("limit", 1).pipe(Options.withDefault(1000)), json },
    (args) =>
      withStore(Effect.gen(function*() {
        const store = yield* StateStore
        const run = yield* requireRun(args.run)
        const units = yield* store.listUnits(run.runId, { status: ["failed"], limit: args.limit })
        const records = yield* store.listFailures(run.runId, { limit: Math.max(10_000, args.limit * 10) })
        const rows = V.failedPartitions(jobs, name, run, units, records)
        yield* print(args.json, { runId: run.runId, failures: rows }, () => V.failuresText(run.runId, rows))
      }))
  ).pipe(Command.withDescription("Each failed partition: error, cursor, attempts, runbook, retry command"))

  // ---- retry, skip, cancel

  const unitsByKey = (runId: string) =>
    Effect.flatMap(StateStore, (store) =>
      Effect.map(
        store.listUnits(runId, { limit: 1_000_000 }),
        (units) => new Map(units.map((u) => [u.unitId, u] as const))
      ))

  const retry = Command.make(
    "retry",
    {
      run: runArg,
      partitions,
      failed: failedFlag,
      fromStep: Options.text("from-step").pipe(
        Options.optional,
        Options.withDescription("Restart these partitions from this step; their idempotency keys change")
      ),
      dryRun,
      reason,
      actor,
      json
    },
    (args) =>
      Effect.gen(function*() {
        const keys = yield* selectionOf(args.partitions, args.failed, "retry")
        const why = yield* needReason(args.dryRun, args.reason, "retry")
        const who = yield* resolveActor(args.actor)
        const view = yield* withStore(Effect.gen(function*() {
          const run = yield* requireRun(args.run)
          const before = yield* unitsByKey(run.runId)
          const planned = yield* Runner.retry(run.runId, {
            partitions: keys,
            fromStep: Option.getOrUndefined(args.fromStep),
            dryRun: args.dryRun
          }, { actor: who, reason: why ?? "" })
          return {
            action: "retry" as const,
            runId: run.runId,
            dryRun: args.dryRun,
            actor: who,
            reason: why,
            units: planned.map((p) => V.plannedUnitJson(run, before.get(p.unitId)!, p))
          }
        }))
        yield* print(args.json, view, () => V.actionText(view))
      })
  ).pipe(Command.withDescription("Run failed (or given) partitions again, from their checkpoint or a step"))

  const skip = Command.make(
    "skip",
    { run: runArg, partitions, failed: failedFlag, dryRun, reason, actor, json },
    (args) =>
      Effect.gen(function*() {
        const keys = yield* selectionOf(args.partitions, args.failed, "skip")
        const why = yield* needReason(args.dryRun, args.reason, "skip")
        const who = yield* resolveActor(args.actor)
        const view = yield* withStore(Effect.gen(function*() {
          const run = yield* requireRun(args.run)
          const planned = yield* Runner.skip(run.runId, { partitions: keys, dryRun: args.dryRun }, {
            actor: who,
            reason: why ?? ""
          })
          return {
            action: "skip" as const,
            runId: run.runId,
            dryRun: args.dryRun,
            actor: who,
            reason: why,
            units: planned.map((p) => V.bareUnitJson(p))
          }
        }))
        yield* print(args.json, view, () => V.actionText(view))
      })
  ).pipe(Command.withDescription("Mark partitions skipped so the run can complete without them"))

  const cancel = Command.make(
    "cancel",
    { run: runArg, dryRun, reason, actor, json },
    (args) =>
      Effect.gen(function*() {
        const why = yield* needReason(args.dryRun, args.reason, "cancel")
        const who = yield* resolveActor(args.actor)
        const view = yield* withStore(Effect.gen(function*() {
          const store = yield* StateStore
          const run = yield* requireRun(args.run)
          // The units cancel stops: every unit not yet terminal (the same rule as the store's cancelRun).
          const live: ReadonlyArray<UnitRecord> = isTerminalRun(run.status)
            ? []
            : yield* store.listUnits(run.runId, { status: ["pending", "leased", "waiting"], limit: 1_000_000 })
          if (!args.dryRun) yield* Runner.cancel(run.runId, { actor: who, reason: why ?? "" })
          return {
            action: "cancel" as const,
            runId: run.runId,
            dryRun: args.dryRun,
            actor: who,
            reason: why,
            units: live.map((u) => V.bareUnitJson(u))
          }
        }))
        yield* print(args.json, view, () =>
          view.units.length === 0 && !view.dryRun
            ? `Run ${view.runId} had already ended; nothing was cancelled.`
            : V.actionText(view))
      })
  ).pipe(Command.withDescription("Cancel a run: pending units never start, running ones stop at their next commit"))

  const audit = Command.make(
    "audit",
    { run: runArg, json },
    (args) =>
      withStore(Effect.gen(function*() {
        const store = yield* StateStore
        const run = yield* requireRun(args.run)
        const entries = yield* store.auditLog(run.runId)
        const rows = entries.map((e) => ({ ...e, at: new Date(e.at).toISOString() }))
        yield* print(args.json, { runId: run.runId, entries: rows }, () => V.auditText(run.runId, entries))
      }))
  ).pipe(Command.withDescription("Operator actions on a run: who, when, why"))

  // ---- redrive

  const redrive = Command.make(
    "redrive",
    {
      list: Options.boolean("list").pipe(Options.withDescription("List the dead letters and why, move nothing")),
      ids: Options.text("id").pipe(Options.repeated, Options.withDescription("A message id to redrive (repeatable)")),
      limit: integerAtLeast("limit", 1).pipe(Options.withDefault(100)),
      json
    },
    (args) =>
      withQueue(Effect.gen(function*() {
        const queue = yield* QueueAdapter
        if (args.list) {
          const dead = yield* queue.deadLetters({ limit: args.limit })
          const rows = dead.map((d) => ({ ...d, at: new Date(d.at).toISOString() }))
          return yield* print(args.json, { deadLetters: rows }, () =>
            rows.length === 0
              ? "No dead-lettered messages."
              : F.table(
                ["MESSAGE ID", "AT", "RECEIVES", "REASON", "BODY"],
                rows.map((d) => [d.messageId, d.at, d.receiveCount, F.clip(d.reason, 70), F.clip(d.body, 60)])
              ))
        }
        const moved = yield* queue.redrive({ messageIds: args.ids.length === 0 ? undefined : args.ids })
        // Ids that moved nothing were mistyped or redriven already: say so rather than report success.
        const asked = new Set(args.ids).size
        if (asked > 0 && moved < asked) {
          return yield* usage(
            `redrove ${moved} of ${asked} message(s): the others are not dead letters of this queue ` +
              `(a typo, or redriven already). \`redrive --list\` shows the dead letters and their ids.`
          )
        }
        yield* print(
          args.json,
          { redriven: moved, messageIds: args.ids.length === 0 ? null : args.ids },
          () =>
            `Redrove ${moved} message(s) to the queue. Workers re-check each against the store: a unit that ` +
            `already ended is acknowledged, a malformed body is dead-lettered again.`
        )
      }))
  ).pipe(Command.withDescription("List (--list) or redrive dead-lettered messages"))

  // ---- runbooks

  const runbooks = Command.make(
    "runbooks",
    {
      out: Options.text("out").pipe(
        Options.optional,
        Options.withDescription("Write one Markdown file per job and an index into this directory")
      ),
      job: Options.text("job").pipe(Options.optional, Options.withDescription("Only this job")),
      json
    },
    (args) =>
      Effect.gen(function*() {
        const chosen = yield* Option.match(args.job, {
          onNone: () => Effect.succeed([...jobs.values()]),
          onSome: (jobName) => Effect.map(findJob(jobName), (job) => [job])
        })
        const books: Array<Runbook.Book> = chosen.map((job) => ({
          job: job.name,
          runbooks: [...job.runbooks.values()]
        }))
        if (Option.isNone(args.out)) {
          return yield* print(args.json, { jobs: books }, () =>
            [
              `# Runbooks of ${name}`,
              "",
              `Generated from the code by \`${name} runbooks\`: one section per job, every error class it ` +
              `registers and chunkwise's built-in classes.`,
              "",
              Runbook.render(books)
            ].join("\n"))
        }
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const dir = args.out.value
        const files: Array<string> = []
        yield* Effect.gen(function*() {
          yield* fs.makeDirectory(dir, { recursive: true })
          for (const book of books) {
            const file = path.join(dir, `${book.job}.md`)
            yield* fs.writeFileString(file, `# Runbooks: ${book.job}\n\n${Runbook.render([book])}`)
            files.push(file)
          }
          const index = path.join(dir, "README.md")
          yield* fs.writeFileString(
            index,
            [
              `# Runbooks of ${name}`,
              "",
              "| job | runbook id | error class | severity | title |",
              "| --- | --- | --- | --- | --- |",
              ...books.flatMap((b) =>
                b.runbooks.map((r) =>
                  `| ${b.job} | [${r.id}](${b.job}.md) | \`${r.tag}\` | ${r.severity} | ${r.title} |`
                )
              ),
              ""
            ].join("\n")
          )
          files.push(index)
        }).pipe(
          Effect.mapError((e) => failed(`writing the runbooks to ${dir} failed: ${e.message}. Check the directory.`))
        )
        yield* print(args.json, { files }, () => `Wrote ${files.length} file(s):\n${files.join("\n")}`)
      })
  ).pipe(Command.withDescription("Render the Markdown runbook of every error class of every job"))

  // ---- quarantine

  const quarantineFilter = {
    step: Options.text("step").pipe(Options.optional, Options.withDescription("Only this step's items")),
    partitions
  }
  const quarantineList = Command.make(
    "list",
    {
      run: runArg,
      ...quarantineFilter,
      status: Options.choice("status", Quarantine.statuses).pipe(
        Options.repeated,
        Options.withDescription("Only items in this status (repeatable): quarantined, retry or resolved")
      ),
      limit: integerAtLeast("limit", 1).pipe(Options.withDefault(1000), Options.withDescription("Items listed")),
      json
    },
    (args) =>
      withStore(Effect.gen(function*() {
        const run = yield* requireRun(args.run)
        const entries = yield* Runner.quarantine(run.runId, {
          step: Option.getOrUndefined(args.step),
          partitions: args.partitions.length > 0 ? args.partitions : undefined,
          status: args.status.length > 0 ? args.status : undefined,
          limit: args.limit
        })
        const rows = entries.map(Q.itemJson)
        yield* print(args.json, { runId: run.runId, items: rows }, () => Q.itemsText(run.runId, rows, name))
      }))
  ).pipe(Command.withDescription("The items steps set aside: error, runbook, attempts, status"))

  const quarantineRetry = Command.make(
    "retry",
    { run: runArg, ...quarantineFilter, dryRun, reason, actor, json },
    (args) =>
      Effect.gen(function*() {
        const why = yield* needReason(args.dryRun, args.reason, "quarantine retry")
        const who = yield* resolveActor(args.actor)
        const view = yield* withStore(Effect.gen(function*() {
          const run = yield* requireRun(args.run)
          const step = Option.getOrUndefined(args.step)
          if (step !== undefined && !run.definition.steps.some((s) => s.name === step)) {
            return yield* Effect.fail(
              usage(
                `run ${run.runId} has no step "${step}"; its steps: ${
                  run.definition.steps.map((s) => s.name).join(", ")
                }`
              )
            )
          }
          const planned = yield* Runner.retryQuarantine(run.runId, {
            step,
            partitions: args.partitions.length > 0 ? args.partitions : undefined,
            dryRun: args.dryRun
          }, { actor: who, reason: why ?? "" })
          return Q.retryJson({ runId: run.runId, dryRun: args.dryRun, actor: who, reason: why }, planned)
        }))
        yield* print(args.json, view, () => Q.retryText(view))
      })
  ).pipe(Command.withDescription("Write quarantined items again after a fix; those that write are resolved"))

  const quarantine = Command.make("quarantine", {}, () =>
    Console.log(
      `${name} quarantine list <run>: the items steps set aside. ${name} quarantine retry <run>: write them ` +
        `again after a fix. \`${name} quarantine <command> --help\` explains each.`
    )).pipe(
      Command.withDescription("Items that steps with `skip` set aside: list them, re-run them after a fix"),
      Command.withSubcommands([quarantineList, quarantineRetry])
    )

  // ---- limits

  const limitsList = Command.make(
    "limits",
    { json },
    (args) =>
      withStore(Effect.gen(function*() {
        const limiter = yield* limiterOf
        const rows = (yield* limiter.settings).map(L.limitJson)
        yield* print(args.json, { limits: rows }, () => L.limitsText(rows, name))
      }))
  ).pipe(Command.withDescription("The resources steps load, their limits, permits in use and units waiting"))

  const limitFlag = (flag: string, description: string) =>
    Options.text(flag).pipe(Options.optional, Options.withDescription(`${description}; \`none\` removes it`))
  /** A flag's value: a number, `null` for `none`, `undefined` when not given. */
  const limitValue = (
    given: Option.Option<string>,
    setting: ResourceLimiter.SettingName,
    flag: string
  ) =>
    Option.match(given, {
      onNone: () => Effect.succeed(undefined),
      onSome: (text) => {
        if (text.trim().toLowerCase() === "none") return Effect.succeed(null)
        const value = text.trim() === "" ? Number.NaN : Number(text)
        const problem = ResourceLimiter.invalidSetting(setting, value, `--${flag}`)
        return problem === undefined
          ? Effect.succeed(value)
          : Effect.fail(usage(`${problem.replace(/\(got NaN\)/, `(got "${text}")`)} (or \`none\` to remove it)`))
      }
    })

  const limitsSet = Command.make(
    "set",
    {
      resource: Args.text({ name: "resource" }).pipe(Args.withDescription("The resource, e.g. primary-db")),
      chunksPerSecond: limitFlag("chunks-per-second", "Chunks that may start per second across all workers"),
      burst: limitFlag("burst", "Chunks that may start at once after a pause (default: one second of chunks)"),
      itemsPerSecond: limitFlag(
        "items-per-second",
        "Items that may start per second across all workers, a chunk counting as its planned size"
      ),
      itemsBurst: limitFlag(
        "items-burst",
        "Items that may start at once after a pause (default: one second of items)"
      ),
      inFlight: limitFlag("in-flight", "Chunks that may hold the resource at once across all workers"),
      create: Options.boolean("create").pipe(
        Options.withDescription("Set a limit on a resource no worker has declared yet")
      ),
      reason,
      actor,
      json
    },
    (args) =>
      Effect.gen(function*() {
        const nameProblem = ResourceLimiter.invalidResourceName(args.resource)
        if (nameProblem !== undefined) return yield* usage(nameProblem)
        const patch = {
          chunksPerSecond: yield* limitValue(args.chunksPerSecond, "chunksPerSecond", "chunks-per-second"),
          burst: yield* limitValue(args.burst, "burst", "burst"),
          itemsPerSecond: yield* limitValue(args.itemsPerSecond, "itemsPerSecond", "items-per-second"),
          itemsBurst: yield* limitValue(args.itemsBurst, "itemsBurst", "items-burst"),
          inFlight: yield* limitValue(args.inFlight, "inFlight", "in-flight")
        }
        if (Object.values(patch).every((v) => v === undefined)) {
          return yield* usage(
            `limits set: give --chunks-per-second, --burst, --items-per-second, --items-burst and/or --in-flight ` +
              `(a number, or none to remove it)`
          )
        }
        const why = yield* needReason(false, args.reason, "limits set")
        const who = yield* resolveActor(args.actor)
        const view = yield* withStore(Effect.gen(function*() {
          const limiter = yield* limiterOf
          const before = (yield* limiter.settings).find((u) => u.resource === args.resource)
          const after = yield* limiter.set(args.resource, patch, { actor: who, reason: why ?? "" }, {
            create: args.create
          }).pipe(
            Effect.catchTags({
              NotFound: () =>
                Effect.fail(
                  usage(
                    `resource "${args.resource}" is not known: no worker has declared it. \`${name} limits\` lists ` +
                      `the known ones; pass --create to set a limit before its first use.`
                  )
                ),
              ConfigurationError: (e) => Effect.fail(usage(e.message))
            })
          )
          return {
            resource: args.resource,
            before: before === undefined ? null : ResourceLimiter.limitOf(before),
            after: ResourceLimiter.limitOf(after),
            actor: who,
            reason: why
          }
        }))
        yield* print(args.json, view, () =>
          `${view.resource}: ${ResourceLimiter.summary(view.after)} (was ${
            view.before === null ? "not declared" : ResourceLimiter.summary(view.before)
          }), set by ${view.actor}: ${view.reason}. Every worker applies it within 5 s; chunks already running ` +
          `finish under the old limit.`)
      })
  ).pipe(Command.withDescription("Change a resource's limits while runs go (audited; workers pick it up within 5 s)"))

  const limitsHistory = Command.make(
    "history",
    {
      resource: Args.text({ name: "resource" }).pipe(Args.optional),
      limit: Options.integer("limit").pipe(Options.withDefault(50), Options.withDescription("Changes shown")),
      json
    },
    (args) =>
      withStore(Effect.gen(function*() {
        const limiter = yield* limiterOf
        const changes = yield* limiter.history({ resource: Option.getOrUndefined(args.resource), limit: args.limit })
        const rows = changes.map(V.limitChangeJson)
        yield* print(args.json, { changes: rows }, () => V.limitHistoryText(rows))
      }))
  ).pipe(Command.withDescription("Every change of the limits: who, when, why, before and after"))

  const limits = limitsList.pipe(Command.withSubcommands([limitsSet, limitsHistory]))

  const root = Command.make(name, {}, () =>
    Console.log(
      `${name} ${version}: operate chunkwise runs. Commands: start, worker, status, failures, retry, skip, cancel, ` +
        `audit, redrive, runbooks, limits, quarantine. \`${name} <command> --help\` explains each.`
    )).pipe(
      Command.withDescription("Operate chunkwise runs"),
      Command.withSubcommands([
        start,
        worker,
        status,
        failures,
        retry,
        skip,
        cancel,
        audit,
        redrive,
        runbooks,
        limits,
        quarantine
      ])
    )

  return {
    name,
    version,
    jobs,
    command: root as unknown as Command.Command<string, never, CliError, unknown>
  }
}

const exampleParams = (job: Job.Any): string => {
  const ast = Schema.encodedSchema(job.params).ast
  if (ast._tag !== "TypeLiteral") return "{}"
  const fields = ast.propertySignatures.map((p) =>
    `"${String(p.name)}":${p.type._tag === "NumberKeyword" ? "1" : p.type._tag === "BooleanKeyword" ? "true" : `"..."`}`
  )
  return `{${fields.join(",")}}`
}

/**
 * Runs one command line in-process (the arguments after the executable, e.g.
 * `["status", runId, "--json"]`) and returns its exit code: 0 success, 1 the operation or the awaited
 * run failed, 2 bad input. Output goes to Effect's `Console` (errors to `Console.error`), so tests can
 * capture it with `Effect.withConsole`.
 */
export const run = (
  cli: Cli,
  args: ReadonlyArray<string>
): Effect.Effect<number, never, CliApp.CliApp.Environment> =>
  Command.run(cli.command, { name: cli.name, version: cli.version, executable: cli.name })([
    "node",
    cli.name,
    ...args
  ]).pipe(
    Effect.as(0),
    Effect.catchAll((error) =>
      ValidationError.isValidationError(error)
        ? Effect.succeed(2) // @effect/cli printed the usage problem already
        : Effect.as(Console.error(`error: ${error.message}`), error.exitCode)
    ),
    Effect.catchAllDefect((defect) =>
      Effect.as(Console.error(`error: unexpected failure\n${Cause.pretty(Cause.die(defect))}`), 1)
    )
  )

/**
 * Runs the CLI as a program (a `bin`): parses `process.argv`, runs the command under
 * `NodeRuntime.runMain` (SIGTERM/SIGINT interrupt it, so `worker` drains), and sets the exit code.
 */
export const main = (cli: Cli): void =>
  NodeRuntime.runMain(
    run(cli, process.argv.slice(2)).pipe(
      Effect.flatMap((code) =>
        Effect.sync(() => {
          process.exitCode = code
        })
      ),
      Effect.provide(NodeContext.layer)
    ),
    { disableErrorReporting: true }
  )
