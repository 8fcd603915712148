/**
 * What the operator CLI shows, as plain data (the `--json` shapes) derived from the store, and the
 * text renderings of the same data. The shapes are public (re-exported by `Cli`) and documented in
 * docs/guides/operations.md: add fields, never rename or remove one.
 */
import type * as Job from "../../Job.js"
import type * as Quarantine from "../../Quarantine.js"
import * as ResourceLimiter from "../../ResourceLimiter.js"
import * as Runbook from "../../Runbook.js"
import type {
  AuditEntry,
  FailureRecord,
  PlannedUnit,
  RunRecord,
  RunReport,
  UnitRecord,
  UnitStatus
} from "../../StateStore.js"
import { isTerminalRun } from "../../StateStore.js"
import * as F from "./format.js"
import * as Q from "./quarantine.js"

/** A run in a listing. */
export interface RunSummaryJson {
  readonly runId: string
  readonly job: string
  readonly status: RunRecord["status"]
  readonly reason: string | null
  readonly partitions: number
  readonly createdAt: string
  readonly finishedAt: string | null
}

/** `status <run> --json`. */
export interface StatusJson {
  readonly run: RunSummaryJson & {
    readonly params: unknown
    readonly elapsedMs: number
    /** Failed partitions allowed before the run fails fast; null when the job sets no budget. */
    readonly failureBudget: number | null
  }
  /** Partitions by status; `waiting`: split into ranges that are still running. */
  readonly partitions: Readonly<Record<UnitStatus, number>> & { readonly total: number }
  /** The key ranges of split steps by status (`total` 0 when nothing split). */
  readonly ranges: Readonly<Record<UnitStatus, number>> & { readonly total: number }
  /** Items set aside by steps with `skip`, by status (all 0 when none). */
  readonly quarantine: Quarantine.Counts
  readonly steps: ReadonlyArray<{
    readonly name: string
    readonly index: number
    /** Partitions past this step. */
    readonly done: number
    /** Partitions at this step, pending, running or waiting for their ranges. */
    readonly active: number
    /** Partitions failed at this step. */
    readonly failed: number
    /** Chunks committed in this step (retries from a step count again). */
    readonly chunks: number
  }>
  readonly throughput: {
    readonly chunks: number
    readonly items: number
    /** Chunks per second over the last `windowMs` while the run is active; the average over the run once it ended. */
    readonly chunksPerSecond: number
    readonly windowMs: number
    /** Estimated time to the end from the partitions finished so far; null when unknown or ended. */
    readonly etaMs: number | null
  }
  readonly slowest: ReadonlyArray<{
    readonly partition: string
    readonly status: UnitStatus
    readonly step: string
    readonly durationMs: number
    readonly chunks: number
    readonly items: number
  }>
  readonly failures: ReadonlyArray<FailureClassJson>
  /** Partitions waiting for a resource permit now; null when this CLI has no `ResourceLimiter`. */
  readonly throttled: ReadonlyArray<ThrottledJson> | null
}

/** A partition waiting for a resource permit (`status <run> --json`). */
export interface ThrottledJson {
  readonly partition: string
  readonly step: string
  readonly resource: string
  /** `rate`: its token is due at `until`; `in-flight`: it waits for a slot. */
  readonly kind: "rate" | "in-flight"
  /** `throttled by <resource>`. */
  readonly status: string
  readonly waitingMs: number
  readonly until: string | null
  readonly worker: string
}

/** An audited change of a resource's limits (`limits history --json`). */
export interface LimitChangeJson {
  readonly at: string
  readonly actor: string
  readonly reason: string
  readonly resource: string
  readonly before: ResourceLimiter.Limit | null
  readonly after: ResourceLimiter.Limit
}

/** Failures of a run grouped by error class, with the runbook. */
export interface FailureClassJson {
  readonly errorTag: string
  readonly runbookId: string
  readonly runbookTitle: string
  readonly severity: Runbook.Severity
  /** Partitions failed now with this class. */
  readonly failedPartitions: number
  /** Partitions that met this class at least once (retried ones included). */
  readonly partitions: number
  /** Failure records, every attempt counted. */
  readonly occurrences: number
  readonly lastMessage: string
  readonly lastAt: string
}

