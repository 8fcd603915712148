/**
 * The state store port: where runs, units (partitions), checkpoints, the idempotency ledger, leases,
 * failures and the audit log live. The store is the truth; queue messages only wake workers (D1).
 *
 * Contract, for every driver (memory here, Postgres in `PgStateStore`):
 *
 * - **Compare-and-set progress.** `commitChunk` advances a unit's checkpoint only when the caller's
 *   fencing token, step and chunk position all match and its lease is live; otherwise it fails with
 *   `LeaseLost` / `CheckpointMoved` and changes nothing. In a `chunk`-mode step it is the last
 *   statement of `transaction`, so the user's writes commit with it or not at all.
 * - **Fencing.** Every claim and every operator action on a unit increments its fencing token.
 * - **Store time.** Lease expiry and delays are computed from the store's clock, never the caller's.
 * - **Outbox enqueueing.** `feed` marks units enqueued and returns the messages to send; the caller sends
 *   them after it returns. A message lost after `feed` is re-sent by a later `feed` once it is older
 *   than `redeliverAfterMs` and the unit has no live lease.
 * - **Completion by compare-and-set.** A run moves to `finalizing` only when no unit is left to run, at
 *   most once per finalize round, however many callers race: by the `commitChunk` that ends the run's
 *   last open unit (in its own transaction, returning `runStatus: "finalizing"`), or by `tryFinalize`
 *   after any other way a unit ends (failed, skipped, cancelled, a split joined).
 *
 * Outside the contract: scheduling fairness between runs, and retention of ledger and failure rows
 * (drivers document their own pruning).
 *
 * @since 0.1.0
 */
import type { SqlClient } from "@effect/sql"
import type { Exit, Scope } from "effect"
import { Context, Effect, Layer, Option } from "effect"
import type * as Errors from "./Errors.js"
import * as MemoryStore from "./internal/memoryStore.js"
import type { JobDefinition } from "./JobDefinition.js"
import { MemoryDatabase } from "./MemoryDatabase.js"
import type { WorkMessage } from "./Message.js"
import type * as Quarantine from "./Quarantine.js"
import type * as Runbook from "./Runbook.js"

/** A run's lifecycle (D8): `failed | cancelled → running` only through `retry`. */
export type RunStatus = "enumerating" | "running" | "failing" | "finalizing" | "succeeded" | "failed" | "cancelled"

/**
 * A unit's lifecycle: `pending → leased → pending | waiting | succeeded | failed | skipped | cancelled`.
 * `waiting`: a partition whose split step runs as range units; it moves on when every range is done.
 */
export type UnitStatus = "pending" | "leased" | "waiting" | "succeeded" | "failed" | "skipped" | "cancelled"

/** Every unit status, in lifecycle order. */
export const unitStatuses: ReadonlyArray<UnitStatus> = [
  "pending",
  "leased",
  "waiting",
  "succeeded",
  "failed",
  "skipped",
  "cancelled"
]

/** A count per unit status, all zero: what progress counts start from. */
export const emptyCounts = (): Record<UnitStatus, number> =>
  Object.fromEntries(unitStatuses.map((status) => [status, 0])) as Record<UnitStatus, number>

/**
 * A partition's main unit; one key range of a split step (it runs that step only, then joins its
 * partition); an operator's re-run of one partition's quarantined items of one step (`items`); or the
 * unit that runs the job's completion hook.
 */
export type UnitKind = "partition" | "range" | "items" | "finalize"

/** Statuses a run or a unit never leaves without an operator action. */
export const isTerminalRun = (status: RunStatus): boolean =>
  status === "succeeded" || status === "failed" || status === "cancelled"

/** @since 0.1.0 */
export const isTerminalUnit = (status: UnitStatus): boolean =>
  status === "succeeded" || status === "failed" || status === "skipped" || status === "cancelled"

