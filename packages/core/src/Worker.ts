/**
 * The worker: receives messages, claims units with a fencing token, runs their remaining steps from the
 * checkpoint, and keeps leases and message visibility alive on one timer. Every worker also runs the
 * feeder (sends messages for pending units, D1) and the sweeper (repairs completions a crash missed,
 * D7), so no process is special.
 *
 * Run it as a layer: `Worker.layer({ jobs })` over a `StateStore` and a `QueueAdapter`. Closing its
 * scope (SIGTERM under `NodeRuntime.runMain`) drains it: it stops receiving, lets each unit finish its
 * chunk in flight, releases the leases and messages, and exits within `shutdownTimeout`.
 *
 * (The module shares its name with `@effect/platform`'s web-worker module; import it from
 * `@chunkwise/core` and the two never meet.)
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import {
  Cause,
  Clock,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberSet,
  identity,
  Layer,
  Metric,
  Option,
  Queue,
  Random,
  Schedule,
  Schema,
  Scope,
  type Tracer
} from "effect"
import * as Errors from "./Errors.js"
import { nextSize } from "./internal/chunkSizer.js"
import { type Classified, classify } from "./internal/classify.js"
import { base32, digest, stableId } from "./internal/hash.js"
import { labelled } from "./internal/labelled.js"
import { onLocalWork } from "./internal/localWork.js"
import { durationMs, positiveIntProblem } from "./internal/settings.js"
import * as Skips from "./internal/skips.js"
import { runParentSpan } from "./internal/tracing.js"
import * as Job from "./Job.js"
import * as JobDefinition from "./JobDefinition.js"
import * as Message from "./Message.js"
import * as Metrics from "./Metrics.js"
import * as Probe from "./Probe.js"
import { QueueAdapter } from "./QueueAdapter.js"
import type { Delivery } from "./QueueAdapter.js"
import * as ResourceLimiter from "./ResourceLimiter.js"
import * as RetryPolicy from "./RetryPolicy.js"
import type {
  ChunkAttempt,
  ChunkCommit,
  ClaimResult,
  FailureRecord,
  Lease,
  Position,
  RunStatus,
  StateStoreShape,
  UnitRecord
} from "./StateStore.js"
import { databaseIdentity, sessionOf, StateStore } from "./StateStore.js"
import * as Step from "./Step.js"

/** Worker options. Durations take Effect `DurationInput` ("30 seconds", 5000, ...). */
export interface Options<Jobs extends ReadonlyArray<Job.Any>> {
  readonly jobs: Jobs
  /** Shown in leases and logs; default: a random id. */
  readonly workerId?: string | undefined
  /** Units this worker runs at once across its jobs (default: the largest `concurrency.perWorker`). */
  readonly concurrency?: number | undefined
  /** Lease (and message visibility) length (default 60 s, at least 1 s); renewed every third of it. */
  readonly leaseDuration?: Duration.DurationInput | undefined
  /** Long-poll wait of one receive (default 1 s). */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * How often the feeder tops up the queue (default 1 s). It also runs when a quarter of
   * `maxOutstanding` units ended here since the last feed, when a receive finds the queue short after
   * such an end, and when a unit ends with new work to send (a finalize unit, a partition its ranges
   * moved on, a released unit).
   */
  readonly feedInterval?: Duration.DurationInput | undefined
  /** Messages kept out (enqueued or running) across all runs (default 100). */
  readonly maxOutstanding?: number | undefined
  /** Re-send a unit with no live lease whose message is older than this (default lease + 30 s). */
  readonly redeliverAfter?: Duration.DurationInput | undefined
  /** How often the sweeper repairs missed completions (default 30 s). */
  readonly sweepInterval?: Duration.DurationInput | undefined
  /** Drain deadline on shutdown (default 30 s); past it, chunks in flight are abandoned (rolled back). */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** How long a definition mismatch is treated as a rolling deploy before the unit fails (default 15 min). */
  readonly definitionMismatchGrace?: Duration.DurationInput | undefined
  /**
   * Retries that wait less than this happen in-process, holding the lease; longer waits give the unit
   * back with a retry time, and the feeder re-sends it when due (default 30 s, D12).
   */
  readonly inProcessRetryLimit?: Duration.DurationInput | undefined
  /** The operator CLI's name, for the retry command in alert lines (default `chunkwise`; `Cli` sets its own). */
  readonly cliName?: string | undefined
  /**
   * On a SQL store, start-up checks that the `SqlClient`'s pool can hand out `concurrency + 2` connections
   * at once (D16), waiting at most this long for them (default 5 s): raise it when other work in the
   * process keeps the pool busy while workers start. Workers of one process on one client are held to
   * the sum of their `concurrency + 2` when the client declares its pool size (`PgClient`'s
   * `maxConnections`).
   */
  readonly poolCheckTimeout?: Duration.DurationInput | undefined
  /**
   * Default limits of the resources the steps name (`resources: ["primary-db"]`), e.g.
   * `{ "primary-db": { chunksPerSecond: 50, inFlight: 8 } }`. They are stored on first use; after that
   * the stored limits hold (an operator changes them with `limits set`), and a changed default here
   * replaces a stored one only while no operator has set it. Needs a `ResourceLimiter` layer
   * (`PgResourceLimiter.layer` on Postgres). See docs/guides/database-load.md.
   */
  readonly limits?: ResourceLimiter.Limits | undefined
}

/** What a running worker exposes (mostly for tests and health checks). */
export interface Handle {
  readonly workerId: string
  /** Units this worker is running now. */
  readonly activeUnits: Effect.Effect<number>
}

interface Active {
  readonly lease: Lease
  readonly receipt: string
  readonly job: string
  /** Monotonic deadline of the lease as this worker last knew it. */
  deadline: number
  fiber: Fiber.RuntimeFiber<unknown, unknown> | undefined
  /** Why the unit's fiber was interrupted from outside. */
  stop: "lease-lost" | "abandoned" | undefined
  /** The resource permits the current chunk holds (renewed with the lease, released after the commit). */
  permits: ResourceLimiter.Permits
  /**
   * Set when a chunk's commit ended the unit: whether that commit also finalized the run (it does when
   * it ended the run's last open unit), so no completion check follows it.
   */
  endedByCommit: { readonly finalized: boolean } | undefined
  /**
   * The attempt this worker is at on the unit's chunk (a split or the completion hook too): where the
   * unit was when it began, and its number, ahead of the store's count after retries in-process. Given to
   * the store when the unit goes back, with whether it is spent.
   */
  at: ChunkAttempt
  /**
   * Whether that attempt has begun and not ended well (running, or failed and waiting for a retry): a
   * unit given back now has spent it.
   */
  attemptSpent: boolean
}

/** A successful claim: the unit, its run and the lease. */
type Claimed = Extract<ClaimResult, { readonly _tag: "Claimed" }>

/** How a unit execution ended, deciding what happens to its message. */
type Ending = "ack" | "release"

/** Starts a worker in the current scope. */
export const make = <const Jobs extends ReadonlyArray<Job.Any>>(
  options: Options<Jobs>
): Effect.Effect<
  Handle,
  Errors.ConfigurationError,
  Scope.Scope | StateStore | QueueAdapter | Job.Context<Jobs[number]>