/** One failed partition in `failures <run> --json`. */
export interface FailedPartitionJson {
  readonly partition: string
  readonly unitId: string
  readonly step: string
  readonly errorTag: string
  readonly message: string
  /** The encoded cursor (JSON text) where it failed; null at the step's start. */
  readonly cursor: string | null
  /** Attempts of the failing chunk. */
  readonly attempts: number
  readonly runbookId: string
  readonly runbookTitle: string
  readonly severity: Runbook.Severity
  readonly at: string
  readonly retryCommand: string
}

/** One unit that `retry`, `skip` or `cancel` changes (or would change, with `--dry-run`). */
export interface ActionUnitJson {
  readonly partition: string
  readonly unitId: string
  /** Its status before the action. */
  readonly status: UnitStatus
  /** retry: the step it resumes at (null for skip and cancel). */
  readonly fromStep: string | null
  readonly fromStepIndex: number | null
  /** retry: the first chunk (committed-chunk count of that step) that runs again. */
  readonly fromChunk: number | null
  /** retry: the generation its idempotency keys use. */
  readonly generation: number | null
  /** retry: true when its idempotency keys change (`--from-step`). */
  readonly keysChange: boolean
}

/** `retry`, `skip`, `cancel --json`. */
export interface ActionJson {
  readonly action: "retry" | "skip" | "cancel"
  readonly runId: string
  readonly dryRun: boolean
  readonly actor: string
  readonly reason: string | null
  readonly units: ReadonlyArray<ActionUnitJson>
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

/** A reason for a run that ended badly, even when the store kept none. */
export const reasonOf = (run: RunRecord, failed: number | undefined): string | null =>
  run.reason ??
    (run.status !== "failed" ? null : failed === undefined ? "partitions failed" : `${failed} partition(s) failed`)

export const runSummary = (run: RunRecord, failed?: number): RunSummaryJson => ({
  runId: run.runId,
  job: run.job,
  status: run.status,
  reason: reasonOf(run, failed),
  partitions: run.partitionCount,
  createdAt: new Date(run.createdAt).toISOString(),
  finishedAt: iso(run.finishedAt)
})

/** The runbook of an error class for a run's job, when this CLI knows the job (built-ins otherwise). */
export const runbookOf = (
  jobs: ReadonlyMap<string, Job.Any>,
  jobName: string,
  runbookId: string
): Runbook.Runbook | undefined => {
  const job = jobs.get(jobName)
  const all = job === undefined ? Runbook.builtins.map((b) => b.runbook) : [...job.runbooks.values()]
  return all.find((r) => r.id === runbookId)
}

const stepName = (run: RunRecord, index: number) => run.definition.steps[index]?.name ?? "(finished)"

export const status = (
  jobs: ReadonlyMap<string, Job.Any>,
  report: RunReport,
  waits?: { readonly now: number; readonly waits: ReadonlyArray<ResourceLimiter.Wait> } | undefined
): StatusJson => {
  const { progress } = report
  const run = progress.run
  const total = Object.values(progress.units).reduce((a, b) => a + b, 0)
  const ended = progress.units.succeeded + progress.units.failed + progress.units.skipped + progress.units.cancelled
  const end = run.finishedAt ?? report.now
  const elapsedMs = Math.max(0, Math.round(end - run.createdAt))
  // While running: the recent rate (over the window, or the run's age when younger); once ended: the average.
  const windowMs = isTerminalRun(run.status) ? elapsedMs : Math.min(report.windowMs, Math.max(1, elapsedMs))
  const windowChunks = isTerminalRun(run.status) ? progress.chunks : report.recentChunks
  const etaMs = isTerminalRun(run.status) || ended === 0 || ended >= total
    ? null
    : Math.round((elapsedMs / ended) * (total - ended))
  return {
    run: {
      ...runSummary(run, progress.units.failed),
      params: run.params,
      elapsedMs,
      failureBudget: run.failureBudget >= Number.MAX_SAFE_INTEGER ? null : run.failureBudget
    },
    partitions: { ...progress.units, total },
    ranges: { ...progress.ranges, total: Object.values(progress.ranges).reduce((n, c) => n + c, 0) },
    quarantine: progress.quarantine,
    steps: run.definition.steps.map((step, index) => {
      let done = 0
      let active = 0
      let failed = 0
      for (const cell of report.cells) {
        if (cell.stepIndex > index) done += cell.units
        else if (cell.stepIndex === index) {
          if (cell.status === "pending" || cell.status === "leased" || cell.status === "waiting") active += cell.units
          if (cell.status === "failed") failed += cell.units
        }
      }
      return { name: step.name, index, done, active, failed, chunks: report.chunksByStep[step.name] ?? 0 }
    }),
    throughput: {
      chunks: progress.chunks,
      items: progress.items,
      chunksPerSecond: windowMs > 0 ? Math.round((windowChunks / (windowMs / 1000)) * 10) / 10 : 0,
      windowMs,
      etaMs
    },
    slowest: report.slowest.map((p) => ({
      partition: p.partitionKey,
      status: p.status,
      step: stepName(run, p.stepIndex),
      durationMs: p.durationMs,
      chunks: p.chunks,
      items: p.items
    })),
    failures: report.failureGroups.map((g) => ({
      errorTag: g.errorTag,
      runbookId: g.runbookId,
      runbookTitle: runbookOf(jobs, run.job, g.runbookId)?.title ?? "(runbook unknown to this CLI)",
      severity: g.severity,
      failedPartitions: g.failedPartitions,
      partitions: g.partitions,
      occurrences: g.failures,
      lastMessage: g.lastMessage,
      lastAt: new Date(g.lastAt).toISOString()
    })),
    throttled: waits === undefined ? null : waits.waits.map((w) => ({
      partition: w.partitionKey,
      step: w.step,
      resource: w.resource,
      kind: w.kind,
      status: `throttled by ${w.resource}`,
      waitingMs: Math.max(0, Math.round(waits.now - w.since)),
      until: w.kind === "rate" ? new Date(w.until).toISOString() : null,
      worker: w.workerId
    }))
  }
}

/** Each failed partition with its last failure record. */
export const failedPartitions = (
  jobs: ReadonlyMap<string, Job.Any>,
  cli: string,
  run: RunRecord,
  failed: ReadonlyArray<UnitRecord>,
  records: ReadonlyArray<FailureRecord>
): ReadonlyArray<FailedPartitionJson> => {
  const last = new Map<string, FailureRecord>()
  for (const record of records) if (record.outcome === "failed") last.set(record.unitId, record)
  return failed.filter((u) => u.kind === "partition").map((unit) => {
    const record = last.get(unit.unitId)
    const runbookId = record?.runbookId ?? "chunkwise-unclassified"
    return {
      partition: unit.partitionKey,
      unitId: unit.unitId,
      step: record?.step ?? stepName(run, unit.stepIndex),
      errorTag: record?.errorTag ?? unit.lastErrorTag ?? "(unknown)",
      message: record?.message ?? "(no failure record kept)",
      cursor: record?.cursor ?? (unit.cursor === null ? null : JSON.stringify(unit.cursor)),
      attempts: record?.attempt ?? unit.attempt,
      runbookId,
      runbookTitle: runbookOf(jobs, run.job, runbookId)?.title ?? "(runbook unknown to this CLI)",
      severity: record?.severity ?? "page",
      at: iso(record?.at ?? unit.finishedAt) ?? "",
      retryCommand: `${cli} retry ${run.runId} --partition ${F.shellArg(unit.partitionKey)} --reason '...'`
    }
  })
}

export const plannedUnitJson = (run: RunRecord, unit: UnitRecord, planned: PlannedUnit): ActionUnitJson => ({
  partition: planned.partitionKey,
  unitId: planned.unitId,
  status: planned.status,
  fromStep: stepName(run, planned.fromStepIndex),
  fromStepIndex: planned.fromStepIndex,
  fromChunk: planned.chunkSeq,
  generation: planned.generation,
  keysChange: planned.generation !== unit.generation
})

export const bareUnitJson = (
  unit: { readonly partitionKey: string; readonly unitId: string; readonly status: UnitStatus }
): ActionUnitJson => ({
  partition: unit.partitionKey,
  unitId: unit.unitId,
  status: unit.status,
  fromStep: null,
  fromStepIndex: null,
  fromChunk: null,
  generation: null,
  keysChange: false
})

// ---- text

export const runsText = (runs: ReadonlyArray<RunSummaryJson>): string =>
  runs.length === 0
    ? "No runs in the store yet. Start one with `start <job> --params '{...}'`."
    : F.table(
      ["RUN", "JOB", "STATUS", "PARTITIONS", "CREATED", "REASON"],
      runs.map((r) => [r.runId, r.job, r.status, r.partitions, r.createdAt, F.clip(r.reason ?? "", 60)])
    )

export const statusText = (view: StatusJson, cli: string): string => {
  const { partitions: p, run, throughput: t } = view
  const out: Array<string> = [
    F.pairs([
      ["run", run.runId],
      ["job", run.job],
      ["status", run.status],
      ...(run.reason === null ? [] : [["reason", run.reason] as const]),
      ["params", JSON.stringify(run.params)],
      ["started", run.createdAt],
      ["ended", run.finishedAt ?? "—"],
      ["elapsed", F.duration(run.elapsedMs)],
      ["failure budget", run.failureBudget === null ? "none" : `${run.failureBudget} partition(s)`]
    ]),
    "",
    `partitions  ${F.bar(p.succeeded + p.failed + p.skipped + p.cancelled, p.total)} total ${F.count(p.total)} · ` +
    `succeeded ${F.count(p.succeeded)} · failed ${F.count(p.failed)} · running ${F.count(p.leased)} · ` +
    `pending ${F.count(p.pending)} · skipped ${F.count(p.skipped)} · cancelled ${F.count(p.cancelled)}` +
    (p.waiting > 0 ? ` · waiting for ranges ${F.count(p.waiting)}` : ""),
    ...(view.ranges.total === 0 ? [] : [
      `ranges      ${F.bar(view.ranges.succeeded + view.ranges.failed + view.ranges.cancelled, view.ranges.total)} ` +
      `total ${F.count(view.ranges.total)} · succeeded ${F.count(view.ranges.succeeded)} · ` +
      `failed ${F.count(view.ranges.failed)} · running ${F.count(view.ranges.leased)} · ` +
      `pending ${F.count(view.ranges.pending)} · cancelled ${F.count(view.ranges.cancelled)}`
    ]),
    ...Q.statusLine(view.quarantine),
    `throughput  ${F.count(t.chunks)} chunks · ${F.count(t.items)} items · ${F.rate(t.chunksPerSecond)} chunks/s ` +
    `(${run.finishedAt === null ? `last ${F.duration(t.windowMs)}` : "average"}) · ETA ${F.duration(t.etaMs)}`,
    "",
    F.table(
      ["STEP", "DONE", "ACTIVE", "FAILED", "CHUNKS"],
      view.steps.map((s) => [s.name, s.done, s.active, s.failed, s.chunks])
    )
  ]
  if (view.throttled !== null && view.throttled.length > 0) {
    out.push(
      "",
      `Throttled partitions (\`${cli} limits\` shows the limits; \`${cli} limits set\` changes one)`,
      F.table(
        ["PARTITION", "STEP", "STATUS", "WAITING FOR", "WAITING"],
        view.throttled.map((t) => [
          t.partition,
          t.step,
          t.status,
          t.kind === "rate" ? `its turn (rate), until ${t.until}` : "a slot (in flight)",
          F.duration(t.waitingMs)
        ])
      )
    )
  }
  if (view.slowest.length > 0) {
    out.push(
      "",
      "Slowest partitions",
      F.table(
        ["PARTITION", "STATUS", "STEP", "DURATION", "CHUNKS", "ITEMS"],
        view.slowest.map((s) => [s.partition, s.status, s.step, F.duration(s.durationMs), s.chunks, s.items])
      )
    )
  }
  if (view.failures.length > 0) {
    out.push(
      "",
      "Failures by error class",
      F.table(
        ["ERROR CLASS", "SEVERITY", "FAILED", "SEEN", "RUNBOOK", "LAST MESSAGE"],
        view.failures.map((f) => [
          f.errorTag,
          f.severity,
          f.failedPartitions,
          f.occurrences,
          `${f.runbookId}: ${F.clip(f.runbookTitle, 50)}`,
          F.clip(f.lastMessage, 60)
        ])
      ),
      "",
      `Next: \`${cli} failures ${run.runId}\` lists each failed partition; \`${cli} runbooks\` prints the runbooks.`
    )
  }
  return out.join("\n")
}

export const failuresText = (runId: string, rows: ReadonlyArray<FailedPartitionJson>): string => {
  if (rows.length === 0) return `Run ${runId} has no failed partitions.`
  const blocks = rows.map((f) =>
    F.pairs([
      ["partition", f.partition],
      ["step", f.step],
      ["error", `${f.errorTag}: ${F.clip(f.message, 200)}`],
      ["cursor", f.cursor ?? "(step start)"],
      ["attempts", String(f.attempts)],
      ["runbook", `${f.runbookId} (${f.severity}): ${f.runbookTitle}`],
      ["failed at", f.at],
      ["retry", f.retryCommand]
    ])
  )
  return [`${rows.length} failed partition(s) of run ${runId}`, "", blocks.join("\n\n")].join("\n")
}

export const actionText = (view: ActionJson): string => {
  const noun = view.units.length === 1 ? "unit" : "units"
  const head = view.dryRun
    ? `Dry run: ${view.action} would change ${view.units.length} ${noun} of run ${view.runId} (nothing was changed).`
    : `${view.action}: changed ${view.units.length} ${noun} of run ${view.runId}, as ${view.actor}` +
      (view.reason === null ? "." : `: ${view.reason}`)
  if (view.units.length === 0) return head
  const rows = view.action === "retry"
    ? F.table(
      ["PARTITION", "STATUS", "RESUMES AT", "IDEMPOTENCY KEYS"],
      view.units.map((u) => [
        u.partition,
        u.status,
        u.fromChunk === 0 ? `${u.fromStep} (start of step)` : `${u.fromStep}, chunk ${u.fromChunk}`,
        u.keysChange ? `new (generation ${u.generation})` : "unchanged"
      ])
    )
    : F.table(["PARTITION", "STATUS"], view.units.map((u) => [u.partition || "(completion)", u.status]))
  return [head, "", rows].join("\n")
}

export const auditText = (runId: string, entries: ReadonlyArray<AuditEntry>): string =>
  entries.length === 0
    ? `No operator action recorded for run ${runId}.`
    : F.table(
      ["AT", "ACTION", "ACTOR", "REASON", "DETAILS"],
      entries.map((e) => [F.time(e.at), e.action, e.actor, F.clip(e.reason, 60), F.clip(JSON.stringify(e.details), 80)])
    )

export const limitChangeJson = (change: ResourceLimiter.Change): LimitChangeJson => ({
  ...change,
  at: new Date(change.at).toISOString()
})

export const limitHistoryText = (rows: ReadonlyArray<LimitChangeJson>): string =>
  rows.length === 0
    ? "No limit changes recorded."
    : F.table(
      ["AT", "RESOURCE", "ACTOR", "BEFORE", "AFTER", "REASON"],
      rows.map((c) => [
        c.at,
        c.resource,
        c.actor,
        c.before === null ? "(created)" : ResourceLimiter.summary(c.before),
        ResourceLimiter.summary(c.after),
        F.clip(c.reason, 60)
      ])
    )
