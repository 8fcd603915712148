import { Clock, Effect, FiberRef, Option } from "effect"
import * as Errors from "../Errors.js"
import * as MemoryDatabase from "../MemoryDatabase.js"
import type { WorkMessage } from "../Message.js"
import * as Quarantine from "../Quarantine.js"
import type {
  Actor,
  AuditEntry,
  ChunkAttempt,
  ChunkCommit,
  ClaimResult,
  FailureGroup,
  FailureRecord,
  JoinOutcome,
  Lease,
  RunRecord,
  RunStatus,
  Selection,
  StateStoreShape,
  UnitRecord,
  UnitStatus
} from "../StateStore.js"
import { emptyCounts, isTerminalRun, isTerminalUnit, plannedUnit } from "../StateStore.js"

type Mutable<T> = { -readonly [K in keyof T]: T[K] }
type Run = Mutable<RunRecord>
type Unit = Mutable<UnitRecord>

/** The feed's order: finalize units first, then heaviest first, then by id. */
const feedOrder = (a: Unit, b: Unit) =>
  a.kind !== b.kind ? (a.kind === "finalize" ? -1 : 1) : b.weight - a.weight || (a.unitId < b.unitId ? -1 : 1)

/** The first `count` of `items` in `order`, without sorting them all (a feed takes a few of thousands). */
const firstInOrder = <A>(items: ReadonlyArray<A>, count: number, order: (a: A, b: A) => number): Array<A> => {
  const first: Array<A> = []
  if (count <= 0) return first
  for (const item of items) {
    if (first.length === count && order(item, first[count - 1]!) >= 0) continue
    let i = first.length
    first.push(item)
    while (i > 0 && order(first[i - 1]!, item) > 0) {
      first[i] = first[i - 1]!
      i -= 1
    }
    first[i] = item
    if (first.length > count) first.pop()
  }
  return first
}

/**
 * The in-memory state store. Every operation reads the clock, then runs synchronously: JavaScript runs
 * one synchronous block at a time, so each operation is atomic, as one SQL statement is.
 */