> =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const queue = yield* QueueAdapter
    const jobs = yield* registry(options.jobs)

    const workerId = options.workerId ?? `w-${base32(digest([Math.random(), Date.now()])).slice(0, 10)}`
    const concurrency = options.concurrency ?? Math.max(...options.jobs.map((j) => j.concurrency.perWorker))
    const concurrencyProblem = positiveIntProblem("Worker: concurrency", concurrency)
    if (concurrencyProblem !== undefined) {
      return yield* new Errors.ConfigurationError({ message: concurrencyProblem })
    }
    /** A duration option in ms, or a ConfigurationError that names it (at least `minMs`; default > 0). */
    const setting = (name: keyof Options<Jobs>, fallback: Duration.DurationInput, minMs?: number) => {
      const checked = durationMs(`Worker: ${name}`, options[name], fallback, minMs)
      return "ms" in checked
        ? Effect.succeed(checked.ms)
        : Effect.fail(new Errors.ConfigurationError({ message: checked.problem }))
    }
    // A lease under a second leaves no room for the heartbeat (a third of it) nor SQS's whole seconds.
    const leaseMs = yield* setting("leaseDuration", "60 seconds", 1000)
    const pollMs = yield* setting("pollInterval", "1 second")
    const feedMs = yield* setting("feedInterval", "1 second")
    const redeliverAfterMs = yield* setting("redeliverAfter", Duration.millis(leaseMs + 30_000))
    const sweepMs = yield* setting("sweepInterval", "30 seconds")
    const shutdownMs = yield* setting("shutdownTimeout", "30 seconds", 0)
    const graceMs = yield* setting("definitionMismatchGrace", "15 minutes", 0)
    const inProcessRetryMs = yield* setting("inProcessRetryLimit", "30 seconds", 0)
    const poolCheckMs = yield* setting("poolCheckTimeout", "5 seconds")
    const outstandingProblem = positiveIntProblem("Worker: maxOutstanding", options.maxOutstanding)
    if (outstandingProblem !== undefined) {
      return yield* new Errors.ConfigurationError({ message: outstandingProblem })
    }
    const maxOutstanding = options.maxOutstanding ?? 100
    yield* checkTransactions(store, options.jobs, leaseMs)
    const limiter = yield* setupLimits(store, options.jobs, options.limits, workerId)
    // The last start-up check that can fail: the worker counts on its pool from here until it stops.
    yield* checkPool(store, concurrency, poolCheckMs)
    const cliName = options.cliName ?? "chunkwise"
    const probe = yield* Probe.Probe
    const context = yield* Effect.context<Job.Context<Jobs[number]>>()
    const startedAt = yield* monotonicMs
    /** A unit's execution runs with the worker's context, which provides what `Jobs` declared (once per unit). */
    const provideJobContext = <A, E>(effect: Effect.Effect<A, E, unknown>): Effect.Effect<A, E> =>
      Effect.provide(effect, context) as Effect.Effect<A, E>
    /**
     * Job effects are typed `any` in `Job.Any`; inside a unit's execution (see `provideJobContext`) the
     * context they need is there, so this only says so to the type checker. Providing it per chunk
     * would merge and compare the whole context on every chunk.
     */
    const inJobContext = <A, E>(effect: Effect.Effect<A, E, unknown>): Effect.Effect<A, E> =>
      effect as Effect.Effect<A, E>

    const active = new Map<string, Active>()
    /**
     * Claims whose outcome stayed unknown (every try failed), by unit: the next claim of the unit here
     * repeats the id, so a lease one of them took and never used comes back without counting a crash.
     */
    const unsettledClaims = new Map<string, string>()
    const claimPrefix = base32(digest([Math.random(), Date.now(), workerId])).slice(0, 16)
    let claims = 0
    /** Repeats of a claim whose outcome is unknown: backing off to 2 s apart, for up to half a lease. */
    const claimRetry = Schedule.exponential("100 millis").pipe(
      Schedule.union(Schedule.spaced("2 seconds")),
      Schedule.upTo(Duration.millis(leaseMs / 2))
    )
    const claimIdFor = (unitKey: string) => {
      const unsettled = unsettledClaims.get(unitKey)
      if (unsettled === undefined) return `${claimPrefix}-${++claims}`
      unsettledClaims.delete(unitKey)
      return unsettled
    }
    const keepUnsettledClaim = (unitKey: string, claimId: string) => {
      unsettledClaims.set(unitKey, claimId)
      if (unsettledClaims.size > maxUnsettledClaims) unsettledClaims.delete(unsettledClaims.keys().next().value!)
    }
    let inflight = 0
    let draining = false
    const slotFreed = yield* Queue.sliding<void>(1)
    const feedKick = yield* Queue.sliding<void>(1)
    /** Completed when the drain starts: a unit waiting for a resource permit gives its unit back. */
    const drainStarted = yield* Deferred.make<void>()
    const handlers = yield* FiberSet.make<void, never>()
    const log = Effect.annotateLogs({ workerId })

    // ---- feeder: the outbox sender (D1). Messages are marked enqueued, then sent after commit.
    const feedOnce = Effect.gen(function*() {
      endedSinceFeed = 0
      const messages = yield* store.feed({ maxOutstanding, redeliverAfterMs })
      if (messages.length === 0) return
      yield* queue.send(messages.map((m) => ({
        body: Message.encode(m),
        groupId: m.unitId,
        deduplicationId: `${m.unitId}:${m.seq}`
      })))
    }).pipe(
      survive("feeding the queue failed; retrying on the next tick"),
      Effect.withSpan("chunkwise.feed", { captureStackTrace: false })
    )
    const kickFeeder = Queue.offer(feedKick, undefined)
    yield* onLocalWork(() => Queue.unsafeOffer(feedKick, undefined))
    /**
     * Units this worker ended since its last feed. A feed is a scan of the store's live units, so the
     * worker tops the queue up once a quarter of `maxOutstanding` has been used (or sooner when a receive
     * finds the queue short after an end), not after every unit.
     */
    let endedSinceFeed = 0
    const refillEvery = Math.max(1, Math.floor(maxOutstanding / 4))
    const unitEnded = Effect.suspend(() => {
      endedSinceFeed += 1
      return endedSinceFeed >= refillEvery ? kickFeeder : Effect.void
    })

    // ---- heartbeat: one timer renews every lease and extends every message (D5).
    const heartbeat = Effect.gen(function*() {
      const entries = [...active.values()]
      if (entries.length === 0) return
      yield* probe.at("heartbeat", { ...infoOf(entries[0]!.lease, entries[0]!.job, "", 0, 0), workerId })
      const now = yield* monotonicMs
      const held = yield* store.renewLeases(workerId, entries.map((e) => e.lease), leaseMs).pipe(
        Effect.map((ids) => new Set(ids)),
        Effect.catchAll((error) => Effect.as(Effect.logWarning("chunkwise: renewing leases failed", error), undefined))
      )
      for (const entry of entries) {
        if (held?.has(entry.lease.unitId)) entry.deadline = now + leaseMs
        if ((held !== undefined && !held.has(entry.lease.unitId)) || now >= entry.deadline) {
          entry.stop = "lease-lost"
          if (entry.fiber !== undefined) yield* Fiber.interruptFork(entry.fiber)
        }
      }
      const slots = entries.flatMap((e) => e.permits.slots)
      if (limiter !== undefined && slots.length > 0) {
        yield* limiter.renew(slots, leaseMs).pipe(
          Effect.catchAll((error) => Effect.logWarning("chunkwise: renewing resource permits failed", error))
        )
      }
      const live = entries.filter((e) => e.stop === undefined).map((e) => e.receipt)
      if (live.length > 0) {
        yield* queue.extend(live, leaseMs).pipe(
          Effect.catchAll((error) => Effect.logWarning("chunkwise: extending message visibility failed", error))
        )
      }
    })

    // ---- one unit execution
    const runUnit = (job: Job.Any, claimed: Claimed, entry: Active) =>
      claimed.unit.kind === "finalize"
        ? runFinalize(job, claimed, entry)
        : runPartition(job, claimed, entry)

    const infoOf = (lease: Lease, job: string, step: string, chunkSeq: number, attempt: number): Probe.Info => ({
      workerId,
      job,
      runId: lease.runId,
      unitId: lease.unitId,
      step,
      chunkSeq,
      attempt
    })

    const leaseLost = (lease: Lease, reason: string) =>
      new Errors.LeaseLost({ runId: lease.runId, unitId: lease.unitId, reason })

    /**
     * Waits for the chunk's resource permits, before its transaction begins (D16), and keeps them on the
     * entry (the heartbeat renews them) until `givePermits`. `None`: the drain started while waiting.
     */
    const takePermits = (
      resources: ReadonlyArray<string>,
      holder: ResourceLimiter.Holder,
      entry: Active,
      items: number
    ) =>
      limiter === undefined || resources.length === 0
        ? Effect.succeed(Option.some(noPermits))
        : Effect.uninterruptibleMask((restore) =>
          restore(Effect.raceFirst(
            Effect.map(limiter.acquire(resources, holder, leaseMs, { items }), Option.some),
            Effect.as(Deferred.await(drainStarted), Option.none<ResourceLimiter.Permits>())
          )).pipe(Effect.tap((permits) =>
            Effect.sync(() => {
              if (Option.isSome(permits)) entry.permits = permits.value
            })
          ))
        )
    /** Gives the chunk's permits back, after its commit or rollback. */
    const givePermits = (entry: Active) =>
      Effect.suspend(() => {
        const permits = entry.permits
        entry.permits = noPermits
        return limiter === undefined ? Effect.void : limiter.release(permits)
      })

    const checkLease = (entry: Active) =>
      Effect.flatMap(monotonicMs, (now) =>
        now >= entry.deadline
          ? Effect.fail(leaseLost(entry.lease, "the lease expired before the next chunk"))
          : Effect.void)

    /** Records, logs and decides on one failure (D12). Returns how the unit continues. */
    const onFailure = (
      job: Job.Any,
      unit: UnitRecord,
      lease: Lease,
      cause: Cause.Cause<unknown>,
      where: {
        readonly step: string
        readonly cursor: unknown
        readonly attempt: number
        /** Where the unit was when the attempt began, so the store counts on from it (withRetries). */
        readonly at?: Position | undefined
      },
      inProcessRetry = true
    ): Effect.Effect<
      { readonly _tag: "retry-now"; readonly delayMs: number } | { readonly _tag: "end"; readonly ending: Ending },
      Errors.StoreUnavailable
    > =>
      Effect.gen(function*() {
        const failure = Cause.failureOption(cause)
        const cursor = where.cursor === null || where.cursor === undefined ? null : JSON.stringify(where.cursor)
        const classified = classify(job, cause, where.step)
        const at = yield* Clock.currentTimeMillis
        const record = (outcome: FailureRecord["outcome"]) =>
          store.recordFailure({
            runId: lease.runId,
            unitId: lease.unitId,
            partitionKey: unit.partitionKey,
            step: where.step,
            errorTag: classified.tag,
            message: classified.message,
            cause: classified.cause,
            cursor,
            attempt: where.attempt,
            runbookId: classified.runbook.id,
            severity: classified.runbook.severity,
            outcome,
            at
          })
        if (Option.isSome(failure) && failure.value instanceof Errors.CheckpointMoved) {
          // Our own lease, but the checkpoint is ahead of us: a commit whose reply was lost did apply.
          // Give the unit back so the next claim continues from the stored checkpoint (D3).
          yield* store.release(lease, { abandonedChunk: false })
          return { _tag: "end", ending: "release" } as const
        }
        if (Option.isSome(failure) && failure.value instanceof Errors.LeaseLost) {
          // Not the unit's failure: its chunk rolled back and another worker holds it. Kept for operators.
          yield* record("abandoned")
          yield* Metric.increment(labelled(Metrics.leasesLost, [["job", job.name]]))
          yield* Effect.logInfo("chunkwise: lease lost; the chunk rolled back and another worker continues").pipe(
            Effect.annotateLogs({
              job: job.name,
              runId: lease.runId,
              unitId: lease.unitId,
              reason: String(failure.value)
            })
          )
          return { _tag: "end", ending: "ack" } as const
        }
        const random = yield* Random.next
        const delayMs = RetryPolicy.delayAfter(classified.runbook.retry, where.attempt, random)
        const outcome = delayMs === undefined ? "failed" : "retry"
        yield* record(outcome)
        yield* Metric.increment(
          labelled(Metrics.failures, [["job", job.name], ["error_tag", classified.tag]])
        )
        yield* alert(job, unit, lease, classified, { ...where, cursor, outcome, delayMs }, cliName)
        yield* Effect.annotateCurrentSpan("chunkwise.error_tag", classified.tag)
        if (outcome === "failed") yield* partitionEnded(job, unit, "failed")
        if (inProcessRetry && delayMs !== undefined && delayMs < inProcessRetryMs) {
          return { _tag: "retry-now", delayMs } as const
        }
        const result = yield* store.failUnit(
          lease,
          delayMs === undefined
            ? { _tag: "Failed", errorTag: classified.tag }
            : {
              _tag: "RetryLater",
              errorTag: classified.tag,
              delayMs,
              at: where.at && { stepIndex: where.at.stepIndex, chunkSeq: where.at.chunkSeq, attempt: where.attempt }
            }
        ).pipe(Effect.catchTag("LeaseLost", () => Effect.succeed(undefined)))
        if (result?.runStatus === "failing") {
          const run = yield* store.getRun(lease.runId)
          yield* Effect.logError("chunkwise: run is failing fast").pipe(
            Effect.annotateLogs({ job: job.name, runId: lease.runId, reason: Option.getOrUndefined(run)?.reason ?? "" })
          )
        }
        return { _tag: "end", ending: "ack" } as const
      })

    /** Runs `attempt` until it succeeds or its failure ends the unit; in-process retries hold the lease. */
    const withRetries = <A>(
      job: Job.Any,
      unit: UnitRecord,
      entry: Active,
      firstAttempt: number,
      where: { readonly step: string; readonly cursor: unknown },
      attempt: (n: number) => Effect.Effect<A, unknown, never>
    ): Effect.Effect<
      { readonly _tag: "ok"; readonly value: A } | { readonly _tag: "end"; readonly ending: Ending },
      Errors.StoreUnavailable
    > =>
      Effect.gen(function*() {
        let n = firstAttempt
        while (true) {
          entry.at = { ...entry.at, attempt: n }
          entry.attemptSpent = true
          const exit = yield* Effect.exit(Effect.zipRight(checkLease(entry), attempt(n)))
          if (Exit.isSuccess(exit)) {
            entry.attemptSpent = false
            return { _tag: "ok", value: exit.value } as const
          }
          if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
          const next = yield* onFailure(job, unit, entry.lease, exit.cause, { ...where, attempt: n, at: entry.at })
          if (next._tag === "end") return next
          // A drain does not wait out a retry's backoff: nothing is in flight, so the unit goes back now,
          // the failed attempt spent.
          const drained = yield* Effect.raceFirst(
            Effect.as(Effect.sleep(next.delayMs), false),
            Effect.as(Deferred.await(drainStarted), true)
          )
          if (drained) {
            yield* store.release(entry.lease, { abandonedChunk: true, at: entry.at })
            return { _tag: "end", ending: "release" } as const
          }
          n += 1
        }
      })

    /**
     * Fails the unit at once with an error found before any step ran (crash loop, params, cursor,
     * definition): classified, recorded and logged like any failure, never retried in-process.
     */
    const failWith = (job: Job.Any, { lease, unit }: Claimed, error: unknown, step: string) =>
      Effect.as(
        onFailure(job, unit, lease, Cause.fail(error), { step, cursor: unit.cursor, attempt: unit.attempt }, false),
        "ack" as Ending
      )

    /** Fails the unit: its stored cursor (or key range) no longer decodes with the step's schema. */
    const failUndecodable = (job: Job.Any, claimed: Claimed, step: string, stored: unknown, details: string) =>
      failWith(job, claimed, new Errors.CursorUndecodable({ step, cursor: JSON.stringify(stored), details }), step)

    const runPartition = (
      job: Job.Any,
      claimed: Claimed,
      entry: Active
    ) => {
      // One span per step beneath the unit's span; its chunks hang from it.
      const stepSpan: StepSpan = { index: -1, span: undefined }
      /** The unit's execution, its store session in `sessionScope`. */
      const execute = Effect.fnUntraced(function*(sessionScope: Scope.Scope) {
        const { lease, run, unit } = claimed
        const stepName = job.steps[unit.stepIndex]?.name ?? "(done)"
        if (unit.crashesSinceProgress >= job.maxCrashes) {
          return yield* failWith(
            job,
            claimed,
            new Errors.CrashLoop({
              crashes: unit.crashesSinceProgress,
              step: stepName,
              cursor: JSON.stringify(unit.cursor)
            }),
            stepName
          )
        }
        const decodedParams = yield* Effect.either(Job.validateParams(job, run.params, "encoded"))
        if (decodedParams._tag === "Left") return yield* failWith(job, claimed, decodedParams.left, stepName)
        const params = decodedParams.right.params
        const partition = { key: unit.partitionKey, weight: unit.weight }
        /** The unit's `chunk`-mode transactions share one connection where the store keeps one. */
        const session = yield* Scope.extend(sessionOf(store), sessionScope)
        /** `effect` (store calls on the pool) once the kept connection went back: never held while waiting for another. */
        const withoutKept = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.zipRight(session.idle, effect)

        let stepIndex = unit.stepIndex
        let chunkSeq = unit.chunkSeq
        let encodedCursor: unknown = unit.cursor
        let attempt = unit.attempt
        /** A range unit runs its split step only, an items unit re-runs one step's items; a partition runs to its last step. */
        const endStep = unit.kind === "range" || unit.kind === "items" ? unit.stepIndex + 1 : job.steps.length
        /** The current step's chunk size: fixed, or adapting to the step's chunk time. */
        let size = { stepIndex: -1, items: 1 }
        /**
         * Off once a fused step failed in this execution, and from the start after a crash: every step
         * then runs in its own transaction, so a step that keeps killing the worker neither takes the
         * progress of the chunk before it down with it nor has its crashes counted against that chunk.
         */
        let fusion = unit.crashesSinceProgress === 0
        /** The run's status as the claim, then each commit, returned it. */
        let runStatus = run.status
        /** The fused step's span between its commit call and its transaction's end, to end if that fails. */
        let fusedSpan: Tracer.Span | undefined = undefined
        const unitSpan = Option.getOrUndefined(yield* Effect.option(Effect.currentSpan))
        /** The attributes every step and chunk span of this unit carries. */
        const spanAttributes = (stepName: string) => ({
          "chunkwise.job": job.name,
          "chunkwise.run_id": lease.runId,
          "chunkwise.partition": partition.key,
          "chunkwise.step": stepName
        })
        /** Opens the span of the step `stepName` under the unit's span, at its chunk `chunkSeq`. */
        const openStepSpan = (stepName: string, index: number, chunkSeq: number) =>
          Effect.makeSpan("chunkwise.step", {
            captureStackTrace: false,
            ...(unitSpan === undefined ? {} : { parent: unitSpan }),
            attributes: {
              ...spanAttributes(stepName),
              "chunkwise.step_index": index,
              "chunkwise.chunk_seq": chunkSeq
            }
          })
        /**
         * Wraps a chunk of the step `stepName` in its span, under the step's span. The attributes are
         * set one by one on the span: an attributes object (spread, then walked by the tracer) cost a
         * chunk 7 µs of CPU more, half of what the span itself costs.
         */
        const inChunkSpan = (
          stepName: string,
          parent: Tracer.AnySpan | undefined,
          chunk: {
            readonly chunkSeq: number
            readonly cursor: unknown
            readonly chunkSize: number
            readonly attempt: number
            readonly idempotencyKey: string
          }
        ) =>
        <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.useSpan(
            "chunkwise.chunk",
            parent === undefined ? { captureStackTrace: false } : { captureStackTrace: false, parent },
            (span) => {
              span.attribute("chunkwise.job", job.name)
              span.attribute("chunkwise.run_id", lease.runId)
              span.attribute("chunkwise.partition", partition.key)
              span.attribute("chunkwise.step", stepName)
              span.attribute("chunkwise.chunk_seq", chunk.chunkSeq)
              span.attribute("chunkwise.cursor", chunk.cursor === null ? "start" : JSON.stringify(chunk.cursor))
              span.attribute("chunkwise.chunk_size", chunk.chunkSize)
              span.attribute("chunkwise.attempt", chunk.attempt)
              span.attribute("chunkwise.idempotency_key", chunk.idempotencyKey)
              return Effect.withParentSpan(effect, span)
            }
          )
        /**
         * Runs `next`, a single `chunk`-mode step after the step that just finished, inside that step's
         * last transaction, with its own ledger row, step and chunk spans and probe points, then commits
         * the chunk and the step in one `commitChunk`: one transaction and one store call where there
         * would be two of each. Its failure fails the transaction with `FusedStepFailed`, so both roll
         * back and the caller redoes the chunk alone.
         */
        const runFused = (
          next: FusableStep,
          chunk: ChunkCommit,
          keyInput: Step.KeyInput,
          ctx: Step.StepContext<unknown>
        ) =>
          Effect.gen(function*() {
            const key = keyOf(next, { ...keyInput, step: next.name, chunkSeq: 0 })
            const info = infoOf(lease, job.name, next.name, 0, 1)
            const span = yield* openStepSpan(next.name, chunk.to.stepIndex, 0)
            // Only the step's own failure is FusedStepFailed; the commit's (fenced, moved) stays itself.
            const exit = yield* Effect.exit(
              Effect.gen(function*() {
                yield* probe.at("before-effect", info)
                yield* Effect.suspend(() =>
                  next.run({
                    job: ctx.job,
                    runId: ctx.runId,
                    params: ctx.params,
                    partition: ctx.partition,
                    step: next.name,
                    idempotencyKey: key,
                    itemKey: (id) => itemKeyOf(key, id),
                    attempt: 1,
                    fencingToken: ctx.fencingToken,
                    chunkSeq: 0
                  })
                )
                yield* probe.at("after-effect", info)
              }).pipe(inChunkSpan(next.name, span, {
                chunkSeq: 0,
                cursor: null,
                chunkSize: 1,
                attempt: 1,
                idempotencyKey: key
              }))
            )
            if (Exit.isFailure(exit)) {
              yield* endSpan(span, exit)
              if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
              return yield* Effect.fail(new FusedStepFailed())
            }
            const to = { stepIndex: chunk.to.stepIndex + 1, chunkSeq: 0, cursor: null }
            const committed = yield* store.commitChunk({
              ...chunk,
              to,
              unitDone: to.stepIndex === endStep,
              fused: { step: next.name, idempotencyKey: key }
            }).pipe(
              // A statement error here is the fused step's doing (it left the transaction aborted, say):
              // redo the chunk alone and let the step fail on its own. Fenced and moved stay themselves.
              Effect.catchIf(
                (error) => error._tag === "StoreUnavailable" || error._tag === "TransactionAborted",
                () => Effect.fail(new FusedStepFailed())
              ),
              Effect.onError((cause) => endSpan(span, Exit.failCause(cause)))
            )
            // The step's span stays open as the unit's current step (the loop ends it), unless the
            // transaction's COMMIT fails after this.
            fusedSpan = span
            return { to, runStatus: committed.runStatus, span }
          })
        while (stepIndex < endStep) {
          const step = job.steps[stepIndex]!
          entry.at = { stepIndex, chunkSeq, attempt }
          if (size.stepIndex !== stepIndex) {
            size = { stepIndex, items: step._tag === "Chunked" ? step.chunkSize : 1 }
          }
          if (stepSpan.index !== stepIndex) {
            yield* endStepSpan(stepSpan, Exit.void)
            stepSpan.span = yield* openStepSpan(step.name, stepIndex, chunkSeq)
            stepSpan.index = stepIndex
          }
          if (draining) {
            yield* withoutKept(store.release(lease, { abandonedChunk: false }))
            return "release" as Ending
          }
          // The kept connection goes back before work that takes others from the pool: a step outside a
          // store transaction, or a chunk's resource permits (a wait that may be long, on the pool).
          if (step.transaction !== "chunk" || (limiter !== undefined && step.resources.length > 0)) yield* session.idle
          let cursor: unknown = undefined
          if (step._tag === "Chunked") {
            if (encodedCursor === null) cursor = step.start
            else {
              const decoded = Schema.decodeUnknownEither(step.cursor)(encodedCursor)
              if (decoded._tag === "Left") {
                return yield* withoutKept(
                  failUndecodable(job, claimed, step.name, encodedCursor, decoded.left.message)
                )
              }
              cursor = decoded.right
            }
          }
          let range: Step.Range<unknown> = Step.everything
          if (step._tag === "Chunked" && step.split !== undefined) {
            if (unit.kind === "range") {
              const decoded = Schema.decodeUnknownEither(step.split.range)(unit.range)
              if (decoded._tag === "Left") {
                const details = `the stored key range does not decode: ${decoded.left.message}`
                return yield* withoutKept(failUndecodable(job, claimed, step.name, unit.range, details))
              }
              range = decoded.right
            } else if (unit.kind === "partition" && chunkSeq === 0 && encodedCursor === null) {
              const split = yield* withoutKept(splitAt(job, claimed, entry, step.split, stepIndex, attempt, {
                job: job.name,
                runId: lease.runId,
                params,
                partition,
                step: step.name
              }))
              if (split._tag === "end") return split.ending
              if (split.value === "split") {
                yield* kickFeeder
                return "ack" as Ending
              }
            }
          }
          const keyInput: Step.KeyInput = {
            job: job.name,
            runId: lease.runId,
            unitId: lease.unitId,
            partition: partition.key,
            step: step.name,
            generation: unit.generation,
            chunkSeq
          }
          const idempotencyKey = keyOf(step, keyInput)
          const from = { stepIndex, chunkSeq }
          const fusable = unit.kind === "partition" && step.transaction === "chunk"
            ? fusableAfter(job, stepIndex, endStep)
            : undefined
          const result = yield* withRetries(
            job,
            unit,
            entry,
            attempt,
            { step: step.name, cursor: encodedCursor },
            (n) =>
              Effect.gen(function*() {
                const info = infoOf(lease, job.name, step.name, chunkSeq, n)
                yield* probe.at("before-effect", info)
                const holder = {
                  runId: lease.runId,
                  unitId: lease.unitId,
                  partitionKey: partition.key,
                  job: job.name,
                  step: step.name,
                  workerId
                }
                // A chunk is charged its planned size on an item rate; a single step, one item.
                if (Option.isNone(yield* takePermits(step.resources, holder, entry, size.items))) {
                  return Option.none()
                }
                const ctx: Step.ChunkContext<unknown, unknown, unknown> = {
                  job: job.name,
                  runId: lease.runId,
                  params,
                  partition,
                  step: step.name,
                  idempotencyKey,
                  itemKey: (id) => itemKeyOf(idempotencyKey, id),
                  attempt: n,
                  fencingToken: lease.fencingToken,
                  chunkSeq,
                  cursor,
                  range,
                  chunkSize: size.items,
                  deadline: step._tag === "Chunked" && step.chunkTimeMs !== undefined
                    ? (yield* Clock.currentTimeMillis) + step.chunkTimeMs
                    : undefined
                }
                const chunk: Effect.Effect<Skips.Outcome, unknown, unknown> = step._tag === "Single"
                  ? Effect.as(Effect.suspend(() => step.run(ctx)), { next: Step.done, items: 0 })
                  : unit.kind === "items"
                  ? Skips.rerunChunk(store, job, step, ctx)
                  : step.skip !== undefined
                  ? Skips.firstTry(step.skip, ctx)
                  : Effect.suspend(() => step.runChunk(ctx))
                const timed = (effect: Effect.Effect<Skips.Outcome, unknown, unknown>) =>
                  step.timeout === undefined ? probe.around(info, effect) : probe.around(info, effect).pipe(
                    Effect.timeoutFail({
                      duration: step.timeout,
                      onTimeout: () =>
                        new Errors.StepTimeout({ step: step.name, timeoutMs: Duration.toMillis(step.timeout!) })
                    })
                  )
                const commit = (progress: Skips.Outcome) =>
                  Effect.gen(function*() {
                    yield* probe.at("after-effect", info)
                    const stepDone = progress.next === Step.done
                    const nextCursor = stepDone || step._tag !== "Chunked"
                      ? null
                      : yield* Effect.orDie(Schema.encodeEither(step.cursor)(progress.next))
                    const to = stepDone
                      ? { stepIndex: stepIndex + 1, chunkSeq: 0, cursor: null }
                      : { stepIndex, chunkSeq: chunkSeq + 1, cursor: nextCursor }
                    const chunkCommit: ChunkCommit = {
                      lease,
                      from,
                      to,
                      unitDone: stepDone && stepIndex + 1 === endStep,
                      items: progress.items,
                      idempotencyKey,
                      step: step.name,
                      leaseMs,
                      quarantine: progress.quarantine,
                      // The commit is the transaction's last call: the store may send its COMMIT with it.
                      last: step.transaction === "chunk"
                    }
                    const done = {
                      items: progress.items,
                      setAside: progress.quarantine?.items ?? [],
                      fused: undefined as { readonly step: string; readonly span: Tracer.Span } | undefined
                    }
                    // The run's status as the last store call saw it: a run that stopped starts no new step.
                    if (!stepDone || fusable === undefined || !fusion || stopsWork(runStatus)) {
                      const committed = yield* store.commitChunk(chunkCommit)
                      return { ...done, to, runStatus: committed.runStatus }
                    }
                    const fused = yield* runFused(fusable, chunkCommit, keyInput, ctx)
                    return {
                      ...done,
                      to: fused.to,
                      runStatus: fused.runStatus,
                      fused: { step: fusable.name, span: fused.span }
                    }
                  })
                const committed = (effect: Effect.Effect<Skips.Outcome, unknown, unknown>) =>
                  step.transaction === "chunk"
                    ? session.transaction(Effect.flatMap(timed(effect), commit)).pipe(
                      Effect.onError((cause) =>
                        Effect.suspend(() => {
                          const span = fusedSpan
                          fusedSpan = undefined
                          return endSpan(span, Exit.failCause(cause))
                        })
                      )
                    )
                    : Effect.flatMap(timed(effect), commit)
                // A fused step that failed rolled this chunk back with it: redo the chunk alone, and let
                // that step run in its own transaction, with its own retries and failure record.
                const alone = (effect: Effect.Effect<Skips.Outcome, unknown, unknown>) =>
                  committed(effect).pipe(Effect.catchIf(
                    (error): error is FusedStepFailed => error instanceof FusedStepFailed,
                    () => Effect.suspend(() => (fusion = false, committed(effect)))
                  ))
                // D17: a skippable write failure rolls the chunk back; the isolation pass redoes it.
                const run = alone(chunk).pipe(Effect.catchIf(
                  (error): error is Skips.IsolateChunk => error instanceof Skips.IsolateChunk,
                  ({ skip }) =>
                    alone(Skips.isolateChunk(store, job, skip, ctx, {
                      cursor: encodedCursor,
                      range: unit.kind === "range" ? unit.range : null
                    }))
                ))
                const began = yield* monotonicMs
                fusedSpan = undefined
                const out = yield* run.pipe(
                  // D8: the run stopped while the chunk and the step fused after it ran; the store refused
                  // the step's commit and both rolled back.
                  Effect.catchIf(
                    (error): error is Errors.RunStopped => error instanceof Errors.RunStopped,
                    Effect.succeed
                  ),
                  Effect.tapErrorCause((cause) =>
                    Effect.annotateCurrentSpan("chunkwise.error_tag", classify(job, cause, step.name).tag)
                  ),
                  inChunkSpan(step.name, stepSpan.span, {
                    chunkSeq,
                    cursor: encodedCursor,
                    chunkSize: ctx.chunkSize,
                    attempt: n,
                    idempotencyKey
                  })
                )
                // Committed (the unit moved on): from here an abandonment cuts no chunk short.
                entry.attemptSpent = false
                if (out instanceof Errors.RunStopped) return Option.some<ChunkEnd>(out)
                // The chunk's time, transaction included: its lock time in mode chunk.
                const tookMs = (yield* monotonicMs) - began
                yield* probe.at("after-commit", info)
                return Option.some<ChunkEnd>({ ...out, tookMs })
              }).pipe(
                step.resources.length === 0 || limiter === undefined ? identity : Effect.ensuring(givePermits(entry)),
                inJobContext
              )
          )
          if (result._tag === "end") return result.ending
          if (Option.isNone(result.value)) {
            // The drain started while the chunk waited for a resource permit: nothing of that attempt ran.
            yield* withoutKept(store.release(lease, { abandonedChunk: false, at: entry.at }))
            return "release" as Ending
          }
          if (result.value.value instanceof Errors.RunStopped) {
            // The run stopped while the chunk and the step fused after it ran: both rolled back (D8).
            yield* withoutKept(store.cancelUnit(lease))
            return "ack" as Ending
          }
          const { fused, items, setAside, to, tookMs } = result.value.value
          runStatus = result.value.value.runStatus
          if (fused !== undefined) {
            yield* probe.at("after-commit", infoOf(lease, job.name, fused.step, 0, 1))
            yield* Metric.increment(labelled(Metrics.chunks, [["job", job.name], ["step", fused.step]]))
            yield* endStepSpan(stepSpan, Exit.void)
            stepSpan.span = fused.span
            stepSpan.index = to.stepIndex - 1
          }
          if (to.stepIndex === endStep) entry.endedByCommit = { finalized: runStatus === "finalizing" }
          entry.deadline = (yield* monotonicMs) + leaseMs
          if (step._tag === "Chunked") size.items = nextSize(step.sizing, size.items, tookMs)
          const labels = [["job", job.name], ["step", step.name]] as const
          yield* Metric.increment(labelled(Metrics.chunks, labels))
          if (items > 0) yield* Metric.incrementBy(labelled(Metrics.items, labels), items)
          for (const item of setAside) {
            yield* Metric.increment(labelled(Metrics.itemsQuarantined, [...labels, ["error_tag", item.errorTag]]))
          }
          stepIndex = to.stepIndex
          chunkSeq = to.chunkSeq
          encodedCursor = to.cursor
          attempt = 1
          if (stepIndex < endStep && stopsWork(runStatus)) {
            yield* withoutKept(store.cancelUnit(lease))
            return "ack" as Ending
          }
        }
        yield* partitionEnded(job, unit, "succeeded")
        return "ack" as Ending
      })
      // The session lives in a scope of its own, so the steps keep the Scope the worker's context gives them.
      return Effect.acquireUseRelease(Scope.make(), execute, Scope.close).pipe(
        Effect.onExit((exit) => endStepSpan(stepSpan, exit))
      )
    }

    /**
     * Asks a split step for the partition's key ranges at the step's start and, when there are several,
     * splits the unit into range units (one store call) and gives it up: the feeder sends the ranges.
     * `whole`: one range, the partition runs the step itself. Ranges that miss or repeat keys fail the
     * partition with `InvalidSplit` before anything runs.
     */
    const splitAt = (
      job: Job.Any,
      { lease, unit }: Claimed,
      entry: Active,
      splitter: Step.Splitter<unknown, unknown>,
      stepIndex: number,
      firstAttempt: number,
      ctx: Step.SplitContext<unknown>
    ) =>
      withRetries(job, unit, entry, firstAttempt, { step: ctx.step, cursor: null }, () =>
        Effect.gen(function*() {
          const invalid = (problem: string) =>
            new Errors.InvalidSplit({ step: ctx.step, partition: ctx.partition.key, problem })
          const checked = Step.checkRanges(yield* splitter.ranges(ctx))
          if (checked._tag === "Problem") return yield* invalid(checked.problem)
          if (checked.ranges.length === 1) return "whole" as const
          const encoded = yield* Effect.forEach(checked.ranges, (range) =>
            Schema.encode(splitter.range)(range).pipe(
              Effect.mapError((error) => invalid(`a range does not encode with the key schema: ${error.message}`)),
              Effect.filterOrFail(
                (value) => JSON.stringify(value).length <= 1024,
                () => invalid("a range is longer than 1 KiB encoded; split on a shorter key")
              )
            ))
          yield* store.splitUnit({
            lease,
            stepIndex,
            ranges: encoded.map((range, i) => ({
              unitId: `${unit.unitId}~${stepIndex}.${unit.generation}.${i}`,
              weight: unit.weight / encoded.length,
              range
            }))
          })
          yield* Effect.logDebug("chunkwise: partition split into ranges").pipe(
            Effect.annotateLogs({
              job: job.name,
              runId: lease.runId,
              partition: ctx.partition.key,
              ranges: encoded.length
            })
          )
          return "split" as const
        }).pipe(inJobContext))

    const runFinalize = (
      job: Job.Any,
      claimed: Claimed,
      entry: Active
    ) =>
      Effect.gen(function*() {
        const { lease, run, unit } = claimed
        const progress = yield* store.progress(run.runId)
        const failed = progress.units.failed + progress.units.cancelled
        const outcome = failed > 0 ? "failed" as const : "succeeded" as const
        const idempotencyKey = defaultKey({
          job: job.name,
          runId: run.runId,
          unitId: unit.unitId,
          partition: "",
          step: "onComplete",
          generation: 0,
          chunkSeq: 0
        })
        const decodedParams = yield* Effect.either(Job.validateParams(job, run.params, "encoded"))
        if (decodedParams._tag === "Left") return yield* failWith(job, claimed, decodedParams.left, "onComplete")
        const result = yield* withRetries(job, unit, entry, unit.attempt, { step: "onComplete", cursor: null }, (n) =>
          Effect.gen(function*() {
            const info = infoOf(lease, job.name, "onComplete", 0, n)
            yield* probe.at("before-complete", info)
            const hook = job.onComplete === undefined ? Effect.void : Effect.suspend(() =>
              job.onComplete!({
                job: job.name,
                runId: run.runId,
                params: decodedParams.right.params,
                outcome,
                partitions: {
                  total: progress.run.partitionCount,
                  succeeded: progress.units.succeeded,
                  failed: progress.units.failed,
                  skipped: progress.units.skipped,
                  cancelled: progress.units.cancelled
                },
                idempotencyKey,
                attempt: n
              })
            )
            yield* store.transaction(
              Effect.zipRight(
                Effect.zipRight(hook, probe.at("after-complete", info)),
                store.finishRun(lease, outcome, idempotencyKey)
              )
            ).pipe(
              Effect.withSpan("chunkwise.complete", {
                attributes: { "chunkwise.job": job.name, "chunkwise.run_id": run.runId }
              })
            )
          }).pipe(inJobContext))
        if (result._tag === "end") return result.ending
        yield* Effect.logInfo(`chunkwise: run ${outcome}`).pipe(
          Effect.annotateLogs({ job: job.name, runId: run.runId, outcome, ...progress.units })
        )
        return "ack" as Ending
      })

    // ---- one delivery, through the receive rules (D2)
    const handle = (delivery: Delivery): Effect.Effect<void, never> =>
      Effect.gen(function*() {
        const decoded = Message.decode(delivery.body)
        if (decoded._tag === "Malformed") {
          yield* Metric.increment(labelled(Metrics.deadLettered, [["reason", "MalformedMessage"]]))
          yield* Effect.logWarning("chunkwise: malformed message dead-lettered").pipe(
            Effect.annotateLogs({ reason: decoded.reason, runbookId: "chunkwise-malformed-message" })
          )
          return yield* queue.deadLetter(delivery.receipt, `MalformedMessage: ${decoded.reason}`)
        }
        if (decoded._tag === "NewerVersion") {
          yield* Metric.increment(Metrics.definitionMismatches)
          return yield* queue.release(delivery.receipt, 30_000)
        }
        const message = decoded.message
        const job = jobs.get(message.job)
        if (job === undefined) {
          const run = yield* store.getRun(message.runId)
          if (Option.isNone(run)) {
            yield* Metric.increment(labelled(Metrics.deadLettered, [["reason", "UnknownJob"]]))
            const error = new Errors.UnknownJob({ job: message.job, known: [...jobs.keys()] })
            yield* Effect.logWarning("chunkwise: message for an unknown job dead-lettered").pipe(
              Effect.annotateLogs({ reason: error.message, runbookId: "chunkwise-unknown-job" })
            )
            return yield* queue.deadLetter(delivery.receipt, `UnknownJob: ${error.message}`)
          }
          // The store knows the run: a worker of another deployment defines its job.
          yield* Metric.increment(Metrics.definitionMismatches)
          return yield* queue.release(delivery.receipt, 30_000)
        }
        const unitKey = `${message.runId}\u0000${message.unitId}`
        // Running here already: keep the message until that execution ends. Acking it would strand the
        // unit for `redeliverAfter` if this execution is a zombie (its lease lapsed) that will not commit.
        if (active.has(unitKey)) {
          return yield* queue.release(delivery.receipt, leaseMs)
        }
        const perJob = [...active.values()].filter((a) =>
          a.job === job.name
        ).length
        if (perJob >= job.concurrency.perWorker) return yield* queue.release(delivery.receipt, 1000)

        const claimId = claimIdFor(unitKey)
        const claim = yield* store.claim({
          message,
          workerId,
          leaseMs,
          jobConcurrency: job.concurrency.total,
          claimId
        }).pipe(
          // A lost reply leaves the outcome unknown: repeating the claim with its id is safe (the store
          // gives the lease it took back, or claims now), and a lease it took is not left to expire.
          // Nobody else receives the message meanwhile, so the repeats may go on for half a lease.
          // A drain stops the repeats (the id is kept): it must not wait out half a lease.
          Effect.retry({ schedule: claimRetry, while: () => !draining }),
          Effect.tapError(() => Effect.sync(() => keepUnsettledClaim(unitKey, claimId)))
        )
        // An id repeated without taking its lease (not yet expired, or no job slot free, or the feeder
        // sent a newer message meanwhile) may still name a lease the unit holds: keep it for next time.
        if (claim._tag === "Later" || (claim._tag === "Ack" && claim.reason === "stale-message")) {
          keepUnsettledClaim(unitKey, claimId)
        }
        if (claim._tag === "Ack") return yield* queue.ack([delivery.receipt])
        if (claim._tag === "Later") return yield* queue.release(delivery.receipt, claim.delayMs)

        // The finalize unit only runs the hook of the code at hand, so only partitions check the definition.
        const mismatch = claim.run.fingerprint === job.fingerprint || claim.unit.kind === "finalize"
          ? []
          : JobDefinition.changes(claim.run.definition, job.definition)
        if (mismatch.length > 0) {
          const upFor = (yield* monotonicMs) - startedAt
          if (upFor < graceMs) {
            yield* Metric.increment(Metrics.definitionMismatches)
            yield* store.release(claim.lease, { abandonedChunk: false })
            return yield* queue.release(delivery.receipt, 30_000)
          }
        }

        const entry: Active = {
          lease: claim.lease,
          receipt: delivery.receipt,
          job: job.name,
          deadline: (yield* monotonicMs) + leaseMs,
          fiber: undefined,
          stop: undefined,
          permits: noPermits,
          endedByCommit: undefined,
          at: { stepIndex: claim.unit.stepIndex, chunkSeq: claim.unit.chunkSeq, attempt: claim.unit.attempt },
          attemptSpent: false
        }
        active.set(unitKey, entry)
        const execution = mismatch.length > 0
          ? failWith(
            job,
            claim,
            new Errors.DefinitionChanged({ job: job.name, runId: message.runId, changes: mismatch }),
            job.steps[claim.unit.stepIndex]?.name ?? ""
          )
          : runUnit(job, claim, entry)
        yield* Metric.set(Metrics.inFlight, active.size)
        const began = yield* monotonicMs
        const exit = yield* Effect.gen(function*() {
          const fiber = yield* Effect.fork(execution.pipe(
            provideJobContext,
            Effect.withSpan("chunkwise.unit", {
              captureStackTrace: false,
              parent: runParentSpan(message.runId),
              attributes: {
                "chunkwise.job": job.name,
                "chunkwise.run_id": message.runId,
                "chunkwise.unit_id": message.unitId,
                "chunkwise.unit_kind": claim.unit.kind,
                "chunkwise.partition": claim.unit.partitionKey,
                "chunkwise.fencing_token": claim.lease.fencingToken,
                "chunkwise.attempt": claim.unit.attempt,
                "chunkwise.worker_id": workerId
              }
            })
          ))
          entry.fiber = fiber
          return yield* Fiber.await(fiber)
        }).pipe(Effect.ensuring(Effect.suspend(() => {
          active.delete(unitKey)
          return Metric.set(Metrics.inFlight, active.size)
        })))
        yield* Metric.update(
          labelled(Metrics.unitDuration, [["job", job.name]]),
          ((yield* monotonicMs) - began) / 1000
        )

        let ending: Ending
        if (Exit.isSuccess(exit)) ending = exit.value
        else if (entry.stop === "abandoned") {
          yield* store.release(claim.lease, { abandonedChunk: entry.attemptSpent, at: entry.at })
          ending = "release"
        } else if (entry.stop === "lease-lost") {
          yield* Metric.increment(labelled(Metrics.leasesLost, [["job", job.name]]))
          yield* Effect.logWarning("chunkwise: lease lost; the unit was interrupted").pipe(
            Effect.annotateLogs({ job: job.name, runId: message.runId, unitId: message.unitId })
          )
          ending = "ack"
        } else if (Cause.isInterruptedOnly(exit.cause)) {
          ending = "release"
        } else {
          yield* Effect.logError(
            "chunkwise: the worker failed while handling a unit; it will be redelivered",
            exit.cause
          )
          ending = "release"
        }
        yield* probe.at("before-ack", infoOf(claim.lease, job.name, "", 0, 0))
        if (ending === "ack") {
          yield* queue.ack([delivery.receipt])
          // A range that ended lets its partition move on once it was the last (the split barrier).
          const joined = claim.unit.parentUnitId === null
            ? "open"
            : yield* store.joinRanges(message.runId, claim.unit.parentUnitId)
          // The commit that ended a partition checked completion in its own transaction; any other end
          // (a failure, a cancel, a range and its join) checks now.
          const finalized = entry.endedByCommit !== undefined && claim.unit.parentUnitId === null
            ? entry.endedByCommit.finalized
            : yield* store.tryFinalize(message.runId)
          if (finalized) {
            yield* Effect.logDebug("chunkwise: run finalizing").pipe(Effect.annotateLogs({ runId: message.runId }))
          }
          // New work to send at once: the run's finalize unit, or a partition its ranges moved on.
          yield* finalized || joined === "advanced" ? kickFeeder : unitEnded
        } else {
          yield* queue.release(delivery.receipt, 0)
          yield* kickFeeder
        }
      }).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.void
            : Effect.logError("chunkwise: handling a message failed; it will be redelivered", cause)
        ),
        log
      )

    // ---- gauges for autoscaling and alerts, sampled on the sweeper's cadence
    const sample = Effect.gen(function*() {
      const depth = yield* queue.depth
      yield* Metric.set(labelled(Metrics.queueMessages, [["state", "ready"]]), depth.ready)
      yield* Metric.set(labelled(Metrics.queueMessages, [["state", "in_flight"]]), depth.inFlight)
      yield* Metric.set(labelled(Metrics.queueMessages, [["state", "delayed"]]), depth.delayed)
      yield* Metric.set(labelled(Metrics.queueMessages, [["state", "dead"]]), depth.dead)
      yield* Metric.set(Metrics.queueOldestReadyAge, (depth.oldestReadyAgeMs ?? 0) / 1000)
      const backlog = yield* store.backlog
      yield* Metric.set(labelled(Metrics.units, [["state", "ready"]]), backlog.ready)
      yield* Metric.set(labelled(Metrics.units, [["state", "delayed"]]), backlog.delayed)
      yield* Metric.set(labelled(Metrics.units, [["state", "running"]]), backlog.running)
      yield* Metric.set(labelled(Metrics.units, [["state", "expired_lease"]]), backlog.expiredLeases)
    })

    // ---- loops, forked at worker scope (D4)
    const receiveLoop = Effect.gen(function*() {
      while (!draining) {
        if (inflight >= concurrency) {
          yield* Queue.take(slotFreed)
          continue
        }
        const max = concurrency - inflight
        const deliveries = yield* queue.receive({ max, visibilityMs: leaseMs, waitMs: pollMs })
          .pipe(survive("receiving failed; backing off", Effect.as(Effect.sleep(pollMs), [])))
        // The queue ran short of this worker's free slots after units ended here: top it up now rather
        // than at the next tick. (Only after an end: a message that keeps coming back, such as one for a
        // unit this worker still runs, must not turn receive and feed into a loop.)
        if (deliveries.length < max && endedSinceFeed > 0 && !draining) yield* kickFeeder
        for (const delivery of deliveries) {
          inflight += 1
          yield* FiberSet.run(
            handlers,
            handle(delivery).pipe(
              Effect.ensuring(Effect.suspend(() => {
                inflight -= 1
                return Queue.offer(slotFreed, undefined)
              }))
            )
          )
        }
      }
    })
    const feederLoop = Effect.forever(
      Effect.zipRight(feedOnce, Effect.raceFirst(Queue.take(feedKick), Effect.sleep(feedMs)))
    )
    const heartbeatLoop = Effect.forever(
      Effect.zipRight(
        Effect.sleep(Math.max(1, Math.floor(leaseMs / 3))),
        heartbeat.pipe(survive("the heartbeat failed; retrying on the next beat"))
      )
    )
    const sweeperLoop = Effect.forever(
      Effect.zipRight(
        Effect.sleep(sweepMs),
        Effect.zipRight(
          store.sweep().pipe(
            Effect.flatMap((ids) => (ids.length > 0 ? kickFeeder : Effect.void)),
            survive("sweeping failed; retrying on the next sweep")
          ),
          sample.pipe(survive("sampling queue depth and backlog failed; retrying on the next sweep"))
        )
      )
    )

    yield* Effect.forkScoped(heartbeatLoop.pipe(log))
    yield* Effect.forkScoped(feederLoop.pipe(log))
    yield* Effect.forkScoped(sweeperLoop.pipe(log))
    const receiver = yield* Effect.forkScoped(receiveLoop.pipe(log))

    // Added last, so it runs first on close: drain while heartbeats still run.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        draining = true
        yield* Deferred.succeed(drainStarted, undefined)
        yield* Fiber.interrupt(receiver)
        const awaitIdle = Effect.gen(function*() {
          while (inflight > 0) yield* Queue.take(slotFreed)
        })
        // Finalizers run uninterruptibly; the race's loser must stay interruptible or the race waits for it.
        const settled = yield* Effect.raceFirst(
          Effect.interruptible(Effect.as(awaitIdle, true)),
          Effect.interruptible(Effect.as(Effect.sleep(shutdownMs), false))
        )
        if (!settled) {
          for (const entry of active.values()) {
            entry.stop = "abandoned"
            if (entry.fiber !== undefined) yield* Fiber.interruptFork(entry.fiber)
          }
          yield* awaitIdle
        }
        yield* Effect.logInfo("chunkwise: worker stopped").pipe(Effect.annotateLogs({ workerId, abandoned: !settled }))
      })
    )
    yield* kickFeeder
    yield* Effect.logInfo("chunkwise: worker started").pipe(
      Effect.annotateLogs({
        workerId,
        jobs: [...jobs.keys()].join(","),
        concurrency,
        store: store.kind,
        queue: queue.kind
      })
    )
    return { workerId, activeUnits: Effect.sync(() => active.size) }
  })

