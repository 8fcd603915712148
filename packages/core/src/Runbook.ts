/**
 * Runbooks: the operator's recovery procedure for one error class. A job registers each error class it
 * may raise with `Runbook.make`; chunkwise's own failures have built-in runbooks. The runbook travels
 * with every failure: in the failure record, in the structured alert log line, in `status` and in the
 * Markdown that `Runbook.render` produces, so the runbook an alert links to is always current.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import * as Errors from "./Errors.js"
import * as RetryPolicy from "./RetryPolicy.js"

/** How urgent a failure class is: `page` wakes someone, `ticket` waits for office hours, `info` is logged. */
export const Severity = Schema.Literal("page", "ticket", "info")

/** @since 0.1.0 */
export type Severity = typeof Severity.Type

/** A runbook, as stored and rendered. */
export const Runbook = Schema.Struct({
  /** Stable id, e.g. `billing-company-deactivated`; alerts and docs link to it. */
  id: Schema.String,
  /** The error tag this runbook handles. */
  tag: Schema.String,
  title: Schema.String,
  severity: Severity,
  /** What happened, in the operator's words. */
  meaning: Schema.String,
  /** What to do, in order. */
  steps: Schema.Array(Schema.String),
  retry: RetryPolicy.RetryPolicy
})

/** @since 0.1.0 */
export interface Runbook extends Schema.Schema.Type<typeof Runbook> {}

/** What `Runbook.make` needs of an error class: a `Schema.TaggedError` class has it. */
export interface TaggedClass<Tag extends string = string> {
  readonly _tag: Tag
}

/** An error class registered on a job with its runbook. */
export interface Registration<Tag extends string = string> {
  readonly errorClass: TaggedClass<Tag>
  readonly runbook: Runbook
}

/** The runbook fields a job author writes; `tag` comes from the class. */
export interface Spec {
  readonly id: string
  readonly title: string
  readonly severity: Severity
  readonly meaning: string
  readonly steps: ReadonlyArray<string>
  /** `"never"` (the default) or a bounded policy from `RetryPolicy`. */
  readonly retry?: "never" | RetryPolicy.RetryPolicy | undefined
}

const ID_PATTERN = /^[a-z0-9][a-z0-9-]{1,80}$/

/**
 * Registers an error class with its runbook.
 *
 * @example
 * ```ts
 * class CompanyDeactivated extends Schema.TaggedError<CompanyDeactivated>()("CompanyDeactivated", {
 *   companyId: Schema.String
 * }) {}
 *
 * Runbook.make(CompanyDeactivated, {
 *   id: "billing-company-deactivated",
 *   title: "A company was deactivated during its billing",
 *   severity: "ticket",
 *   meaning: "Part of the month is billed for a company that is no longer active.",
 *   steps: ["Ask billing ops whether the company is billed this month.", "Retry or skip the partition."]
 * })
 * ```
 */
export const make = <Tag extends string>(errorClass: TaggedClass<Tag>, spec: Spec): Registration<Tag> => {
  if (!ID_PATTERN.test(spec.id)) {
    throw new TypeError(
      `Runbook.make(${errorClass._tag}): id "${spec.id}" must be lower-case letters, digits and dashes ` +
        `(2 to 81 characters), e.g. "billing-company-deactivated"`
    )
  }
  if (spec.steps.length === 0) {
    throw new TypeError(`Runbook.make(${errorClass._tag}): give the operator at least one step`)
  }
  return {
    errorClass,
    runbook: {
      id: spec.id,
      tag: errorClass._tag,
      title: spec.title,
      severity: spec.severity,
      meaning: spec.meaning,
      steps: [...spec.steps],
      retry: spec.retry === undefined || spec.retry === "never" ? RetryPolicy.never : spec.retry
    }
  }
}

const builtin = (
  errorClass: TaggedClass,
  spec: Omit<Spec, "id"> & { readonly id?: string }
): Registration => make(errorClass, { ...spec, id: spec.id ?? `chunkwise-${kebab(errorClass._tag)}` })

const kebab = (tag: string) => tag.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase()