/** A run as stored. Times are epoch milliseconds from the store's clock. */
export interface RunRecord {
  readonly runId: string
  readonly job: string
  readonly runKey: string
  /** The params, encoded with the job's params schema (JSON-safe). */
  readonly params: unknown
  readonly definition: JobDefinition
  readonly fingerprint: string
  readonly status: RunStatus
  readonly partitionCount: number
  /** Failed partitions allowed before the run fails fast; frozen when the run starts running. */
  readonly failureBudget: number
  /** Grows when `retry` reopens a finished run; names the current finalize unit. */
  readonly finalizeSeq: number
  readonly createdAt: number
  readonly updatedAt: number
  readonly finishedAt: number | null
  /** Why the run is failing, failed or cancelled. */
  readonly reason: string | null
}

/** A unit as stored: its checkpoint, its lease and its counters. */
export interface UnitRecord {
  readonly runId: string
  readonly unitId: string
  readonly job: string
  readonly kind: UnitKind
  readonly partitionKey: string
  readonly weight: number
  readonly status: UnitStatus
  /** Index of the current step; equal to the number of steps once every step is done. */
  readonly stepIndex: number
  /** The encoded cursor within the current step; `null` means the step's start. */
  readonly cursor: unknown
  /** Committed chunks of the current step. */
  readonly chunkSeq: number
  /** Grows with `retry --from-step`; part of the idempotency key. */
  readonly generation: number
  /** 1 + failed or abandoned executions of the current chunk; reset by a checkpoint. */
  readonly attempt: number
  /** Claims after an unclean end (lease expired while leased) since the last checkpoint. */
  readonly crashesSinceProgress: number
  readonly fencingToken: number
  readonly leaseOwner: string | null
  readonly leaseExpiresAt: number | null
  readonly enqueueSeq: number
  readonly enqueuedAt: number | null
  readonly retryAt: number | null
  readonly chunks: number
  readonly items: number
  readonly startedAt: number | null
  readonly finishedAt: number | null
  readonly lastErrorTag: string | null
  /** A range unit's partition unit; `null` for the others. */
  readonly parentUnitId: string | null
  /** A range unit's key range, encoded with the step's key schema (`{ from, to }`); `null` for the others. */
  readonly range: unknown
}

/** What a worker holds while it runs a unit. */
export interface Lease {
  readonly runId: string
  readonly unitId: string
  readonly workerId: string
  readonly fencingToken: number
}

/** A new run. The runner computes the id, key, definition and fingerprint from the job. */
export interface NewRun {
  readonly runId: string
  readonly job: string
  readonly runKey: string
  /**
   * The run key without its rerun label: the runs of the job with the same base key do the same work.
   * While one of them has not ended, no other is created.
   */
  readonly baseKey: string
  readonly params: unknown
  readonly definition: JobDefinition
  readonly fingerprint: string
}

/** A partition, as the runner inserts it. */
export interface NewUnit {
  readonly unitId: string
  readonly partitionKey: string
  readonly weight: number
}

/** One key range of a split step, as the worker inserts it. */
export interface NewRange {
  readonly unitId: string
  readonly weight: number
  /** The range, encoded with the step's key schema. */
  readonly range: unknown
}

/** A partition unit split at the start of a step into range units (D1). */
export interface Split {
  readonly lease: Lease
  /** The split step; the partition must be at its start (chunk 0). */
  readonly stepIndex: number
  readonly ranges: ReadonlyArray<NewRange>
}

/**
 * What `joinRanges` did to a waiting partition: `open` while a range is left to run, `advanced` to
 * its next step, `succeeded` when the split step was its last, `failed` / `cancelled` when a range
 * ended so, `none` when the partition was not waiting (already joined, or an operator moved it).
 */
export type JoinOutcome = "open" | "advanced" | "succeeded" | "failed" | "cancelled" | "none"