const noPermits: ResourceLimiter.Permits = { slots: [], grants: [] }

/** Claims of unknown outcome kept for the units' next delivery here; the oldest are forgotten. */
const maxUnsettledClaims = 1024

/**
 * Checks the declared limits and the resources the steps name, and stores them (first use) through the
 * `ResourceLimiter`, which must be provided when either is present. Returns the limiter, if needed.
 */
const setupLimits = (
  store: StateStoreShape,
  jobs: ReadonlyArray<Job.Any>,
  limits: ResourceLimiter.Limits | undefined,
  workerId: string
) =>
  Effect.gen(function*() {
    const users = new Map<string, Array<string>>()
    for (const job of jobs) {
      for (const step of job.steps) {
        for (const resource of step.resources) {
          users.set(resource, [...(users.get(resource) ?? []), `${job.name}/${step.name}`])
        }
      }
    }
    const declared = limits ?? {}
    if (typeof declared !== "object" || declared === null || Array.isArray(declared)) {
      return yield* new Errors.ConfigurationError({
        message: `Worker: limits must be an object by resource name, e.g. { "primary-db": { inFlight: 8 } }`
      })
    }
    for (const [resource, limit] of Object.entries(declared)) {
      const problem = ResourceLimiter.invalidResourceName(resource) ??
        ResourceLimiter.invalidLimit(limit, (key) => `Worker: limits["${resource}"]${key === "" ? "" : `.${key}`}`)
      if (problem !== undefined) {
        return yield* new Errors.ConfigurationError({
          message: problem.startsWith("Worker:") ? problem : `Worker: limits: ${problem}`
        })
      }
    }
    const resources = [...new Set([...users.keys(), ...Object.keys(declared)])].sort()
    if (resources.length === 0) return undefined
    const found = yield* Effect.serviceOption(ResourceLimiter.ResourceLimiter)
    if (Option.isNone(found)) {
      const what = users.size > 0
        ? `step(s) ${[...new Set([...users.values()].flat())].join(", ")} name resources (${
          [...users.keys()].join(", ")
        })`
        : `limits are declared for ${Object.keys(declared).join(", ")}`
      return yield* new Errors.ConfigurationError({
        message: `Worker: ${what}, but no ResourceLimiter is provided, so nothing would enforce their limits. ` +
          `Provide PgResourceLimiter.layer({ schema }) beside PgStateStore.layer (ResourceLimiter.layerMemory() ` +
          `with the in-memory store), or remove the resources and limits.`
      })
    }
    const limiter = found.value
    if (limiter.kind !== store.kind) {
      yield* Effect.logWarning(
        `chunkwise: the resource limiter is ${limiter.kind} but the state store is ${store.kind}; limits hold ` +
          `only among the workers that share the limiter (a memory limiter: this process)`
      )
    }
    const unused = Object.keys(declared).filter((resource) => !users.has(resource))
    if (unused.length > 0) {
      yield* Effect.logWarning(
        `chunkwise: limits are declared for ${unused.join(", ")}, which no step of this worker names in its ` +
          `resources; check the spelling (steps name: ${[...users.keys()].join(", ") || "none"})`
      )
    }
    const results = yield* Effect.orDie(limiter.declare(
      resources.map((resource) => ({ resource, limit: declared[resource] ?? {} })),
      `worker ${workerId}`
    ))
    for (const { outcome, resource, setting } of results) {
      if (outcome === "operator") {
        yield* Effect.logInfo(
          `chunkwise: resource "${resource}" keeps the limit an operator set (${
            ResourceLimiter.summary(ResourceLimiter.limitOf(setting))
          }, by ${setting.updatedBy}: ${setting.reason}); this worker's default (${
            ResourceLimiter.summary(declared[resource] ?? {})
          }) does not replace it`
        )
      } else if (outcome !== "unchanged") {
        yield* Effect.logInfo(
          `chunkwise: resource "${resource}" limit ${outcome}: ${
            ResourceLimiter.summary(ResourceLimiter.limitOf(setting))
          }`
        )
      }
    }
    return limiter
  })

