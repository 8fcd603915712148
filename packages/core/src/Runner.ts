/**
 * Starting and steering runs. `start` only writes rows (D1): the feeder of any running worker sends
 * the messages, heaviest partitions first, keeping at most `maxOutstanding` out.
 *
 * @since 0.1.0
 */
import { Cause, Chunk, type Duration, Effect, Option, Schedule, Stream } from "effect"
import * as Errors from "./Errors.js"
import { canonicalJson } from "./internal/hash.js"
import { signalLocalWork } from "./internal/localWork.js"
import { runParentSpan } from "./internal/tracing.js"
import * as Job from "./Job.js"
import type * as Quarantine from "./Quarantine.js"
import type { Actor, PlannedUnit, QuarantineRetry, RunProgress, RunRecord, RunStatus } from "./StateStore.js"
import { isTerminalRun, StateStore } from "./StateStore.js"

/** What `start` returns. */
export interface Started {
  readonly runId: string
  /** False when the run already existed (the start attached to it). */
  readonly created: boolean
  readonly status: RunStatus
  readonly partitions: number
}

/** Options of `start`. */
export interface StartOptions {
  /**
   * Joins the run key, to run the same params again as a new run (D9). Refused (`RunAlreadyActive`)
   * while a run of the same params has not ended.
   */
  readonly rerun?: string | undefined
}

const ENUMERATION_BATCH = 1000

/**
 * Starts a run of `job` for `params`, or attaches to the run with the same run key. Safe to call any
 * number of times, from any number of processes: the partitioner's output is inserted idempotently.
 * A new run (a rerun label, or params whose earlier runs all ended) is refused with `RunAlreadyActive`
 * while another run of the same params has not ended.
 */
export const start = <P, R>(
  job: Job.Job<P, R>,
  params: P,
  options: StartOptions = {}
) => Effect.flatMap(Job.validateParams(job, params, "type"), (valid) => startValid(job, valid, options))

/** `start` with params in their encoded (JSON) form, e.g. from a command line. */
export const startEncoded = <P, R>(
  job: Job.Job<P, R>,
  params: unknown,
  options: StartOptions = {}
) => Effect.flatMap(Job.validateParams(job, params, "encoded", "error"), (valid) => startValid(job, valid, options))

const startValid = <P, R>(
  job: Job.Job<P, R>,
  { encoded, params }: { readonly params: P; readonly encoded: unknown },
  options: StartOptions
): Effect.Effect<
  Started,
  | Errors.RunKeyConflict
  | Errors.RunAlreadyActive
  | Errors.EnumerationFailed
  | Errors.StoreUnavailable
  | Errors.NotFound,
  StateStore | R
> => {
  const baseKey = Job.baseKeyOf(job, params, encoded)
  const runKey = Job.rerunKeyOf(baseKey, options.rerun)
  const runId = Job.runIdOf(job.name, runKey)
  return Effect.gen(function*() {
    const store = yield* StateStore
    const { created, run } = yield* store.createRun({
      runId,
      job: job.name,
      runKey,
      baseKey,
      params: encoded,
      definition: job.definition,
      fingerprint: job.fingerprint
    })
    if (!created && canonicalJson(run.params) !== canonicalJson(encoded)) {
      return yield* new Errors.RunKeyConflict({ job: job.name, runKey, runId })
    }
    let current: RunRecord = run
    if (run.status === "enumerating") {
      yield* enumerate(job, runId, params)
      current = yield* store.openRun(runId, Job.budgetOf(job.name, job.failureBudget))
      yield* signalLocalWork
      yield* Effect.logInfo("chunkwise: run started").pipe(
        Effect.annotateLogs({ job: job.name, runId, partitions: current.partitionCount })
      )
    }
    return { runId, created, status: current.status, partitions: current.partitionCount }
  }).pipe(
    // The start hangs from the run's trace (D19), like every unit execution of the run.
    Effect.withSpan("chunkwise.start", {
      parent: runParentSpan(runId),
      attributes: { "chunkwise.job": job.name, "chunkwise.run_id": runId }
    })
  )
}

const enumerate = <P, R>(job: Job.Job<P, R>, runId: string, params: P) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const failed = (details: string) => new Errors.EnumerationFailed({ job: job.name, runId, details })
    yield* job.partitions(params).pipe(
      Stream.mapError((e) => failed(describe(e))),
      Stream.catchAllCause((cause) =>
        Cause.isFailType(cause) && cause.error instanceof Errors.EnumerationFailed
          ? Stream.fail(cause.error)
          : Stream.fail(failed(Cause.pretty(cause)))
      ),
      Stream.mapEffect((input) => normalise(input, failed)),
      Stream.grouped(ENUMERATION_BATCH),
      Stream.runForEach((batch) =>
        store.insertUnits(
          runId,
          Chunk.toReadonlyArray(batch).map((p) => ({
            unitId: Job.unitIdOf(runId, p.key),
            partitionKey: p.key,
            weight: p.weight
          }))
        )
      )
    )
  })

const normalise = (input: Job.PartitionInput, failed: (details: string) => Errors.EnumerationFailed) => {
  const partition = typeof input === "string"
    ? { key: input, weight: 1 }
    : { key: input.key, weight: input.weight ?? 1 }
  if (typeof partition.key !== "string" || partition.key.length === 0 || partition.key.length > 500) {
    return Effect.fail(failed(`partition key ${JSON.stringify(partition.key)} must be a string of 1 to 500 characters`))
  }
  if (!Number.isFinite(partition.weight) || partition.weight < 0) {
    return Effect.fail(
      failed(`partition "${partition.key}" has weight ${partition.weight}; weights are finite and >= 0`)
    )
  }
  return Effect.succeed(partition)
}