/** The answer to a claim. */
export type ClaimResult =
  | {
    readonly _tag: "Claimed"
    readonly unit: UnitRecord
    readonly run: RunRecord
    readonly lease: Lease
  }
  /** Nothing to do for this message: acknowledge it. */
  | {
    readonly _tag: "Ack"
    readonly reason: "terminal" | "waiting" | "stale-message" | "unknown-unit" | "run-not-active" | "not-due"
  }
  /** Not now: release the message with this delay. */
  | {
    readonly _tag: "Later"
    readonly delayMs: number
    readonly reason: "leased-elsewhere" | "job-concurrency"
  }

/** A claim of the unit a message points to. */
export interface ClaimRequest {
  readonly message: WorkMessage
  readonly workerId: string
  readonly leaseMs: number
  /** At most this many units of the job may be leased at once, across all workers. */
  readonly jobConcurrency: number | undefined
  /**
   * Names this claim (unique across workers and restarts, e.g. a UUID), so that it can be repeated when
   * its outcome is unknown (the reply was lost). A claim with the id of the claim that leased the unit,
   * from the same worker, gets that lease back, extended, while it is live (same fencing token), and
   * takes the unit again after it expired without counting a crash. Absent: every call is a new claim.
   */
  readonly claimId?: string | undefined
}

/** A checkpoint: where the unit is after this commit. */
export interface Position {
  readonly stepIndex: number
  readonly chunkSeq: number
}

/**
 * A chunk's attempt as the worker counted it: the chunk (where the unit was when it began) and the
 * attempt's number, which runs ahead of the store's count after retries in-process.
 */
export interface ChunkAttempt extends Position {
  readonly attempt: number
}

/** The framework's one statement per chunk. */
export interface ChunkCommit {
  readonly lease: Lease
  /** Where the worker believes the unit is; the commit is a compare-and-set on it. */
  readonly from: Position
  /** Where the unit is after this chunk. */
  readonly to: Position & { readonly cursor: unknown }
  /** True when this chunk finished the unit's last step: the unit succeeds. */
  readonly unitDone: boolean
  readonly items: number
  /** The idempotency key of the chunk being committed, recorded in the ledger. */
  readonly idempotencyKey: string
  readonly step: string
  readonly leaseMs: number
  /** Quarantine changes that commit with this chunk (D17), when its step sets items aside. */
  readonly quarantine?: ChunkQuarantine | undefined
  /**
   * The single step after this chunk's step, run in the same transaction (a fused step, see the
   * idempotency guide), committed by this same call: the chunk's ledger row and the step's (its chunk
   * 0, no items) are both recorded and the unit counts two chunks. `to` and `unitDone` then say where
   * the unit is after that step. Refused with `RunStopped`, nothing recorded, when the run is not
   * `running` (D8: a run that stopped while the chunk ran starts no new step).
   */
  readonly fused?: FusedCommit | undefined
  /**
   * Nothing runs after this call in its transaction: a store may end the transaction with it, its
   * COMMIT sent in the same round trip (the Postgres store does, in a session's transaction, and then
   * fails a statement sent after it). A chunk that this call refuses then rolls back as before, before
   * the call fails.
   */
  readonly last?: boolean | undefined
}

/** The fused single step's part of a `ChunkCommit`. */
export interface FusedCommit {
  readonly step: string
  /** The step's idempotency key, recorded in the ledger. */
  readonly idempotencyKey: string
}

/** What a chunk changes in the quarantine, in its commit. */
export interface ChunkQuarantine {
  /**
   * Items set aside, recorded under the unit's partition and the commit's step; an item already there
   * is set aside again (status `quarantined`, `attempts + 1`, the new error; its cursor and range kept).
   */
  readonly items: ReadonlyArray<Quarantine.Item>
  /** The chunk's start cursor, encoded (`null` at the step's start). */
  readonly cursor: unknown
  /** The unit's key range, encoded (`null` unless the step is split). */
  readonly range: unknown
  /**
   * Budgets checked after the items are counted, this chunk's items included in the items handled:
   * over one, the commit fails with `SkipBudgetExceeded` and nothing of the chunk commits. Absent on
   * an operator's re-run, whose items were counted when they were first set aside.
   */
  readonly budgets?: {
    /** The step's budget for one partition: items set aside in the step by the partition's units. */
    readonly partition: Quarantine.Limit
    /** The job's budget for the run: items set aside by every step and partition. */
    readonly run: Quarantine.Limit | undefined
  } | undefined
  /** A re-run: ids of the items whose `write` succeeded now (status `resolved`). */
  readonly resolved?: ReadonlyArray<string> | undefined
}