/** The step span a unit execution has open, if any. */
interface StepSpan {
  index: number
  span: Tracer.Span | undefined
}

const endStepSpan = (holder: StepSpan, exit: Exit.Exit<unknown, unknown>) =>
  Effect.map(endSpan(holder.span, exit), () => {
    holder.span = undefined
    holder.index = -1
  })

/** Ends `span` (when there is one) now, with `exit`. */
const endSpan = (span: Tracer.Span | undefined, exit: Exit.Exit<unknown, unknown>) =>
  Effect.flatMap(Clock.currentTimeNanos, (now) => Effect.sync(() => span?.end(now, exit)))

/** Records a partition's time from its first claim (store clock) to its end. */
const partitionEnded = (job: Job.Any, unit: UnitRecord, outcome: "succeeded" | "failed") =>
  unit.kind !== "partition" || unit.startedAt === null ? Effect.void : Effect.flatMap(
    Clock.currentTimeMillis,
    (now) =>
      Metric.update(
        labelled(Metrics.partitionDuration, [["job", job.name], ["outcome", outcome]]),
        Math.max(0, now - unit.startedAt!) / 1000
      )
  )

/** The worker as a layer: it runs until the layer's scope closes. */
export const layer = <const Jobs extends ReadonlyArray<Job.Any>>(
  options: Options<Jobs>
): Layer.Layer<never, Errors.ConfigurationError, StateStore | QueueAdapter | Job.Context<Jobs[number]>> =>
  Layer.scopedDiscard(make(options))

