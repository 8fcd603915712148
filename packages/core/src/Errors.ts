/**
 * The errors chunkwise itself raises. Each is a `Schema.TaggedError`, so it can be recorded in the
 * store, sent across processes and matched by tag; each has a built-in runbook (see `Runbook.builtins`).
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/** A step failed with something that is neither a registered error class nor a chunkwise error. */
export class Unclassified extends Schema.TaggedError<Unclassified>()("Unclassified", {
  message: Schema.String,
  /** The tag of the original error when it had one, e.g. an error class the job did not register. */
  originalTag: Schema.optional(Schema.String),
  /** True when the failure was a defect: a thrown exception or `Effect.die`. */
  defect: Schema.Boolean
}) {}

/** This worker no longer holds the unit's lease: it expired, or an operator action fenced it. */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  runId: Schema.String,
  unitId: Schema.String,
  reason: Schema.String
}) {}

/** The checkpoint is not where this worker expected it: another worker committed progress. */
export class CheckpointMoved extends Schema.TaggedError<CheckpointMoved>()("CheckpointMoved", {
  runId: Schema.String,
  unitId: Schema.String
}) {}

/**
 * A commit with a fused step refused because the run is no longer `running` (D8: a stopped run starts
 * no new step). Nothing was recorded; the chunk's transaction rolls back and the unit stops where it was.
 */
export class RunStopped extends Schema.TaggedError<RunStopped>()("RunStopped", {
  runId: Schema.String,
  status: Schema.String
}) {}

/** A queue message could not be decoded; it was dead-lettered with this reason. */
export class MalformedMessage extends Schema.TaggedError<MalformedMessage>()("MalformedMessage", {
  reason: Schema.String,
  /** The first 200 characters of the body, for the operator. */
  body: Schema.String
}) {}