/** The runbooks of chunkwise's own error classes. A job's own registrations cannot reuse their tags. */
export const builtins: ReadonlyArray<Registration> = [
  builtin(Errors.Unclassified, {
    title: "A step failed with an unregistered error or a defect",
    severity: "page",
    meaning: "The step raised an error that its job does not register, or threw an exception. chunkwise " +
      "cannot know whether retrying is safe, so the partition is marked failed.",
    steps: [
      "Read the failure's message and cause: `chunkwise failures <run>`.",
      "If it is a bug, fix and deploy it, then `chunkwise retry <run> --partition <key>`.",
      "If it is an expected condition, register an error class with its own runbook for it."
    ]
  }),
  builtin(Errors.LeaseLost, {
    title: "A worker lost its lease on a unit",
    severity: "info",
    meaning: "The worker could not renew its lease in time (paused, overloaded or cut off from the store), " +
      "or an operator action fenced the unit. Its uncommitted chunk rolled back; another worker continues.",
    steps: [
      "Nothing to do for a single occurrence.",
      "If it repeats, look for long GC pauses, CPU starvation or store latency, or raise the lease duration."
    ]
  }),
  builtin(Errors.CheckpointMoved, {
    title: "Another worker committed progress on the unit",
    severity: "info",
    meaning: "This worker's chunk was rolled back because the checkpoint had moved; no work was doubled.",
    steps: ["Nothing to do; if it repeats, check that leases are not much shorter than a chunk's duration."]
  }),
  builtin(Errors.MalformedMessage, {
    title: "A queue message could not be decoded",
    severity: "ticket",
    meaning: "A message on the queue is not a chunkwise message (or was written by a newer version). It was " +
      "moved to the dead-letter queue with the reason; no unit was touched.",
    steps: [
      "Inspect it: `chunkwise redrive --list`.",
      "If another producer writes to this queue, give chunkwise its own queue.",
      "Drop it; the state store re-sends any unit whose message was lost."
    ]
  }),
  builtin(Errors.UnknownJob, {
    title: "A message or command named an unknown job",
    severity: "ticket",
    meaning: "No job of that name is registered in this process.",
    steps: [
      "Check that every worker deployment registers the job in `Worker.layer({ jobs })`.",
      "Redrive the dead-lettered message once a worker that knows the job runs."
    ]
  }),
  builtin(Errors.InvalidParams, {
    title: "Run params do not match the job's params schema",
    severity: "ticket",
    meaning: "The params given to start a run, or stored with it, do not decode with the job's schema.",
    steps: ["Fix the params and start the run again; nothing was written for the invalid params."]
  }),
  builtin(Errors.RunKeyConflict, {
    title: "A run key was reused with different params",
    severity: "ticket",
    meaning: "Two starts produced the same run key from different params, so the second was refused.",
    steps: ["Make the job's runKey cover every param that changes the work, or pass a rerun label."]
  }),
  builtin(Errors.RunAlreadyActive, {
    title: "A new run of the same params was refused while another has not ended",
    severity: "ticket",
    meaning: "A start with a rerun label (or of params whose run had ended) would have run the same work " +
      "beside a run that is still going, each under its own idempotency keys; nothing was written.",
    steps: [
      "Look at the active run named in the error: `status <run>`.",
      "Let it end, or cancel it (`cancel <run> --reason ...`), then start the re-run again."
    ]
  }),
  builtin(Errors.DefinitionChanged, {
    title: "A run was started by an incompatible job definition",
    severity: "ticket",
    meaning: "The run's stored definition (its steps, their order, modes or cursor schemas) differs from " +
      "this worker's. During a rolling deploy this resolves itself; after the grace period the unit fails.",
    steps: [
      "If a deploy is rolling out, wait for it to finish.",
      "Otherwise finish the run with the old code, or cancel it and start a new run with a rerun label."
    ]
  }),
  builtin(Errors.CursorUndecodable, {
    title: "A stored cursor no longer decodes",
    severity: "ticket",
    meaning: "The step's cursor schema changed in a way that the cursor stored at the checkpoint cannot " +
      "decode into.",
    steps: [
      "Deploy a cursor schema that still decodes the stored cursor, then retry the partition;",
      "or `chunkwise retry <run> --partition <key> --from-step <step>` to restart the step."
    ]
  }),
  builtin(Errors.InvalidSplit, {
    title: "A split step returned ranges that miss or repeat keys",
    severity: "ticket",
    meaning: "The step's `split.ranges` returned key ranges with a gap, an overlap, an empty range, or keys " +
      "that do not compare; running them would skip rows or process them twice, so the partition failed " +
      "before any range ran.",
    steps: [
      "Read the problem in `chunkwise failures <run>`: it names the ranges at fault.",
      "Fix `split.ranges` so the ranges ascend and touch: build them with `Step.rangesAt(points)`.",
      "Deploy, then `chunkwise retry <run> --partition <key>`."
    ]
  }),
  builtin(Errors.SkipBudgetExceeded, {
    title: "A step set aside more bad items than its skip budget allows",
    severity: "ticket",
    meaning: "The step's write failed for more items of one partition (or of the whole run) than the skip " +
      "budget allows. The chunk that went over rolled back, so nothing of it committed, and the partition " +
      "failed; its earlier chunks and their quarantined items stay committed.",
    steps: [
      "See what was set aside: `chunkwise quarantine list <run> --partition <key>`, and this chunk's items in " +
      "`chunkwise failures <run>`.",
      "If the data is bad, fix it at the source; if the code is, fix and deploy it. If the budget is too " +
      "tight for this data, raise `skip.budget` (or the job's `skipBudget`) and deploy.",
      "Then `chunkwise retry <run> --partition <key>`, and `chunkwise quarantine retry <run>` for the items " +
      "already set aside."
    ]
  }),
  builtin(Errors.ItemNotRerun, {
    title: "A quarantined item could not be written again",
    severity: "ticket",
    meaning: "An operator asked to re-run quarantined items, but this item could not be handed to the step's " +
      "write: the deployed step no longer declares `skip` (its item schema), or the stored item does not " +
      "decode with today's item schema. The item stays quarantined with this error; nothing was written.",
    steps: [
      "Read the reason: `chunkwise quarantine list <run> --step <step>`.",
      "Deploy code whose step declares `skip` with an item schema that decodes the stored item (keep the " +
      "old fields optional, or add a transformation from the old form).",
      "Then `chunkwise quarantine retry <run> --step <step>` again."
    ]
  }),
  builtin(Errors.CrashLoop, {
    title: "A unit keeps killing its worker",
    severity: "page",
    meaning: "The unit's executions died without a clean release (out of memory, a crash, a kill) several " +
      "times in a row at the same cursor.",
    steps: [
      "Check the workers' memory and exit reasons around the failure time.",
      "Lower the step's chunk size, or fix the data at the recorded cursor.",
      "`chunkwise retry <run> --partition <key>`."
    ]
  }),
  builtin(Errors.StepTimeout, {
    title: "A chunk ran past its timeout",
    severity: "ticket",
    meaning: "The chunk was interrupted; in `chunk` mode its writes rolled back.",
    steps: ["Lower the chunk size or raise the step's timeout, then retry the partition."],
    retry: RetryPolicy.exponential({ base: "5 seconds", times: 2 })
  }),
  builtin(Errors.StoreUnavailable, {
    title: "The state store is unavailable",
    severity: "page",
    meaning: "chunkwise could not read or write its state. Work pauses and resumes from the last checkpoint.",
    steps: [
      "Check the database's health and connection limits.",
      "Nothing is lost: units resume from their checkpoints once the store answers."
    ],
    retry: RetryPolicy.infrastructure
  }),
  builtin(Errors.QueueUnavailable, {
    title: "The queue is unavailable",
    severity: "page",
    meaning: "chunkwise could not receive, send or acknowledge messages. The store re-sends what was lost.",
    steps: ["Check the broker's health and credentials.", "Nothing is lost: the feeder re-sends pending units."],
    retry: RetryPolicy.infrastructure
  }),
  builtin(Errors.DatabaseTransient, {
    title: "A database error that usually passes",
    severity: "info",
    meaning: "The connection was lost, the server was shutting down or overloaded, or the transaction hit a " +
      "serialization failure, a deadlock or a lock timeout. The chunk rolled back and is retried with backoff.",
    steps: [
      "Nothing to do for a few occurrences.",
      "If it persists, check the database's health, connection limits and lock waits (pg_stat_activity)."
    ],
    retry: RetryPolicy.infrastructure
  }),
  builtin(Errors.DatabaseRejected, {
    title: "The database rejected a chunk's data",
    severity: "ticket",
    meaning: "A constraint or data exception (SQLSTATE class 22 or 23): retrying the same data would fail the " +
      "same way, so the partition failed. The chunk's writes rolled back.",
    steps: [
      "Read the failure's message: it names the constraint or the value.",
      "Fix the data or the step, then `chunkwise retry <run> --partition <key>`."
    ]
  }),
  builtin(Errors.TransactionAborted, {
    title: "A statement ran in an already failed transaction",
    severity: "ticket",
    meaning: "An earlier statement in the chunk's transaction failed and its error was caught, so Postgres " +
      "refused the rest (SQLSTATE 25P02). This is a bug in the step: a caught SQL error inside a chunk " +
      "transaction leaves it unusable.",
    steps: [
      "Find the caught SQL error in the step; let it fail the chunk, or wrap the statement that may fail in its own " +
      "nested `sql.withTransaction` (a savepoint) so a failure rolls back only that statement.",
      "Deploy the fix, then retry the partition."
    ]
  }),
  builtin(Errors.CommitOutcomeUnknown, {
    title: "A commit's outcome is unknown",
    severity: "info",
    meaning: "The connection failed at or after COMMIT. The worker re-reads the checkpoint before doing " +
      "anything, so the chunk is neither doubled nor skipped.",
    steps: ["Nothing to do; if frequent, check the network between workers and the database."],
    retry: RetryPolicy.infrastructure
  })
]

/** The runbooks of one job (its registrations, then the built-ins), as `render` lists them. */
export interface Book {
  readonly job: string
  readonly runbooks: ReadonlyArray<Runbook>
}

/** Renders one runbook as Markdown. */
export const renderOne = (runbook: Runbook): string =>
  [
    `### ${runbook.title}`,
    "",
    `- id: \`${runbook.id}\``,
    `- error: \`${runbook.tag}\``,
    `- severity: **${runbook.severity}**`,
    `- retry: ${RetryPolicy.describe(runbook.retry)}`,
    "",
    runbook.meaning,
    "",
    ...runbook.steps.map((step, i) => `${i + 1}. ${step}`),
    ""
  ].join("\n")

/** Renders the Markdown for every error class of the given books (one section per job). */
export const render = (books: ReadonlyArray<Book>): string =>
  books
    .map((book) => [`## ${book.job}`, "", ...book.runbooks.map(renderOne)].join("\n"))
    .join("\n")