/**
 * The one structured line per failure (D12): it carries the runbook so a log-based alert can attach
 * it, and the command that retries the partition.
 */
const alert = (
  job: Job.Any,
  unit: UnitRecord,
  lease: Lease,
  classified: Classified,
  where: {
    readonly step: string
    readonly cursor: string | null
    readonly attempt: number
    readonly outcome: "retry" | "failed"
    readonly delayMs: number | undefined
  },
  cliName: string
) => {
  const { runbook } = classified
  const line =
    `chunkwise failure: ${runbook.title} [${classified.tag}] in ${job.name}/${unit.partitionKey}/${where.step}`
  const annotated = Effect.annotateLogs({
    alert: "chunkwise.failure",
    job: job.name,
    runId: lease.runId,
    partition: unit.partitionKey,
    unitId: lease.unitId,
    step: where.step,
    cursor: where.cursor ?? "",
    attempt: where.attempt,
    outcome: where.outcome,
    retryInMs: where.delayMs ?? "",
    errorTag: classified.tag,
    errorMessage: classified.message,
    runbookId: runbook.id,
    runbookTitle: runbook.title,
    severity: runbook.severity,
    // The operator fills in the reason; the CLI refuses a retry without one (it goes to the audit log).
    retryCommand: `${cliName} retry ${lease.runId} --partition ${JSON.stringify(unit.partitionKey)} --reason "..."`
  })
  const log = where.outcome === "retry" || runbook.severity === "info"
    ? Effect.logWarning(line)
    : Effect.logError(line)
  return annotated(log)
}