/** A message or a command named a job that this process does not define. */
export class UnknownJob extends Schema.TaggedError<UnknownJob>()("UnknownJob", {
  job: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message() {
    return `unknown job "${this.job}"; this process defines: ${this.known.join(", ") || "(none)"}. ` +
      `Register the job in Worker.layer({ jobs }) / Runner, or check the job name.`
  }
}

/** Run params did not decode with the job's params schema. */
export class InvalidParams extends Schema.TaggedError<InvalidParams>()("InvalidParams", {
  job: Schema.String,
  details: Schema.String
}) {
  override get message() {
    return `invalid params for job "${this.job}": ${this.details}`
  }
}

/** The same run key was started with different params. */
export class RunKeyConflict extends Schema.TaggedError<RunKeyConflict>()("RunKeyConflict", {
  job: Schema.String,
  runKey: Schema.String,
  runId: Schema.String
}) {
  override get message() {
    return `run key "${this.runKey}" of job "${this.job}" already belongs to run ${this.runId} with different ` +
      `params. Give the job a runKey that covers every param, or start with a rerun label.`
  }
}

/**
 * A new run of the same params was refused because another run of them has not ended: two runs of the
 * same work at once would each apply it under their own idempotency keys.
 */
export class RunAlreadyActive extends Schema.TaggedError<RunAlreadyActive>()("RunAlreadyActive", {
  job: Schema.String,
  /** The run key of the run that was refused. */
  runKey: Schema.String,
  /** The run that has not ended. */
  activeRunId: Schema.String,
  activeStatus: Schema.String
}) {
  override get message() {
    return `run key "${this.runKey}" of job "${this.job}" was not started: run ${this.activeRunId} of the same ` +
      `params is still ${this.activeStatus}. Wait for it to end (or cancel it), then start again.`
  }
}

/** A run was started by a job definition that differs incompatibly from this process's. */
export class DefinitionChanged extends Schema.TaggedError<DefinitionChanged>()("DefinitionChanged", {
  job: Schema.String,
  runId: Schema.String,
  changes: Schema.Array(Schema.String)
}) {
  override get message() {
    return `run ${this.runId} of job "${this.job}" was started with another definition: ${this.changes.join("; ")}`
  }
}

/** The stored cursor no longer decodes with the step's cursor schema. */
export class CursorUndecodable extends Schema.TaggedError<CursorUndecodable>()("CursorUndecodable", {
  step: Schema.String,
  cursor: Schema.String,
  details: Schema.String
}) {
  override get message() {
    return `the stored cursor of step "${this.step}" does not decode: ${this.details} (cursor ${this.cursor})`
  }
}

/** A split step's `ranges` returned key ranges that do not cover every key exactly once. */
export class InvalidSplit extends Schema.TaggedError<InvalidSplit>()("InvalidSplit", {
  step: Schema.String,
  partition: Schema.String,
  problem: Schema.String
}) {
  override get message() {
    return `step "${this.step}" split partition "${this.partition}" wrongly: ${this.problem}. Return ranges ` +
      `that cover every key once, e.g. Step.rangesAt([1000, 2000]) for [null, 1000), [1000, 2000), [2000, null)`
  }
}

/** A chunk set aside more items than a skip budget allows: the chunk rolled back and the partition failed. */
export class SkipBudgetExceeded extends Schema.TaggedError<SkipBudgetExceeded>()("SkipBudgetExceeded", {
  step: Schema.String,
  partition: Schema.String,
  /** `partition`: the step's budget for one partition; `run`: the job's budget for the whole run. */
  scope: Schema.Literal("partition", "run"),
  /** Items set aside with this chunk's, in the scope. */
  skipped: Schema.Number,
  /** Items the budget allows now (a percentage turned into a count of the items handled so far). */
  allowed: Schema.Number,
  /** The budget as declared, e.g. `10` or `"0.5%"`. */
  budget: Schema.String,
  /** Ids of the items this chunk would have set aside (at most 10) and the first one's error. */
  items: Schema.Array(Schema.String),
  error: Schema.String
}) {
  override get message() {
    return `step "${this.step}" of partition "${this.partition}" would set aside ${this.skipped} items in the ` +
      `${this.scope}, over its skip budget of ${this.budget} (${this.allowed} now); this chunk's items: ` +
      `${this.items.join(", ")}; first error: ${this.error}`
  }
}

/** A quarantined item could not be written again: its step no longer sets items aside, or it no longer decodes. */
export class ItemNotRerun extends Schema.TaggedError<ItemNotRerun>()("ItemNotRerun", {
  step: Schema.String,
  item: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `quarantined item ${this.item} of step "${this.step}" was not written again: ${this.reason}`
  }
}

/** A unit's executions died (no clean release) too many times without progress. */
export class CrashLoop extends Schema.TaggedError<CrashLoop>()("CrashLoop", {
  crashes: Schema.Number,
  step: Schema.String,
  cursor: Schema.String
}) {
  override get message() {
    return `the unit died ${this.crashes} times at step "${this.step}", cursor ${this.cursor}, without progress`
  }
}

/** A step or a chunk ran longer than its timeout. */
export class StepTimeout extends Schema.TaggedError<StepTimeout>()("StepTimeout", {
  step: Schema.String,
  timeoutMs: Schema.Number
}) {
  override get message() {
    return `step "${this.step}" did not finish a chunk within ${this.timeoutMs} ms`
  }
}

/** The state store could not be reached or answered with an error. */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  operation: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

/** The queue could not be reached or answered with an error. */
export class QueueUnavailable extends Schema.TaggedError<QueueUnavailable>()("QueueUnavailable", {
  operation: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

/** A message was refused by the queue before sending: too large, or not valid. */
export class MessageRejected extends Schema.TaggedError<MessageRejected>()("MessageRejected", {
  reason: Schema.String
}) {}

/** The outcome of a commit is unknown: the connection failed at or after COMMIT. */
export class CommitOutcomeUnknown extends Schema.TaggedError<CommitOutcomeUnknown>()("CommitOutcomeUnknown", {
  message: Schema.String
}) {}

/** A run or unit that a command names does not exist in the store. */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  what: Schema.String,
  id: Schema.String
}) {
  override get message() {
    return `${this.what} "${this.id}" not found`
  }
}

/** A worker or runner was configured in a way that would break a guarantee; raised at start-up. */
export class ConfigurationError extends Schema.TaggedError<ConfigurationError>()("ConfigurationError", {
  message: Schema.String
}) {}

/** The job's partitioner failed while enumerating partitions; the run stays `enumerating`. */
export class EnumerationFailed extends Schema.TaggedError<EnumerationFailed>()("EnumerationFailed", {
  job: Schema.String,
  runId: Schema.String,
  details: Schema.String
}) {
  override get message() {
    return `enumerating the partitions of run ${this.runId} (job "${this.job}") failed: ${this.details}. ` +
      `Start the run again to retry the enumeration; partitions already stored are kept.`
  }
}

/** A database error that passes: lost connection, shutdown, overload, serialization failure, deadlock, lock timeout. */
export class DatabaseTransient extends Schema.TaggedError<DatabaseTransient>()("DatabaseTransient", {
  sqlState: Schema.String,
  message: Schema.String
}) {}

/** The database rejected the data: a constraint or a data exception (SQLSTATE 22*, 23*). */
export class DatabaseRejected extends Schema.TaggedError<DatabaseRejected>()("DatabaseRejected", {
  sqlState: Schema.String,
  message: Schema.String
}) {}

/** A statement ran in a transaction that had already failed (SQLSTATE 25P02). */
export class TransactionAborted extends Schema.TaggedError<TransactionAborted>()("TransactionAborted", {
  message: Schema.String
}) {}