/** One partition and step whose quarantined items an operator asked to re-run. */
export interface QuarantineRetry {
  readonly partitionKey: string
  readonly step: string
  /** Items that will be written again. */
  readonly items: number
  /** The unit that runs them (kind `items`). */
  readonly unitId: string
}

/** A failure, as recorded for operators. */
export interface FailureRecord {
  readonly runId: string
  readonly unitId: string
  readonly partitionKey: string
  readonly step: string
  readonly errorTag: string
  readonly message: string
  readonly cause: string
  /** The encoded cursor at the failure, as JSON text. */
  readonly cursor: string | null
  readonly attempt: number
  readonly runbookId: string
  readonly severity: Runbook.Severity
  /** `retry`: another attempt follows; `failed`: the unit failed; `abandoned`: the lease was lost. */
  readonly outcome: "retry" | "failed" | "abandoned"
  readonly at: number
}

/** How `failUnit` leaves the unit. */
export type FailDisposition =
  /** The unit fails and waits for an operator. */
  | { readonly _tag: "Failed"; readonly errorTag: string }
  /**
   * The unit goes back to pending and is re-sent after the delay, with `attempt + 1`. `at` is the
   * attempt that failed as the worker counted it: the store counts on from the greater of it and its own
   * count, and leaves the count alone when the unit is no longer at that chunk (its commit did apply).
   */
  | {
    readonly _tag: "RetryLater"
    readonly errorTag: string
    readonly delayMs: number
    readonly at?: ChunkAttempt | undefined
  }

/** Aggregated progress of a run, computed from its units (no counter is kept on the run row). */
export interface RunProgress {
  readonly run: RunRecord
  readonly units: Readonly<Record<UnitStatus, number>>
  /** For each step index: partition units currently at it (not terminal). */
  readonly atStep: ReadonlyArray<number>
  /** Range units of split steps by status (all zero when no step split). */
  readonly ranges: Readonly<Record<UnitStatus, number>>
  /** Quarantined items by status (all zero when nothing was set aside). */
  readonly quarantine: Quarantine.Counts
  readonly chunks: number
  readonly items: number
}

/** Partition units of a run in one (status, step index) cell. */
export interface ReportCell {
  readonly status: UnitStatus
  readonly stepIndex: number
  readonly units: number
}

/** A partition that ran long, for `status`. Running partitions count until now. */
export interface SlowPartition {
  readonly partitionKey: string
  readonly status: UnitStatus
  readonly stepIndex: number
  readonly durationMs: number
  readonly chunks: number
  readonly items: number
}

/** Failure records of a run grouped by error class. */
export interface FailureGroup {
  readonly errorTag: string
  readonly runbookId: string
  readonly severity: Runbook.Severity
  /** Failure records (retried attempts included). */
  readonly failures: number
  /** Partitions that met this class at least once. */
  readonly partitions: number
  /** Partitions failed now with this class as their last error. */
  readonly failedPartitions: number
  readonly lastMessage: string
  readonly lastAt: number
}

/** The operator's view of one run (`status`), aggregated in the store: no counter is kept on the run. */
export interface RunReport {
  readonly progress: RunProgress
  /** Partition units by status and step index. */
  readonly cells: ReadonlyArray<ReportCell>
  /** Chunks committed per step name (rows of the ledger). */
  readonly chunksByStep: Readonly<Record<string, number>>
  /** Chunks committed in the last `windowMs`: the current throughput. */
  readonly recentChunks: number
  readonly windowMs: number
  /** The store's clock when the report was made (epoch ms). */
  readonly now: number
  /** The longest-running partitions, longest first. */
  readonly slowest: ReadonlyArray<SlowPartition>
  readonly failureGroups: ReadonlyArray<FailureGroup>
}