/**
 * Keeps a background loop alive through any failure or defect of one iteration (a lost connection
 * can surface as a defect, e.g. a failed COMMIT): logs it, then runs `fallback` (by default nothing)
 * and lets the loop go on. Interruption passes.
 */
const survive =
  <B = void>(what: string, fallback: Effect.Effect<B> = Effect.void as Effect.Effect<B>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A | B, never, R> =>
    Effect.catchAllCause(
      effect,
      (cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.failCause(cause as Cause.Cause<never>)
          : Effect.zipRight(Effect.logWarning(`chunkwise: ${what}`, cause), fallback)
    )

const monotonicMs = Effect.map(Clock.currentTimeNanos, (nanos) => Number(nanos / 1_000_000n))

/** A single step that can run inside the transaction of the step before it. */
type FusableStep = Extract<Job.Any["steps"][number], { readonly _tag: "Single" }>

/**
 * The step after `stepIndex` when it can share that step's last transaction: a single step in mode
 * `chunk`, with no resource permits and no timeout of its own.
 */
const fusableAfter = (job: Job.Any, stepIndex: number, endStep: number): FusableStep | undefined => {
  const next = stepIndex + 1 < endStep ? job.steps[stepIndex + 1] : undefined
  return next !== undefined && next._tag === "Single" && next.transaction === "chunk" &&
      next.resources.length === 0 && next.timeout === undefined
    ? next
    : undefined
}

/** A fused step failed: its transaction, and the chunk's before it, roll back; the chunk is redone alone. */
class FusedStepFailed {
  readonly _tag = "chunkwise/FusedStepFailed"
}

/** A chunk that committed, as the unit's loop goes on from it. */
interface ChunkDone {
  readonly to: ChunkCommit["to"]
  readonly runStatus: RunStatus
  readonly items: number
  readonly setAside: NonNullable<ChunkCommit["quarantine"]>["items"]
  /** The single step that committed with the chunk, and its span (still open). */
  readonly fused: { readonly step: string; readonly span: Tracer.Span } | undefined
  readonly tookMs: number
}

/** How a chunk's attempt ended: committed, or rolled back because the run stopped (a fused commit refused). */
type ChunkEnd = ChunkDone | Errors.RunStopped

const stopsWork = (status: RunStatus) => status !== "running"

/** A chunk's idempotency key: the step's own, or the default. */
const keyOf = (step: Job.Any["steps"][number], input: Step.KeyInput): string =>
  step.idempotencyKey?.(input) ?? defaultKey(input)

/** The default idempotency key (D9). */
export const defaultKey = (input: Step.KeyInput): string =>
  "cw1_" + base32(digest([input.job, input.runId, input.unitId, input.step, input.generation, input.chunkSeq]))

/** A per-item key derived from a chunk's idempotency key. */
export const itemKeyOf = (idempotencyKey: string, itemId: string | number | bigint): string =>
  stableId("cw1i_", [idempotencyKey, String(itemId)], 40)

const registry = (jobs: ReadonlyArray<Job.Any>) =>
  Effect.gen(function*() {
    if (jobs.length === 0) {
      return yield* new Errors.ConfigurationError({ message: "Worker: give at least one job in `jobs`" })
    }
    const byName = new Map<string, Job.Any>()
    const byTag = new Map<string, { readonly job: string; readonly id: string }>()
    const byId = new Map<string, { readonly job: string; readonly tag: string }>()
    for (const job of jobs) {
      if (byName.has(job.name)) {
        return yield* new Errors.ConfigurationError({
          message: `Worker: two jobs are named "${job.name}"; job names must be unique`
        })
      }
      byName.set(job.name, job)
      for (const { id, tag } of job.runbooks.values()) {
        const sameTag = byTag.get(tag)
        const sameId = byId.get(id)
        if ((sameTag !== undefined && sameTag.id !== id) || (sameId !== undefined && sameId.tag !== tag)) {
          return yield* new Errors.ConfigurationError({
            message:
              `Worker: jobs "${(sameTag ?? sameId)!.job}" and "${job.name}" register error tag "${tag}" / runbook ` +
              `"${id}" differently (D12); share one registration or rename one of them`
          })
        }
        byTag.set(tag, { job: job.name, id })
        byId.set(id, { job: job.name, tag })
      }
    }
    return byName
  })

/**
 * What this process knows of a client's pool: a lock, so workers starting together check it one at a
 * time (and never split it between their probes), and the concurrency of each worker running on it.
 */
interface SharedPool {
  readonly lock: Effect.Semaphore
  readonly workers: Array<number>
}
const sharedPools = new WeakMap<SqlClient.SqlClient, SharedPool>()
const sharedPoolOf = (sql: SqlClient.SqlClient): SharedPool => {
  let pool = sharedPools.get(sql)
  if (pool === undefined) {
    pool = { lock: Effect.unsafeMakeSemaphore(1), workers: [] }
    sharedPools.set(sql, pool)
  }
  return pool
}

/** The pool size a client declares (`PgClient`'s `config.maxConnections`), when it declares one. */
const declaredPoolSize = (sql: SqlClient.SqlClient): number | undefined => {
  const config: unknown = (sql as { readonly config?: unknown }).config
  const size = typeof config === "object" && config !== null
    ? (config as { readonly maxConnections?: unknown }).maxConnections
    : undefined
  return typeof size === "number" ? size : undefined
}

/**
 * D16: each unit holds a connection for its chunk transaction, and the heartbeat and the feeder or
 * sweeper need one beside them, so a pool below `concurrency + 2` starves leases under load. The pool's
 * size is not visible through `SqlClient`, so this asks the pool itself: it checks out `concurrency + 2`
 * connections at once and refuses to start when they are not all served within `waitMs`. No checkout is
 * interrupted (an interrupted checkout would leak its connection once the pool serves it): the held
 * ones are released, which lets any still waiting be served and released in turn.
 *
 * Workers of one process on one client share its pool, so they need the sum. Their connections are in
 * use while they run, so a probe cannot ask for the others' share: a client that declares its pool size
 * (`PgClient`) is held to the sum instead, and the worker is counted until its scope closes.
 */
const checkPool = (store: StateStoreShape, concurrency: number, waitMs: number) =>
  Effect.gen(function*() {
    const found = yield* Effect.serviceOption(SqlClient.SqlClient)
    if (store.database === undefined || Option.isNone(found)) return
    const sql = found.value
    const needed = concurrency + 2
    const pool = sharedPoolOf(sql)
    const probe = Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const allHeld = yield* Deferred.make<void>()
      let held = 0
      let most = 0
      const checkout = Effect.scoped(Effect.gen(function*() {
        yield* sql.reserve
        held += 1
        most = Math.max(most, held)
        if (held === needed) yield* Deferred.succeed(allHeld, undefined)
        yield* Deferred.await(release)
        held -= 1
      }))
      const fibers = yield* Effect.forEach(
        Array.from({ length: needed }),
        () => Effect.fork(Effect.either(checkout))
      )
      const served = yield* Deferred.await(allHeld).pipe(Effect.timeout(waitMs), Effect.option)
      yield* Deferred.succeed(release, undefined)
      const results = yield* Effect.forEach(fibers, Fiber.join)
      const failure = results.find((r) => r._tag === "Left")
      return { ok: Option.isSome(served), most, failure: failure?._tag === "Left" ? failure.left.message : undefined }
    })
    // Under the client's lock: workers starting together each count the ones before them.
    return yield* pool.lock.withPermits(1)(Effect.gen(function*() {
      const others = [...pool.workers]
      const size = declaredPoolSize(sql)
      const total = others.reduce((sum, c) => sum + c + 2, needed)
      const sharing = `${others.length} other worker(s) of this process share that pool (concurrency ` +
        `${others.join(", ")}; each needs its concurrency + 2), so the pool needs at least ${total} connections`
      if (others.length > 0 && size !== undefined && size < total) {
        return yield* new Errors.ConfigurationError({
          message: `Worker: concurrency ${concurrency} needs ${needed} connections of its SqlClient's pool, and ` +
            `${sharing}, but it holds ${size}. Raise the pool size (PgClient maxConnections: ${total} or more), ` +
            `lower the workers' concurrency, or give this worker a SqlClient of its own.`
        })
      }
      if (others.length > 0 && size === undefined) {
        yield* Effect.logWarning(
          `chunkwise: Worker: ${sharing}, and the client declares no pool size (PgClient maxConnections), so ` +
            `that could not be checked; only this worker's ${needed} were.`
        )
      }
      const probed = yield* probe
      if (!probed.ok) {
        return yield* new Errors.ConfigurationError({
          message: `Worker: concurrency ${concurrency} needs a SqlClient pool of at least ${needed} connections ` +
            `(one per unit's chunk transaction, plus the heartbeat and the feeder/sweeper), but the pool served ` +
            `only ${probed.most} at once within ${waitMs} ms` +
            (probed.failure === undefined ? "" : ` (checking out a connection failed: ${probed.failure})`) +
            (others.length === 0 ? "" : `; ${sharing}, and theirs are in use`) +
            `. Raise the pool size (PgClient maxConnections: ${total} or more) or lower the worker's ` +
            `concurrency; if other work keeps the pool busy at start-up, raise poolCheckTimeout.`
        })
      }
      // Counted until the worker's scope closes (one entry of its concurrency, whichever).
      yield* Effect.acquireRelease(
        Effect.sync(() => pool.workers.push(concurrency)),
        () => Effect.sync(() => pool.workers.splice(pool.workers.indexOf(concurrency), 1))
      )
    }))
  })