export const make = Effect.sync(() => {
  const database = MemoryDatabase.make()
  const runs = new Map<string, Run>()
  const units = new Map<string, Map<string, Unit>>()
  const failures = new Map<string, Array<FailureRecord>>()
  const ledger = new Map<string, Array<string>>()
  const audit = new Map<string, Array<AuditEntry>>()
  /** Every ledger row's step, partition, items and time, per run, for reports and skip budgets. */
  const chunkLog = new Map<
    string,
    Array<{ readonly step: string; readonly partitionKey: string; readonly items: number; readonly at: number }>
  >()
  /** Quarantined items per run, by step, partition and item id. */
  const quarantine = new Map<string, Map<string, Mutable<Quarantine.Entry>>>()
  const quarantineOf = (runId: string) => {
    let map = quarantine.get(runId)
    if (map === undefined) {
      map = new Map()
      quarantine.set(runId, map)
    }
    return map
  }
  const quarantineKey = (step: string, partitionKey: string, itemId: string) =>
    `${step}\u0000${partitionKey}\u0000${itemId}`

  const now = Clock.currentTimeMillis
  const unitsOf = (runId: string): Map<string, Unit> => {
    let map = units.get(runId)
    if (map === undefined) {
      map = new Map()
      units.set(runId, map)
    }
    return map
  }
  /**
   * Each run's open units (pending, leased or waiting), and some that have ended since, as the feed
   * and the completion check read them (Postgres reads its partial indexes of open units):
   * - `sent`: units the feed has sent or a worker has claimed at least once, about as many as are in
   *   flight; a feed visits each of them;
   * - `unsent`: units never sent, in feed order (`incoming`: made since the last feed, not yet ordered);
   *   a feed takes the first few it needs, so a run of 100,000 partitions costs a feed what it sends.
   * A unit joins when it is made or reopened; ended ones, and unsent ones sent since, drop out when met.
   */
  interface OpenUnits {
    readonly sent: Set<Unit>
    unsent: Array<Unit>
    /** The index of `unsent`'s first entry not yet dropped. */
    head: number
    readonly incoming: Array<Unit>
  }
  const openUnits = new Map<string, OpenUnits>()
  const openOf = (runId: string): OpenUnits => {
    let open = openUnits.get(runId)
    if (open === undefined) {
      open = { sent: new Set(), unsent: [], head: 0, incoming: [] }
      openUnits.set(runId, open)
    }
    return open
  }
  const wasSent = (unit: Unit) => unit.enqueueSeq > 0 || unit.fencingToken > 0
  const opened = (unit: Unit): Unit => {
    const open = openOf(unit.runId)
    if (wasSent(unit)) open.sent.add(unit)
    else open.incoming.push(unit)
    return unit
  }
  /** A unit the feed sends or a worker claims: from now on among the run's `sent` units. */
  const markSent = (unit: Unit) => openOf(unit.runId).sent.add(unit)
  const ended = (unit: Unit) => isTerminalUnit(unit.status) || units.get(unit.runId)?.get(unit.unitId) !== unit
  /** The run's never-sent open units in feed order, from the first; drops those ended or sent since. */
  function* unsentOf(open: OpenUnits): Generator<Unit> {
    if (open.incoming.length > 0) {
      open.unsent = open.unsent.slice(open.head).concat(open.incoming.splice(0)).sort(feedOrder)
      open.head = 0
    }
    for (let i = open.head; i < open.unsent.length; i++) {
      const unit = open.unsent[i]!
      if (ended(unit) || wasSent(unit)) {
        if (i === open.head) open.head += 1
        continue
      }
      yield unit
    }
    if (open.head > 1024 && open.head * 2 > open.unsent.length) {
      open.unsent = open.unsent.slice(open.head)
      open.head = 0
    }
  }
  /** Whether a unit other than the finalize unit is open; stops at the first (units end about in order). */
  const hasOpenWork = (runId: string): boolean => {
    const open = openUnits.get(runId)
    if (open === undefined) return false
    for (const unit of open.sent) {
      if (ended(unit)) open.sent.delete(unit)
      else if (unit.kind !== "finalize") return true
    }
    for (const unit of unsentOf(open)) if (unit.kind !== "finalize") return true
    return false
  }
  const push = <A>(map: Map<string, Array<A>>, key: string, value: A) => {
    const list = map.get(key)
    if (list === undefined) map.set(key, [value])
    else list.push(value)
  }
  const snapshotRun = (run: Run): RunRecord => ({ ...run })
  const snapshotUnit = (unit: Unit): UnitRecord => ({ ...unit })
  /** The id of the claim that leased each unit (`ClaimRequest.claimId`), when it named one. */
  const claimIds = new WeakMap<Unit, string>()
  /** Each run's `NewRun.baseKey`. */
  const baseKeys = new WeakMap<Run, string>()
  /** A run of `job` with `baseKey` that has not ended, other than `except`. */
  const activeRunOf = (job: string, baseKey: string | undefined, except?: Run) =>
    [...runs.values()].find((r) =>
      r !== except && r.job === job && baseKeys.get(r) === baseKey && !isTerminalRun(r.status)
    )
  const alreadyActive = (job: string, runKey: string, active: Run) =>
    new Errors.RunAlreadyActive({ job, runKey, activeRunId: active.runId, activeStatus: active.status })
  /** An ended run re-opens only while no other run of its params is active (as `createRun` refuses one). */
  const refuseReopenBesideActive = (run: Run) => {
    const active = isTerminalRun(run.status) ? activeRunOf(run.job, baseKeys.get(run), run) : undefined
    return active === undefined ? Effect.void : Effect.fail(alreadyActive(run.job, run.runKey, active))
  }
  const claimed = (run: Run, unit: Unit, workerId: string): ClaimResult => ({
    _tag: "Claimed",
    unit: snapshotUnit(unit),
    run: snapshotRun(run),
    lease: { runId: run.runId, unitId: unit.unitId, workerId, fencingToken: unit.fencingToken }
  })
  const findRun = (runId: string) => {
    const run = runs.get(runId)
    return run === undefined ? Effect.fail(new Errors.NotFound({ what: "run", id: runId })) : Effect.succeed(run)
  }
  const liveLease = (unit: Unit, at: number) =>
    unit.status === "leased" && unit.leaseExpiresAt !== null && unit.leaseExpiresAt > at
  const holds = (unit: Unit | undefined, lease: Lease): unit is Unit =>
    unit !== undefined && unit.status === "leased" && unit.fencingToken === lease.fencingToken &&
    unit.leaseOwner === lease.workerId
  /**
   * The attempt count a unit goes back with: `spent` (0 or 1) past the greater of its own and the
   * worker's, or its own when it has moved past the chunk the worker counted (that chunk committed).
   */
  const attemptAfter = (unit: Unit, at: ChunkAttempt | undefined, spent: number) =>
    at === undefined
      ? unit.attempt + spent
      : unit.stepIndex === at.stepIndex && unit.chunkSeq === at.chunkSeq
      ? Math.max(unit.attempt, at.attempt) + spent
      : unit.attempt
  const fence = (unit: Unit, status: UnitStatus, at: number) => {
    unit.status = status
    unit.fencingToken += 1
    unit.leaseOwner = null
    unit.leaseExpiresAt = null
    if (isTerminalUnit(status)) unit.finishedAt = at
    else opened(unit)
  }
  const leaseLost = (lease: Lease, reason: string) =>
    new Errors.LeaseLost({ runId: lease.runId, unitId: lease.unitId, reason })
  const newUnit = (
    run: Run,
    fields: Pick<UnitRecord, "unitId" | "kind" | "partitionKey" | "weight"> & Partial<UnitRecord>
  ): Unit =>
    opened({
      runId: run.runId,
      job: run.job,
      status: "pending",
      stepIndex: 0,
      cursor: null,
      chunkSeq: 0,
      generation: 0,
      attempt: 1,
      crashesSinceProgress: 0,
      fencingToken: 0,
      leaseOwner: null,
      leaseExpiresAt: null,
      enqueueSeq: 0,
      enqueuedAt: null,
      retryAt: null,
      chunks: 0,
      items: 0,
      startedAt: null,
      finishedAt: null,
      lastErrorTag: null,
      parentUnitId: null,
      range: null,
      ...fields
    })
  const partitionsOf = (runId: string) => [...unitsOf(runId).values()].filter((u) => u.kind === "partition")
  /** The ranges of a partition's current split (its generation's). */
  const rangesOf = (parent: Unit) =>
    [...unitsOf(parent.runId).values()].filter((u) =>
      u.parentUnitId === parent.unitId && u.generation === parent.generation
    )

  /** D8: a failing run starts nothing new; what waits to start is cancelled. */
  const cancelPending = (run: Run, at: number) => {
    for (const unit of unitsOf(run.runId).values()) {
      if (unit.kind !== "finalize" && unit.status === "pending") fence(unit, "cancelled", at)
    }
  }

  const finalizeIfComplete = (run: Run, at: number): boolean => {
    if (run.status !== "running" && run.status !== "failing") return false
    // A unit can turn pending again after the run went failing (released by a draining worker, a retry
    // put off, a split partition joined): nothing would ever claim it, so the check cancels it.
    if (run.status === "failing") cancelPending(run, at)
    if (hasOpenWork(run.runId)) return false
    run.status = "finalizing"
    run.updatedAt = at
    const unitId = `finalize-${run.finalizeSeq}`
    unitsOf(run.runId).set(unitId, newUnit(run, { unitId, kind: "finalize", partitionKey: "", weight: 0 }))
    return true
  }

  /** The split barrier on one waiting partition: see `StateStoreShape.joinRanges`. */
  const join = (run: Run, parent: Unit, at: number): JoinOutcome => {
    if (parent.status !== "waiting") return "none"
    const ranges = rangesOf(parent)
    if (ranges.some((u) => !isTerminalUnit(u.status))) return "open"
    const failed = ranges.find((u) => u.status === "failed")
    if (failed !== undefined) {
      fence(parent, "failed", at)
      parent.lastErrorTag = failed.lastErrorTag
      return "failed"
    }
    if (ranges.some((u) => u.status === "cancelled")) {
      fence(parent, "cancelled", at)
      return "cancelled"
    }
    parent.stepIndex += 1
    parent.chunkSeq = 0
    parent.cursor = null
    parent.attempt = 1
    parent.crashesSinceProgress = 0
    if (parent.stepIndex >= run.definition.steps.length) {
      parent.status = "succeeded"
      parent.finishedAt = at
      return "succeeded"
    }
    parent.status = "pending"
    parent.enqueuedAt = null
    parent.retryAt = null
    return "advanced"
  }
  const joinAll = (run: Run, at: number) => {
    for (const unit of partitionsOf(run.runId)) if (unit.status === "waiting") join(run, unit, at)
  }
  /** Stops a partition's current ranges (an operator moved the partition itself). */
  const cancelRanges = (parent: Unit, at: number) => {
    for (const range of rangesOf(parent)) if (!isTerminalUnit(range.status)) fence(range, "cancelled", at)
  }

  const select = (run: Run, selection: Selection, applies: (unit: Unit) => boolean) =>
    Effect.gen(function*() {
      const all = partitionsOf(run.runId)
      if (selection.partitions === undefined) return all.filter(applies)
      const byKey = new Map(all.map((u) => [u.partitionKey, u]))
      const chosen: Array<Unit> = []
      for (const key of selection.partitions) {
        const unit = byKey.get(key)
        if (unit === undefined) return yield* new Errors.NotFound({ what: `partition of run ${run.runId}`, id: key })
        chosen.push(unit)
      }
      return chosen
    })

  const recordAudit = (runId: string, action: AuditEntry["action"], actor: Actor, details: unknown, at: number) =>
    push(audit, runId, { at, action, runId, details, actor: actor.actor, reason: actor.reason })

  /** `SkipBudgetExceeded` when the commit's items would take a partition or the run over its budget. */
  const overSkipBudget = (unit: Unit, commit: ChunkCommit): Errors.SkipBudgetExceeded | undefined => {
    const { budgets, items } = commit.quarantine!
    if (budgets === undefined || items.length === 0) return undefined
    const held = quarantineOf(unit.runId)
    /** Items of this chunk not already counted (new, or resolved before and failing again). */
    const added = items.filter((item) =>
      (held.get(quarantineKey(commit.step, unit.partitionKey, item.itemId))?.status ?? "resolved") === "resolved"
    ).length
    const live = [...held.values()].filter((e) =>
      e.status !== "resolved"
    )
    const log = chunkLog.get(unit.runId) ?? []
    const inPartition = (e: { readonly step: string; readonly partitionKey: string }) =>
      e.step === commit.step && e.partitionKey === unit.partitionKey
    return Quarantine.overBudget({
      budgets,
      partition: {
        skipped: added + live.filter(inPartition).length,
        handled: commit.items + log.filter(inPartition).reduce((sum, e) => sum + e.items, 0)
      },
      run: {
        skipped: added + live.length,
        handled: commit.items + [...unitsOf(unit.runId).values()].reduce((sum, u) => sum + u.items, 0)
      },
      step: commit.step,
      partitionKey: unit.partitionKey,
      items
    })
  }
  /** Records a chunk's items set aside and a re-run's resolved ones. */
  const applyQuarantine = (unit: Unit, step: string, change: NonNullable<ChunkCommit["quarantine"]>, at: number) => {
    const held = quarantineOf(unit.runId)
    for (const item of change.items) {
      const key = quarantineKey(step, unit.partitionKey, item.itemId)
      const before = held.get(key)
      held.set(key, {
        ...item,
        runId: unit.runId,
        step,
        partitionKey: unit.partitionKey,
        unitId: before?.unitId ?? unit.unitId,
        cursor: before === undefined ? change.cursor : before.cursor,
        range: before === undefined ? change.range : before.range,
        status: "quarantined",
        attempts: (before?.attempts ?? 0) + 1,
        quarantinedAt: before?.quarantinedAt ?? at,
        updatedAt: at
      })
    }
    for (const itemId of change.resolved ?? []) {
      const entry = held.get(quarantineKey(step, unit.partitionKey, itemId))
      if (entry !== undefined && entry.status === "retry") {
        entry.status = "resolved"
        entry.updatedAt = at
      }
    }
  }
  const matches = (entry: Quarantine.Entry, filter: Quarantine.Filter) =>
    (filter.step === undefined || entry.step === filter.step) &&
    (filter.partitions === undefined || filter.partitions.includes(entry.partitionKey)) &&
    (filter.status === undefined || filter.status.includes(entry.status))

  const store: StateStoreShape = {
    kind: "memory",

    transaction: (effect) =>
      Effect.flatMap(
        FiberRef.get(MemoryDatabase.currentWriteSet),
        (active) =>
          active !== undefined
            ? effect
            : Effect.locally(effect, MemoryDatabase.currentWriteSet, new MemoryDatabase.WriteSet())
      ),

    probe: (effect) =>
      Effect.flatMap(
        FiberRef.get(MemoryDatabase.currentWriteSet),
        (active) =>
          Effect.exit(Effect.locally(effect, MemoryDatabase.currentWriteSet, new MemoryDatabase.WriteSet(active)))
      ),

    createRun: ({ baseKey, ...input }) =>
      Effect.flatMap(now, (at): Effect.Effect<{ run: RunRecord; created: boolean }, Errors.RunAlreadyActive> => {
        const existing = runs.get(input.runId)
        if (existing !== undefined) return Effect.succeed({ run: snapshotRun(existing), created: false })
        const active = activeRunOf(input.job, baseKey)
        if (active !== undefined) return Effect.fail(alreadyActive(input.job, input.runKey, active))
        const run: Run = {
          ...input,
          status: "enumerating",
          partitionCount: 0,
          failureBudget: Number.MAX_SAFE_INTEGER,
          finalizeSeq: 1,
          createdAt: at,
          updatedAt: at,
          finishedAt: null,
          reason: null
        }
        runs.set(run.runId, run)
        baseKeys.set(run, baseKey)
        return Effect.succeed({ run: snapshotRun(run), created: true })
      }),

    insertUnits: (runId, inputs) =>
      Effect.sync(() => {
        const run = runs.get(runId)
        if (run === undefined) return
        const map = unitsOf(runId)
        for (const input of inputs) {
          if (!map.has(input.unitId)) map.set(input.unitId, newUnit(run, { ...input, kind: "partition" }))
        }
      }),

    openRun: (runId, budget) =>
      Effect.flatMap(now, (at) =>
        Effect.map(findRun(runId), (run) => {
          if (run.status === "enumerating") {
            run.partitionCount = partitionsOf(runId).length
            run.failureBudget = budget(run.partitionCount)
            run.status = "running"
            run.updatedAt = at
            finalizeIfComplete(run, at)
          }
          return snapshotRun(run)
        })),

    getRun: (runId) => Effect.sync(() => Option.map(Option.fromNullable(runs.get(runId)), snapshotRun)),

    listRuns: ({ job, limit }) =>
      Effect.sync(() =>
        [...runs.values()]
          .filter((r) => job === undefined || r.job === job)
          .sort((a, b) => b.createdAt - a.createdAt)
          .slice(0, limit)
          .map(snapshotRun)
      ),

    progress: (runId) =>
      Effect.map(findRun(runId), (run) => {
        const counts = emptyCounts()
        const ranges = emptyCounts()
        const atStep: Array<number> = run.definition.steps.map(() => 0)
        let chunks = 0
        let items = 0
        for (const unit of unitsOf(runId).values()) {
          if (unit.kind === "finalize") continue
          chunks += unit.chunks
          items += unit.items
          if (unit.kind === "range") {
            ranges[unit.status] += 1
            continue
          }
          if (unit.kind === "items") continue
          counts[unit.status] += 1
          if (!isTerminalUnit(unit.status) && unit.stepIndex < atStep.length) atStep[unit.stepIndex] += 1
        }
        const held = Quarantine.emptyCounts()
        for (const entry of quarantineOf(runId).values()) held[entry.status] += 1
        return { run: snapshotRun(run), units: counts, atStep, ranges, quarantine: held, chunks, items }
      }),

    listUnits: (runId, { limit, status }) =>
      Effect.sync(() =>
        [...unitsOf(runId).values()]
          .filter((u) => status === undefined || status.includes(u.status))
          .slice(0, limit)
          .map(snapshotUnit)
      ),

    listFailures: (runId, { limit }) => Effect.sync(() => (failures.get(runId) ?? []).slice(-limit)),

    report: (runId, options) =>
      Effect.gen(function*() {
        const at = yield* now
        const progress = yield* store.progress(runId)
        const partitions = partitionsOf(runId)
        const cells = new Map<string, { status: UnitStatus; stepIndex: number; units: number }>()
        for (const unit of partitions) {
          const key = `${unit.status}\u0000${unit.stepIndex}`
          const cell = cells.get(key) ?? { status: unit.status, stepIndex: unit.stepIndex, units: 0 }
          cell.units += 1
          cells.set(key, cell)
        }
        const chunksByStep: Record<string, number> = {}
        let recentChunks = 0
        for (const entry of chunkLog.get(runId) ?? []) {
          chunksByStep[entry.step] = (chunksByStep[entry.step] ?? 0) + 1
          if (entry.at > at - options.windowMs) recentChunks += 1
        }
        const slowest = partitions
          .filter((u) => u.startedAt !== null)
          .map((u) => ({
            partitionKey: u.partitionKey,
            status: u.status,
            stepIndex: u.stepIndex,
            durationMs: (u.finishedAt ?? at) - u.startedAt!,
            chunks: u.chunks,
            items: u.items
          }))
          .sort((a, b) => b.durationMs - a.durationMs || (a.partitionKey < b.partitionKey ? -1 : 1))
          .slice(0, options.slowest)
        const groups = new Map<string, Mutable<FailureGroup> & { keys: Set<string> }>()
        for (const f of failures.get(runId) ?? []) {
          const key = `${f.errorTag}\u0000${f.runbookId}\u0000${f.severity}`
          const group = groups.get(key) ?? {
            errorTag: f.errorTag,
            runbookId: f.runbookId,
            severity: f.severity,
            failures: 0,
            partitions: 0,
            failedPartitions: 0,
            lastMessage: "",
            lastAt: 0,
            keys: new Set<string>()
          }
          group.failures += 1
          group.keys.add(f.partitionKey)
          group.lastMessage = f.message
          group.lastAt = f.at
          groups.set(key, group)
        }
        const failureGroups = [...groups.values()].map(({ keys, ...group }) => ({
          ...group,
          partitions: keys.size,
          failedPartitions: partitions.filter((u) => u.status === "failed" && u.lastErrorTag === group.errorTag).length
        })).sort((a, b) => b.failures - a.failures || (a.errorTag < b.errorTag ? -1 : 1))
        return {
          progress,
          cells: [...cells.values()],
          chunksByStep,
          recentChunks,
          windowMs: options.windowMs,
          now: at,
          slowest,
          failureGroups
        }
      }),

    backlog: Effect.map(now, (at) => {
      const out = { ready: 0, delayed: 0, running: 0, expiredLeases: 0 }
      for (const run of runs.values()) {
        if (run.status !== "running" && run.status !== "finalizing") continue
        for (const unit of unitsOf(run.runId).values()) {
          const active = unit.kind === "finalize" ? run.status === "finalizing" : run.status === "running"
          if (!active) continue
          if (unit.status === "pending") {
            if (unit.retryAt !== null && unit.retryAt > at) out.delayed += 1
            else out.ready += 1
          } else if (unit.status === "leased") {
            if (liveLease(unit, at)) out.running += 1
            else out.expiredLeases += 1
          }
        }
      }
      return out
    }),

    ledger: (runId, unitId) => Effect.sync(() => [...(ledger.get(`${runId}\u0000${unitId}`) ?? [])]),

    auditLog: (runId) => Effect.sync(() => [...(audit.get(runId) ?? [])]),

    feed: ({ maxOutstanding, redeliverAfterMs }) =>
      Effect.map(now, (at) => {
        const fresh = (u: Unit) => u.enqueuedAt !== null && u.enqueuedAt + redeliverAfterMs > at
        const runnable = (run: Run, unit: Unit) =>
          unit.kind === "finalize" ? run.status === "finalizing" : run.status === "running"
        const due = (unit: Unit) =>
          unit.status === "pending" ? unit.retryAt === null || unit.retryAt <= at : unit.status === "leased"
        let outstanding = 0
        const candidates: Array<Unit> = []
        for (const run of runs.values()) {
          const open = openUnits.get(run.runId)
          if (open === undefined) continue
          for (const unit of open.sent) {
            if (ended(unit)) {
              open.sent.delete(unit)
              continue
            }
            if (liveLease(unit, at) || (unit.status === "pending" && fresh(unit))) {
              outstanding += 1
              continue
            }
            if (runnable(run, unit) && due(unit)) candidates.push(unit)
          }
        }
        const wanted = maxOutstanding - outstanding
        // Never-sent units come in feed order: each run gives at most the `wanted` first of those that
        // can run now.
        for (const run of wanted > 0 ? runs.values() : []) {
          const open = openUnits.get(run.runId)
          if (open === undefined) continue
          let taken = 0
          for (const unit of unsentOf(open)) {
            if (taken >= wanted) break
            if (!runnable(run, unit)) {
              // Finalize units come first: past them, a run that is not running has nothing to run.
              if (run.status !== "running" && unit.kind !== "finalize") break
              continue
            }
            if (!due(unit)) continue
            candidates.push(unit)
            taken += 1
          }
        }
        const messages: Array<WorkMessage> = []
        for (const unit of firstInOrder(candidates, wanted, feedOrder)) {
          markSent(unit)
          unit.enqueueSeq += 1
          unit.enqueuedAt = at
          messages.push({ v: 1, job: unit.job, runId: unit.runId, unitId: unit.unitId, seq: unit.enqueueSeq })
        }
        return messages
      }),

    claim: ({ claimId, jobConcurrency, leaseMs, message, workerId }) =>
      Effect.map(now, (at): ClaimResult => {
        const run = runs.get(message.runId)
        const unit = units.get(message.runId)?.get(message.unitId)
        if (run === undefined || unit === undefined) return { _tag: "Ack", reason: "unknown-unit" }
        const active = unit.kind === "finalize" ? run.status === "finalizing" : run.status === "running"
        const sameClaim = claimId !== undefined && unit.leaseOwner === workerId && claimIds.get(unit) === claimId
        if (sameClaim && active && liveLease(unit, at)) {
          // The same claim again (its reply was lost): its lease, extended.
          unit.leaseExpiresAt = at + leaseMs
          return claimed(run, unit, workerId)
        }
        if (isTerminalUnit(unit.status)) return { _tag: "Ack", reason: "terminal" }
        if (unit.status === "waiting") return { _tag: "Ack", reason: "waiting" }
        if (message.seq < unit.enqueueSeq) return { _tag: "Ack", reason: "stale-message" }
        if (!active) return { _tag: "Ack", reason: "run-not-active" }
        if (liveLease(unit, at)) {
          return { _tag: "Later", reason: "leased-elsewhere", delayMs: unit.leaseExpiresAt! - at }
        }
        if (unit.status === "pending" && unit.retryAt !== null && unit.retryAt > at) {
          return { _tag: "Ack", reason: "not-due" }
        }
        if (jobConcurrency !== undefined) {
          let leased = 0
          for (const other of runs.values()) {
            if (other.job !== run.job) continue
            for (const u of unitsOf(other.runId).values()) if (liveLease(u, at)) leased += 1
          }
          if (leased >= jobConcurrency) return { _tag: "Later", reason: "job-concurrency", delayMs: 1000 }
        }
        if (unit.status === "leased" && !sameClaim) {
          // The previous holder's lease expired without a release: it died mid-unit. (Not when this same
          // claim took it and its reply was lost: no one ran the unit under it.)
          unit.crashesSinceProgress += 1
          unit.attempt += 1
        }
        markSent(unit)
        unit.status = "leased"
        unit.fencingToken += 1
        unit.leaseOwner = workerId
        unit.leaseExpiresAt = at + leaseMs
        unit.retryAt = null
        unit.startedAt ??= at
        if (claimId === undefined) claimIds.delete(unit)
        else claimIds.set(unit, claimId)
        return claimed(run, unit, workerId)
      }),

    commitChunk: (commit) =>
      Effect.flatMap(
        now,
        (at) =>
          Effect.flatMap(FiberRef.get(MemoryDatabase.currentWriteSet), (writeSet): Effect.Effect<
            { readonly runStatus: RunStatus },
            Errors.LeaseLost | Errors.CheckpointMoved | Errors.SkipBudgetExceeded | Errors.RunStopped
          > => {
            const { lease } = commit
            // A fused step commits only while the run is running (checked first, as Postgres does).
            const status = runs.get(lease.runId)?.status
            if (commit.fused !== undefined && status !== "running") {
              return Effect.fail(new Errors.RunStopped({ runId: lease.runId, status: status ?? "missing" }))
            }
            const unit = units.get(lease.runId)?.get(lease.unitId)
            if (!holds(unit, lease)) {
              return Effect.fail(leaseLost(lease, "fenced by a newer claim or an operator action"))
            }
            if (unit.leaseExpiresAt === null || unit.leaseExpiresAt <= at) {
              return Effect.fail(leaseLost(lease, "the lease expired before the commit"))
            }
            if (unit.stepIndex !== commit.from.stepIndex || unit.chunkSeq !== commit.from.chunkSeq) {
              return Effect.fail(new Errors.CheckpointMoved({ runId: lease.runId, unitId: lease.unitId }))
            }
            const overBudget = commit.quarantine === undefined ? undefined : overSkipBudget(unit, commit)
            if (overBudget !== undefined) return Effect.fail(overBudget)
            if (writeSet !== undefined) database.apply(writeSet)
            if (commit.quarantine !== undefined) applyQuarantine(unit, commit.step, commit.quarantine, at)
            unit.stepIndex = commit.to.stepIndex
            unit.cursor = commit.to.cursor
            unit.chunkSeq = commit.to.chunkSeq
            unit.attempt = 1
            unit.crashesSinceProgress = 0
            unit.chunks += commit.fused === undefined ? 1 : 2
            unit.items += commit.items
            unit.lastErrorTag = null
            unit.leaseExpiresAt = at + commit.leaseMs
            const entries = [{ step: commit.step, key: commit.idempotencyKey, items: commit.items }]
            if (commit.fused !== undefined) {
              entries.push({ step: commit.fused.step, key: commit.fused.idempotencyKey, items: 0 })
            }
            for (const entry of entries) {
              push(ledger, `${lease.runId}\u0000${lease.unitId}`, entry.key)
              push(chunkLog, lease.runId, { step: entry.step, partitionKey: unit.partitionKey, items: entry.items, at })
            }
            const run = runs.get(lease.runId)!
            if (commit.unitDone) {
              unit.status = "succeeded"
              unit.leaseOwner = null
              unit.leaseExpiresAt = null
              unit.finishedAt = at
              finalizeIfComplete(run, at)
            }
            return Effect.succeed({ runStatus: run.status })
          })
      ),

    renewLeases: (workerId, leases, leaseMs) =>
      Effect.map(now, (at) => {
        const held: Array<string> = []
        for (const lease of leases) {
          const unit = units.get(lease.runId)?.get(lease.unitId)
          if (holds(unit, lease) && lease.workerId === workerId && liveLease(unit, at)) {
            unit.leaseExpiresAt = at + leaseMs
            held.push(lease.unitId)
          }
        }
        return held
      }),

    release: (lease, { abandonedChunk, at }) =>
      Effect.sync(() => {
        const unit = units.get(lease.runId)?.get(lease.unitId)
        if (!holds(unit, lease)) return
        unit.status = "pending"
        unit.leaseOwner = null
        unit.leaseExpiresAt = null
        unit.attempt = attemptAfter(unit, at, abandonedChunk ? 1 : 0)
      }),

    recordFailure: (failure) => Effect.sync(() => push(failures, failure.runId, failure)),

    failUnit: (lease, disposition) =>
      Effect.flatMap(now, (at) => {
        const unit = units.get(lease.runId)?.get(lease.unitId)
        const run = runs.get(lease.runId)
        if (!holds(unit, lease) || run === undefined) {
          return Effect.fail(leaseLost(lease, "fenced before the failure was recorded"))
        }
        unit.lastErrorTag = disposition.errorTag
        unit.leaseOwner = null
        unit.leaseExpiresAt = null
        if (disposition._tag === "RetryLater") {
          unit.status = "pending"
          unit.attempt = attemptAfter(unit, disposition.at, 1)
          unit.retryAt = at + disposition.delayMs
          unit.enqueuedAt = null
          return Effect.succeed({ runStatus: run.status })
        }
        unit.status = "failed"
        unit.finishedAt = at
        // A range that fails fails its partition at once: the partition is what operators and budgets count.
        const parent = unit.parentUnitId === null ? undefined : unitsOf(run.runId).get(unit.parentUnitId)
        const partitionFailed = parent === undefined ? unit.kind === "partition" : parent.status === "waiting"
        if (parent !== undefined && partitionFailed) {
          fence(parent, "failed", at)
          parent.lastErrorTag = disposition.errorTag
        }
        if (partitionFailed && run.status === "running") {
          const failed = partitionsOf(run.runId).filter((u) => u.status === "failed").length
          if (failed > run.failureBudget) {
            run.status = "failing"
            run.reason = `failure budget exceeded: ${failed} of ${run.partitionCount} partitions failed ` +
              `(the budget allows ${run.failureBudget})`
            run.updatedAt = at
            cancelPending(run, at)
            joinAll(run, at)
          }
        }
        return Effect.succeed({ runStatus: run.status })
      }),

    splitUnit: ({ lease, ranges, stepIndex }) =>
      Effect.flatMap(now, (at) => {
        const run = runs.get(lease.runId)
        const parent = units.get(lease.runId)?.get(lease.unitId)
        if (!holds(parent, lease) || run === undefined || !liveLease(parent, at)) {
          return Effect.fail(leaseLost(lease, "fenced or expired before the split"))
        }
        if (parent.stepIndex !== stepIndex || parent.chunkSeq !== 0) {
          return Effect.fail(leaseLost(lease, "the partition moved before the split"))
        }
        parent.status = "waiting"
        parent.leaseOwner = null
        parent.leaseExpiresAt = null
        const map = unitsOf(run.runId)
        for (const range of ranges) {
          if (map.has(range.unitId)) continue
          map.set(
            range.unitId,
            newUnit(run, {
              unitId: range.unitId,
              kind: "range",
              partitionKey: parent.partitionKey,
              weight: range.weight,
              stepIndex,
              generation: parent.generation,
              parentUnitId: parent.unitId,
              range: range.range
            })
          )
        }
        return Effect.void
      }),

    joinRanges: (runId, parentUnitId) =>
      Effect.map(now, (at) => {
        const run = runs.get(runId)
        const parent = units.get(runId)?.get(parentUnitId)
        return run === undefined || parent === undefined ? "none" : join(run, parent, at)
      }),

    cancelUnit: (lease) =>
      Effect.flatMap(now, (at) =>
        Effect.sync(() => {
          const unit = units.get(lease.runId)?.get(lease.unitId)
          if (holds(unit, lease)) fence(unit, "cancelled", at)
        })),

    tryFinalize: (runId) =>
      Effect.map(now, (at) => {
        const run = runs.get(runId)
        return run === undefined ? false : finalizeIfComplete(run, at)
      }),

    finishRun: (lease, outcome, idempotencyKey) =>
      Effect.flatMap(now, (at) =>
        Effect.flatMap(FiberRef.get(MemoryDatabase.currentWriteSet), (writeSet) => {
          const unit = units.get(lease.runId)?.get(lease.unitId)
          const run = runs.get(lease.runId)
          if (!holds(unit, lease) || run === undefined || run.status !== "finalizing") {
            return Effect.fail(leaseLost(lease, "the finalize unit was fenced"))
          }
          if (unit.leaseExpiresAt === null || unit.leaseExpiresAt <= at) {
            return Effect.fail(leaseLost(lease, "the lease expired before the commit"))
          }
          if (writeSet !== undefined) database.apply(writeSet)
          push(ledger, `${lease.runId}\u0000${lease.unitId}`, idempotencyKey)
          push(chunkLog, lease.runId, { step: "onComplete", partitionKey: "", items: 0, at })
          unit.status = "succeeded"
          unit.leaseOwner = null
          unit.leaseExpiresAt = null
          unit.finishedAt = at
          unit.chunks += 1
          run.status = outcome
          run.finishedAt = at
          run.updatedAt = at
          return Effect.void
        })),

    sweep: () =>
      Effect.map(now, (at) =>
        [...runs.values()].filter((run) => {
          if (run.status === "running" || run.status === "failing") joinAll(run, at)
          return finalizeIfComplete(run, at)
        }).map((run) => run.runId)),

    cancelRun: (runId, actor) =>
      Effect.flatMap(now, (at) =>
        Effect.map(findRun(runId), (run) => {
          if (!isTerminalRun(run.status)) {
            run.status = "cancelled"
            run.reason = `cancelled by ${actor.actor}: ${actor.reason}`
            run.finishedAt = at
            run.updatedAt = at
            for (const unit of unitsOf(runId).values()) if (!isTerminalUnit(unit.status)) fence(unit, "cancelled", at)
            recordAudit(runId, "cancel", actor, {}, at)
          }
          return snapshotRun(run)
        })),

    retry: (runId, selection, actor) =>
      Effect.gen(function*() {
        const at = yield* now
        const run = yield* findRun(runId)
        const chosen = yield* select(run, selection, (u) => u.status === "failed" || u.status === "cancelled")
        // A partition waiting for its ranges has nothing to retry in place (a failed range fails it); the
        // sweeper joins it. Only a retry from a step restarts it.
        const planned = chosen
          .filter((u) => !liveLease(u, at) && (selection.fromStep !== undefined || u.status !== "waiting"))
          .map((u) => plannedUnit(u, selection))
        if (planned.length > 0) yield* refuseReopenBesideActive(run)
        if (selection.dryRun || planned.length === 0) return planned
        for (const p of planned) {
          const unit = unitsOf(runId).get(p.unitId)!
          const ranges = rangesOf(unit)
          if (selection.fromStep === undefined && ranges.some((r) => r.status !== "succeeded")) {
            // Failed at a split step: its ranges that did not succeed run again, the rest stay done.
            fence(unit, "waiting", at)
            unit.finishedAt = null
            unit.lastErrorTag = null
            for (const range of ranges) {
              if (range.status === "failed" || range.status === "cancelled") reopenUnit(range, at)
            }
            continue
          }
          cancelRanges(unit, at)
          reopenUnit(unit, at)
          if (selection.fromStep !== undefined) {
            unit.stepIndex = selection.fromStep
            unit.cursor = null
            unit.chunkSeq = 0
            unit.generation += 1
          }
        }
        reopen(run, at)
        recordAudit(runId, "retry", actor, { selection, units: planned.map((p) => p.partitionKey) }, at)
        return planned
      }),

    listQuarantine: (runId, options) =>
      Effect.sync(() =>
        [...quarantineOf(runId).values()]
          .filter((entry) => matches(entry, options))
          .sort((a, b) =>
            a.step < b.step ? -1 : a.step > b.step ? 1 : a.partitionKey < b.partitionKey ?
              -1 :
              a.partitionKey > b.partitionKey
              ? 1
              : a.itemId < b.itemId
              ? -1
              : a.itemId > b.itemId
              ? 1
              : 0
          )
          .slice(0, options.limit)
          .map((entry) => ({ ...entry }))
      ),

    retryQuarantine: (runId, options, actor) =>
      Effect.gen(function*() {
        const at = yield* now
        const run = yield* findRun(runId)
        const chosen = [...quarantineOf(runId).values()].filter((e) =>
          matches(e, { ...options, status: ["quarantined", "retry"] })
        )
        const groups = new Map<
          string,
          { step: string; partitionKey: string; entries: Array<Mutable<Quarantine.Entry>> }
        >()
        for (const entry of chosen) {
          const key = `${entry.step}\u0000${entry.partitionKey}`
          const group = groups.get(key) ?? { step: entry.step, partitionKey: entry.partitionKey, entries: [] }
          group.entries.push(entry)
          groups.set(key, group)
        }
        const partitions = new Map(partitionsOf(runId).map((u) => [u.partitionKey, u]))
        const planned = [...groups.values()].map((g) => ({
          partitionKey: g.partitionKey,
          step: g.step,
          items: g.entries.length,
          unitId: Quarantine.itemsUnitId(partitions.get(g.partitionKey)!.unitId, g.step)
        })).sort((a, b) => (a.unitId < b.unitId ? -1 : 1))
        if (planned.length > 0) yield* refuseReopenBesideActive(run)
        if (options.dryRun || planned.length === 0) return planned
        for (const group of groups.values()) {
          for (const entry of group.entries) {
            entry.status = "retry"
            entry.updatedAt = at
          }
          const parent = partitions.get(group.partitionKey)!
          const unitId = Quarantine.itemsUnitId(parent.unitId, group.step)
          const stepIndex = run.definition.steps.findIndex((s) => s.name === group.step)
          const unit = unitsOf(runId).get(unitId)
          if (unit === undefined) {
            unitsOf(runId).set(
              unitId,
              newUnit(run, { unitId, kind: "items", partitionKey: parent.partitionKey, weight: 0, stepIndex })
            )
          } else if (unit.status !== "pending") {
            reopenUnit(unit, at)
            unit.stepIndex = stepIndex
            unit.cursor = null
            unit.chunkSeq = 0
            unit.generation += 1
          }
        }
        reopen(run, at)
        recordAudit(runId, "quarantine-retry", actor, { filter: options, planned }, at)
        return planned
      }),

    skip: (runId, selection, actor) =>
      Effect.gen(function*() {
        const at = yield* now
        const run = yield* findRun(runId)
        const chosen = yield* select(run, selection, (u) => u.status === "failed")
        const planned = chosen.filter((u) => u.status !== "succeeded" && u.status !== "skipped").map((u) =>
          plannedUnit(u, selection)
        )
        // A skip in a failed run re-opens it to finalize again: not beside an active re-run.
        if (planned.length > 0 && run.status === "failed") yield* refuseReopenBesideActive(run)
        if (selection.dryRun || planned.length === 0) return planned
        for (const p of planned) {
          const unit = unitsOf(runId).get(p.unitId)!
          cancelRanges(unit, at)
          fence(unit, "skipped", at)
        }
        // A finalizing run's outcome was decided without this skip: its finalize round starts again.
        if (run.status === "failed" || run.status === "finalizing") reopen(run, at)
        recordAudit(runId, "skip", actor, { units: planned.map((p) => p.partitionKey) }, at)
        finalizeIfComplete(run, at)
        return planned
      })
  }

  /** An operator's retry of one unit: pending again (fenced), with a fresh attempt count. */
  const reopenUnit = (unit: Unit, at: number) => {
    fence(unit, "pending", at)
    unit.attempt = 1
    unit.crashesSinceProgress = 0
    unit.retryAt = null
    unit.enqueuedAt = null
    unit.finishedAt = null
    unit.lastErrorTag = null
  }

  /** A run that had ended (or was finalizing) goes back to running; its next finalize is a new round. */
  const reopen = (run: Run, at: number) => {
    const status: RunStatus = run.status
    // An enumerating run opens when its partitions are in (openRun sets its count and budget).
    if (status === "running" || status === "enumerating") return
    if (status === "finalizing") {
      const pending = unitsOf(run.runId).get(`finalize-${run.finalizeSeq}`)
      if (pending !== undefined && !isTerminalUnit(pending.status)) fence(pending, "cancelled", at)
    }
    run.finalizeSeq += 1
    run.status = "running"
    run.reason = null
    run.finishedAt = null
    run.updatedAt = at
  }

  return { store, database }
})