/** Work waiting in the store across active runs: the autoscaling signal that the feeder does not cap (D16). */
export interface Backlog {
  /** Units that could run now (pending and due) in running or finalizing runs. */
  readonly ready: number
  /** Pending units waiting for their retry time. */
  readonly delayed: number
  /** Units held under a live lease. */
  readonly running: number
  /** Units whose lease expired without a release (a worker died or stalled); they are re-sent. */
  readonly expiredLeases: number
}

/** Who did an operator action, and why. Recorded in the audit log. */
export interface Actor {
  readonly actor: string
  readonly reason: string
}

/** An audit log row. */
export interface AuditEntry extends Actor {
  readonly at: number
  readonly action: "cancel" | "retry" | "skip" | "quarantine-retry"
  readonly runId: string
  readonly details: unknown
}

/** Which units an operator action targets. */
export interface Selection {
  /** Partition keys; when absent, every unit that the action applies to. */
  readonly partitions?: ReadonlyArray<string> | undefined
  /** `retry` only: restart from this step index (resets the cursor and bumps the generation). */
  readonly fromStep?: number | undefined
  /** Compute and return the plan without changing anything. */
  readonly dryRun: boolean
}

/** One unit an operator action changes (or would change, in a dry run). */
export interface PlannedUnit {
  readonly unitId: string
  readonly partitionKey: string
  readonly status: UnitStatus
  readonly fromStepIndex: number
  /** The generation the unit's idempotency keys will use; differs from today's on `--from-step`. */
  readonly generation: number
  readonly chunkSeq: number
}

/** What an operator action does to a unit: the same rule for every driver. */
export const plannedUnit = (unit: UnitRecord, selection: Selection): PlannedUnit => ({
  unitId: unit.unitId,
  partitionKey: unit.partitionKey,
  status: unit.status,
  fromStepIndex: selection.fromStep ?? unit.stepIndex,
  generation: selection.fromStep === undefined ? unit.generation : unit.generation + 1,
  chunkSeq: selection.fromStep === undefined ? unit.chunkSeq : 0
})

/**
 * Transactions on one connection kept between them (see `StateStoreShape.session`). Use it from one
 * fiber at a time, one transaction after another; a transaction begun while another of the session's is
 * open, or inside one, runs as `StateStoreShape.transaction` would.
 */
export interface StoreSession {
  /** `StateStoreShape.transaction`, on the session's connection (taken on first use, kept after). */
  readonly transaction: StateStoreShape["transaction"]
  /** Gives the kept connection back now (while a transaction is open, when it ends); the next takes one again. */
  readonly idle: Effect.Effect<void>
}

/** The state store. See the module doc for its contract. */
export interface StateStoreShape {
  /** `"memory"`, `"postgres"`, ...: shown in messages and used for start-up checks. */
  readonly kind: string
  /** SQL stores: the database the store writes to, for the worker's start-up checks (D4, D6). */
  readonly database?: {
    /** `database@host:port`, as `databaseIdentity` computes it. */
    readonly identity: Effect.Effect<string, Errors.StoreUnavailable>
    /** `idle_in_transaction_session_timeout` in ms (0 = off). */
    readonly idleInTransactionTimeoutMs: Effect.Effect<number, Errors.StoreUnavailable>
  } | undefined
  /**
   * Runs `effect` in one store transaction: for a `chunk`-mode step, the user's writes and the final
   * `commitChunk` commit together or not at all. When the connection fails at or after COMMIT the
   * outcome is unknown (`CommitOutcomeUnknown`): the caller must re-read the unit before going on (D3).
   */
  readonly transaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | Errors.StoreUnavailable | Errors.CommitOutcomeUnknown, R>
  /**
   * Inside `transaction`: runs `effect` in a savepoint and always undoes its writes, however it ends
   * (D17); returns how it ended. One probe is live at a time, so a chunk never holds more than one
   * subtransaction for it.
   */
  readonly probe: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<Exit.Exit<A, E>, Errors.StoreUnavailable, R>
  /**
   * Optional: a session whose transactions share one connection, kept from the first until `idle` or
   * the end of the session's scope. A worker runs a unit's consecutive `chunk`-mode chunks through one,
   * so they skip a pool checkout and return each (the store's cost per chunk beside the chunk's own
   * statements). It holds the connection between chunks too, so it goes `idle` before work that takes
   * other connections (a `none`-mode step). A store without sessions runs every transaction alone.
   */
  readonly session?: Effect.Effect<StoreSession, never, Scope.Scope> | undefined