/**
 * `chunk` mode needs the user's writes in the store's transaction. On the in-memory store a SqlClient
 * cannot join it (D13); on a SQL store the steps' SqlClient must reach the store's database, since
 * one transaction connection serves every SqlClient in the chunk (D4). Also warns when Postgres would
 * not abort a paused worker's transaction before its lease ends (D6).
 */
const checkTransactions = (store: StateStoreShape, jobs: ReadonlyArray<Job.Any>, leaseMs: number) =>
  Effect.gen(function*() {
    const chunkSteps = jobs.flatMap((job) =>
      job.steps.filter((s) => s.transaction === "chunk").map((s) => `${job.name}/${s.name}`)
    )
    if (chunkSteps.length === 0) return
    const sql = yield* Effect.serviceOption(SqlClient.SqlClient)
    if (store.kind === "memory" && Option.isSome(sql)) {
      return yield* new Errors.ConfigurationError({
        message:
          `Worker: step(s) ${chunkSteps.join(", ")} use transaction "chunk" and a SqlClient is provided, but the ` +
          `state store is in memory, so their SQL writes could not commit with the checkpoint. Use PgStateStore.layer, ` +
          `or set transaction: "none" and make the writes idempotent.`
      })
    }
    if (store.database === undefined || Option.isNone(sql)) return
    const storeDatabase = yield* Effect.orDie(store.database.identity)
    const stepDatabase = yield* Effect.orDie(databaseIdentity(sql.value))
    if (storeDatabase !== stepDatabase) {
      return yield* new Errors.ConfigurationError({
        message:
          `Worker: step(s) ${chunkSteps.join(", ")} use transaction "chunk", but the worker's SqlClient reaches ` +
          `${stepDatabase} while the state store writes to ${storeDatabase}; their writes could not commit together. ` +
          `Give PgStateStore.layer and the worker the same PgClient layer, or set transaction: "none".`
      })
    }
    const timeoutMs = yield* Effect.orDie(store.database.idleInTransactionTimeoutMs)
    if (timeoutMs === 0 || timeoutMs > leaseMs) {
      yield* Effect.logWarning(
        `chunkwise: idle_in_transaction_session_timeout is ${timeoutMs === 0 ? "off" : `${timeoutMs} ms`}; set it to ` +
          `at most the lease (${leaseMs} ms) on the worker's role, so Postgres aborts a paused worker's chunk ` +
          `transaction and frees its locks (ALTER ROLE ... SET idle_in_transaction_session_timeout = '${leaseMs}ms')`
      )
    }
  })