const describe = (error: unknown): string =>
  error instanceof Error ? error.message : typeof error === "object" && error !== null && "_tag" in error
    ? `${String((error as { _tag: unknown })._tag)}: ${JSON.stringify(error)}`
    : String(error)

/** The run's progress: partitions by status, per step, chunks and items. */
export const status = (
  runId: string
): Effect.Effect<RunProgress, Errors.StoreUnavailable | Errors.NotFound, StateStore> =>
  Effect.flatMap(StateStore, (store) => store.progress(runId))

/** Cancels a run: pending units never start; running ones stop at their next commit (fenced). */
export const cancel = (runId: string, actor: Actor) =>
  Effect.flatMap(StateStore, (store) => store.cancelRun(runId, actor))

/** Which units to retry or skip. */
export interface RetryOptions {
  /** Partition keys; default: every failed or cancelled partition. */
  readonly partitions?: ReadonlyArray<string> | undefined
  /** Restart these partitions from this step (by name); their idempotency keys change (new generation). */
  readonly fromStep?: string | undefined
  readonly dryRun?: boolean | undefined
}

/**
 * Re-opens failed partitions (or the given ones) and, when the run had ended, the run; returns the
 * units that run again. With `dryRun` nothing changes. An ended run is not re-opened while a re-run of
 * the same params is active (`RunAlreadyActive`, the dry run says so too).
 */
export const retry = (
  runId: string,
  options: RetryOptions,
  actor: Actor
): Effect.Effect<
  ReadonlyArray<PlannedUnit>,
  Errors.StoreUnavailable | Errors.NotFound | Errors.RunAlreadyActive,
  StateStore
> =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const run = yield* Effect.flatMap(
      store.getRun(runId),
      Option.match({
        onNone: () => Effect.fail(new Errors.NotFound({ what: "run", id: runId })),
        onSome: Effect.succeed
      })
    )
    let fromStep: number | undefined
    if (options.fromStep !== undefined) {
      fromStep = run.definition.steps.findIndex((s) => s.name === options.fromStep)
      if (fromStep < 0) {
        return yield* new Errors.NotFound({
          what: `step of job "${run.job}" (steps: ${run.definition.steps.map((s) => s.name).join(", ")})`,
          id: options.fromStep
        })
      }
    }
    const planned = yield* store.retry(
      runId,
      { partitions: options.partitions, fromStep, dryRun: options.dryRun ?? false },
      actor
    )
    if (options.dryRun !== true && planned.length > 0) yield* signalLocalWork
    return planned
  })

/**
 * Marks partitions skipped (default: every failed one), so the run can complete without them. A failed
 * run re-opens to finalize again: refused with `RunAlreadyActive` while a re-run of the same params is
 * active, as `retry`.
 */
export const skip = (
  runId: string,
  options: { readonly partitions?: ReadonlyArray<string> | undefined; readonly dryRun?: boolean | undefined },
  actor: Actor
) =>
  Effect.flatMap(
    StateStore,
    (store) => store.skip(runId, { partitions: options.partitions, dryRun: options.dryRun ?? false }, actor)
  )

/** Lists a run's quarantined items (default: every step, partition and status; at most `limit`, 1,000). */
export const quarantine = (
  runId: string,
  filter: Quarantine.Filter & { readonly limit?: number | undefined } = {}
) => Effect.flatMap(StateStore, (store) => store.listQuarantine(runId, { ...filter, limit: filter.limit ?? 1000 }))

/**
 * Re-runs quarantined items after a fix (default: every item set aside in the run): each partition's
 * items of a step are written again by the step's `write`, in chunks, by an `items` unit; those that
 * write are `resolved`, the others are set aside again. Re-opens the run when it had ended (refused
 * with `RunAlreadyActive` while a re-run of the same params is active, as `retry`). With `dryRun`
 * nothing changes.
 */
export const retryQuarantine = (
  runId: string,
  filter: Quarantine.Filter & { readonly dryRun?: boolean | undefined },
  actor: Actor
): Effect.Effect<
  ReadonlyArray<QuarantineRetry>,
  Errors.StoreUnavailable | Errors.NotFound | Errors.RunAlreadyActive,
  StateStore
> =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const planned = yield* store.retryQuarantine(runId, { ...filter, dryRun: filter.dryRun ?? false }, actor)
    if (filter.dryRun !== true && planned.length > 0) yield* signalLocalWork
    return planned
  })

/**
 * Waits until the run is terminal, polling the store; returns its final progress. A poll reads the
 * run's status row only (one key lookup, however many units the run has); the progress, which counts
 * the run's units, is read once, at the end. A store that is briefly unavailable (a restart, a dropped
 * connection) is polled again, not reported.
 */
export const awaitTerminal = (
  runId: string,
  options: { readonly pollInterval?: Duration.DurationInput | undefined } = {}
) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const interval = options.pollInterval ?? "500 millis"
    const patiently = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>) =>
      effect.pipe(
        Effect.tapError((e) =>
          e._tag === "StoreUnavailable"
            ? Effect.logWarning("chunkwise: status unavailable; polling again", e)
            : Effect.void
        ),
        Effect.retry({ while: (e) => e._tag === "StoreUnavailable", schedule: Schedule.spaced(interval) })
      )
    while (true) {
      const run = yield* patiently(store.getRun(runId))
      // An unknown run: the progress read fails with the store's NotFound.
      if (Option.isNone(run) || isTerminalRun(run.value.status)) return yield* patiently(store.progress(runId))
      yield* Effect.sleep(interval)
    }
  })