  /**
   * Inserts the run, or returns the existing one with `created: false`. Refuses to insert it
   * (`RunAlreadyActive`, nothing written) while another run of the job with the same `baseKey` has not
   * ended; atomically, so of two runs started at once at most one is created.
   */
  readonly createRun: (
    run: NewRun
  ) => Effect.Effect<
    { readonly run: RunRecord; readonly created: boolean },
    Errors.StoreUnavailable | Errors.RunAlreadyActive
  >
  /** Inserts partitions; keys that exist are left alone (so enumeration can be re-run). */
  readonly insertUnits: (runId: string, units: ReadonlyArray<NewUnit>) => Effect.Effect<void, Errors.StoreUnavailable>
  /** `enumerating → running`: freezes the partition count and the failure budget. */
  readonly openRun: (
    runId: string,
    budget: (partitionCount: number) => number
  ) => Effect.Effect<RunRecord, Errors.StoreUnavailable | Errors.NotFound>

  readonly getRun: (runId: string) => Effect.Effect<Option.Option<RunRecord>, Errors.StoreUnavailable>
  readonly listRuns: (
    options: { readonly job?: string | undefined; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<RunRecord>, Errors.StoreUnavailable>
  readonly progress: (runId: string) => Effect.Effect<RunProgress, Errors.StoreUnavailable | Errors.NotFound>
  readonly listUnits: (
    runId: string,
    options: { readonly status?: ReadonlyArray<UnitStatus> | undefined; readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<UnitRecord>, Errors.StoreUnavailable>
  readonly listFailures: (
    runId: string,
    options: { readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<FailureRecord>, Errors.StoreUnavailable>
  /** The operator's view of a run: cells, chunks per step, recent throughput, slowest partitions, failure classes. */
  readonly report: (
    runId: string,
    options: { readonly slowest: number; readonly windowMs: number }
  ) => Effect.Effect<RunReport, Errors.StoreUnavailable | Errors.NotFound>
  /** Work waiting across active runs (sampled by workers for metrics). */
  readonly backlog: Effect.Effect<Backlog, Errors.StoreUnavailable>
  /** The idempotency keys committed for a unit, oldest first. */
  readonly ledger: (runId: string, unitId: string) => Effect.Effect<ReadonlyArray<string>, Errors.StoreUnavailable>
  readonly auditLog: (runId: string) => Effect.Effect<ReadonlyArray<AuditEntry>, Errors.StoreUnavailable>

  /**
   * Marks units enqueued and returns their messages, heaviest first, keeping at most `maxOutstanding`
   * units enqueued or leased; re-sends units without a live lease whose message is older than
   * `redeliverAfterMs`. Finalize units go first.
   */
  readonly feed: (options: {
    readonly maxOutstanding: number
    readonly redeliverAfterMs: number
  }) => Effect.Effect<ReadonlyArray<WorkMessage>, Errors.StoreUnavailable>

  /** Applies the receive rules (D2) and claims the unit with a new fencing token. */
  readonly claim: (request: ClaimRequest) => Effect.Effect<ClaimResult, Errors.StoreUnavailable>
  /**
   * The compare-and-set checkpoint (D3), with the chunk's quarantine changes; returns the run's status
   * so a failing run is seen. A commit with `unitDone` that ends the run's last open unit also moves the
   * run to `finalizing` with its finalize unit, as `tryFinalize` would, and returns `"finalizing"`.
   * `TransactionAborted`: the chunk's transaction had already failed (a step caught an SQL error in it,
   * SQLSTATE 25P02), so the store could not commit; the step's bug, not the store's (D12).
   * `CommitOutcomeUnknown`: only with `last`, when the store ended the transaction with the call and
   * its COMMIT failed or went unanswered, as a transaction's own may.
   */
  readonly commitChunk: (
    commit: ChunkCommit
  ) => Effect.Effect<
    { readonly runStatus: RunStatus },
    | Errors.LeaseLost
    | Errors.CheckpointMoved
    | Errors.SkipBudgetExceeded
    | Errors.TransactionAborted
    | Errors.RunStopped
    | Errors.StoreUnavailable
    | Errors.CommitOutcomeUnknown
  >
  /** Renews every lease the worker holds in one call; returns the unit ids still held. */
  readonly renewLeases: (
    workerId: string,
    leases: ReadonlyArray<Lease>,
    leaseMs: number
  ) => Effect.Effect<ReadonlyArray<string>, Errors.StoreUnavailable>
  /**
   * Gives a unit back on shutdown: it becomes pending again and its message (released by the caller)
   * brings it to another worker. `abandonedChunk` counts the chunk's attempt as spent (cut short, or
   * failed and waiting for a retry in-process), so the next execution is one further. `at` is that
   * attempt as the worker counted it: the unit counts on from the greater of it and its own count, and
   * keeps its count when it is no longer at that chunk (the chunk committed as the worker stopped).
   */
  readonly release: (
    lease: Lease,
    options: { readonly abandonedChunk: boolean; readonly at?: ChunkAttempt | undefined }
  ) => Effect.Effect<void, Errors.StoreUnavailable>
  /** Records a failure. Runs outside any chunk transaction, so it survives the chunk's rollback. */
  readonly recordFailure: (failure: FailureRecord) => Effect.Effect<void, Errors.StoreUnavailable>
  /** Fails a unit or schedules its retry; returns the run's status (`failing` once over the budget). */
  readonly failUnit: (
    lease: Lease,
    disposition: FailDisposition
  ) => Effect.Effect<{ readonly runStatus: RunStatus }, Errors.LeaseLost | Errors.StoreUnavailable>
  /**
   * Splits a partition unit at the start of a step into range units, in one compare-and-set: the
   * partition becomes `waiting` (its lease and job slot freed) and the ranges are inserted pending, for
   * the feeder to send. Fails with `LeaseLost` when the lease or the position no longer match.
   */
  readonly splitUnit: (split: Split) => Effect.Effect<void, Errors.LeaseLost | Errors.StoreUnavailable>
  /**
   * The split barrier (D7's pattern on the partition): once every range of the waiting partition is
   * terminal, moves it on by one compare-and-set. Called by each range's finisher after its commit and
   * by the sweeper, so of two ranges finishing together the later one always sees both.
   */
  readonly joinRanges: (runId: string, parentUnitId: string) => Effect.Effect<JoinOutcome, Errors.StoreUnavailable>
  /** Cancels a unit a worker holds because its run is failing or cancelled. */
  readonly cancelUnit: (lease: Lease) => Effect.Effect<void, Errors.StoreUnavailable>

  /**
   * Moves the run to `finalizing` and inserts its finalize unit when no partition is left to run.
   * Safe to call from every finisher and the sweeper at once; returns whether this call did it.
   */
  readonly tryFinalize: (runId: string) => Effect.Effect<boolean, Errors.StoreUnavailable>
  /** The finalize unit's commit: the run reaches its terminal status, exactly once per round. */
  readonly finishRun: (
    lease: Lease,
    outcome: "succeeded" | "failed",
    idempotencyKey: string
  ) => Effect.Effect<void, Errors.LeaseLost | Errors.StoreUnavailable>
  /**
   * Repairs what a crash left between a commit and the statement after it: joins waiting partitions
   * whose ranges are all done, then runs `tryFinalize` for complete runs; returns the finalized run ids.
   */
  readonly sweep: () => Effect.Effect<ReadonlyArray<string>, Errors.StoreUnavailable>

  /** Operator: cancel a run and every unit not yet terminal (fencing each). */
  readonly cancelRun: (
    runId: string,
    actor: Actor
  ) => Effect.Effect<RunRecord, Errors.StoreUnavailable | Errors.NotFound>
  /**
   * Operator: re-open failed (or, with `partitions`, any) units; re-opens the run when it had ended,
   * unless another run of its params is active (`RunAlreadyActive`, in a dry run too; nothing changes).
   */
  readonly retry: (
    runId: string,
    selection: Selection,
    actor: Actor
  ) => Effect.Effect<ReadonlyArray<PlannedUnit>, Errors.StoreUnavailable | Errors.NotFound | Errors.RunAlreadyActive>
  /** Quarantined items of a run, by step, partition and item id. */
  readonly listQuarantine: (
    runId: string,
    options: Quarantine.Filter & { readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<Quarantine.Entry>, Errors.StoreUnavailable>
  /**
   * Operator: marks the selected `quarantined` items `retry` and makes (or re-opens) one `items` unit per
   * partition and step to write them again; re-opens the run when it had ended, like `retry` (and refused
   * like it while another run of its params is active).
   */
  readonly retryQuarantine: (
    runId: string,
    options: Quarantine.Filter & { readonly dryRun: boolean },
    actor: Actor
  ) => Effect.Effect<
    ReadonlyArray<QuarantineRetry>,
    Errors.StoreUnavailable | Errors.NotFound | Errors.RunAlreadyActive
  >
  /**
   * Operator: mark units skipped (fencing each); the run can then complete without them. A skip in a
   * failed run re-opens it to finalize again, refused with `RunAlreadyActive` (its dry run too) while
   * another run of its params is active.
   */
  readonly skip: (
    runId: string,
    selection: Selection,
    actor: Actor
  ) => Effect.Effect<
    ReadonlyArray<PlannedUnit>,
    Errors.StoreUnavailable | Errors.NotFound | Errors.RunAlreadyActive
  >
}

/**
 * A session of `store`: its own (`StateStoreShape.session`) where it has one; otherwise one whose
 * transactions each run alone (`store.transaction`) and whose `idle` does nothing. What a worker runs a
 * unit's chunks through, so it needs no case for a store without sessions.
 */
export const sessionOf = (store: StateStoreShape): Effect.Effect<StoreSession, never, Scope.Scope> =>
  store.session ?? Effect.succeed({ transaction: store.transaction, idle: Effect.void })

/** Which database a SqlClient reaches: `database@address:port`, asked of the server itself. */
export const databaseIdentity = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql.withoutTransforms()<{ readonly id: string }>`
      select current_database() || '@' || coalesce(host(inet_server_addr()), 'local') || ':' ||
        coalesce(inet_server_port()::text, '') as id`,
    (rows) => rows[0]?.id ?? "unknown"
  )

/** The state store service. */
export class StateStore extends Context.Tag("@chunkwise/core/StateStore")<StateStore, StateStoreShape>() {}

/**
 * The in-memory store, with the `MemoryDatabase` whose writes join its chunk transactions (D13).
 * Time comes from Effect's `Clock`, so `TestClock` drives leases and delays in tests.
 */
export const layerMemory: Layer.Layer<StateStore | MemoryDatabase> = Layer.effectContext(
  Effect.map(
    MemoryStore.make,
    ({ database, store }) => Context.make(StateStore, store).pipe(Context.add(MemoryDatabase, database))
  )
)
