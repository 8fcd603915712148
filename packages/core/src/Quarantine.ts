/**
 * Item-level skips: a `read` + `write` step may declare error classes whose items are set aside
 * (quarantined) instead of failing the chunk. When `write` fails with one of them, the worker finds
 * the bad items by bisection (D17): it probes halves of the chunk in savepoints that are always rolled
 * back, then writes the good items, the quarantine rows and the checkpoint in one transaction. A skip
 * budget per partition (on the step) and per run (on the job), a count or a percentage of the items
 * handled so far, fails the partition when a chunk would go over it. An operator lists quarantined
 * items (`chunkwise quarantine <run>`) and re-runs them after a fix (`chunkwise quarantine retry <run>`).
 *
 * @since 0.1.0
 */
import { Cause, Effect, Exit, Option } from "effect"
import * as Errors from "./Errors.js"

/** A skip budget as declared: a count of items, or a percentage of the items handled so far (`"0.5%"`). */
export type Budget = number | `${number}%`

/** A budget as the store checks it; `text` is how it was declared, for messages. */
export type Limit =
  | { readonly _tag: "Count"; readonly count: number; readonly text: string }
  | { readonly _tag: "Percent"; readonly percent: number; readonly text: string }

/** Validates a budget; `what` names the setting in the message, e.g. `Step "bill": skip.budget`. */
export const limitOf = (what: string, budget: Budget): Limit => {
  if (typeof budget === "number") {
    if (!Number.isInteger(budget) || budget < 0) {
      throw new TypeError(`${what} must be a count >= 0 or a percentage like "0.5%" (got ${budget})`)
    }
    return { _tag: "Count", count: budget, text: String(budget) }
  }
  const percent = typeof budget === "string" && budget.endsWith("%") ? Number(budget.slice(0, -1)) : Number.NaN
  if (!(Number.isFinite(percent) && percent >= 0 && percent <= 100)) {
    throw new TypeError(`${what} must be a count >= 0 or a percentage like "0.5%" (got ${JSON.stringify(budget)})`)
  }
  return { _tag: "Percent", percent, text: budget }
}

/** The items a limit allows when `handled` items were handled (set aside ones included). */
export const allowed = (limit: Limit, handled: number): number =>
  limit._tag === "Count" ? limit.count : Math.floor((handled * limit.percent) / 100)

/** An item a chunk sets aside, as the store records it. */
export interface Item {
  /** The step's `skip.id` of the item, as text. */
  readonly itemId: string
  /** The item, encoded with the step's `skip.item` schema. */
  readonly item: unknown
  readonly errorTag: string
  readonly message: string
  readonly runbookId: string
}

/** A chunk's items set aside, committed with its checkpoint (`StateStore.commitChunk`). */
export interface ChunkSkips {
  readonly items: ReadonlyArray<Item>
  /** The chunk's start cursor, encoded (`null` at the step's start): an operator's re-run gets it back. */
  readonly cursor: unknown
  /** The unit's key range, encoded (`null` unless the step is split). */
  readonly range: unknown
  /** The step's budget for one partition. */
  readonly partitionBudget: Limit
  /** The job's budget for the run, if any. */
  readonly runBudget: Limit | undefined
}

/**
 * `quarantined`: set aside, waiting for an operator; `retry`: an operator asked for a re-run, a worker
 * will write it again; `resolved`: a re-run wrote it.
 */
export type Status = "quarantined" | "retry" | "resolved"

/** Every status, in lifecycle order. */
export const statuses: ReadonlyArray<Status> = ["quarantined", "retry", "resolved"]

/** A quarantined item as stored. Times are epoch ms from the store's clock. */
export interface Entry extends Item {
  readonly runId: string
  readonly step: string
  readonly partitionKey: string
  /** The unit that set it aside: the partition's, or one of its ranges. */
  readonly unitId: string
  readonly cursor: unknown
  readonly range: unknown
  readonly status: Status
  /** Times it was set aside: 1, plus one for every re-run that failed again. */
  readonly attempts: number
  readonly quarantinedAt: number
  readonly updatedAt: number
}

/** Which quarantined items to list or re-run. */
export interface Filter {
  readonly step?: string | undefined
  readonly partitions?: ReadonlyArray<string> | undefined
  readonly status?: ReadonlyArray<Status> | undefined
}

/** Quarantined items of a run by status, for `status`. */
export type Counts = Readonly<Record<Status, number>>

/** A count per status, all zero. */
export const emptyCounts = (): Record<Status, number> => ({ quarantined: 0, retry: 0, resolved: 0 })

/** The unit that re-runs one partition's quarantined items of one step. */
export const itemsUnitId = (partitionUnitId: string, step: string): string => `${partitionUnitId}~items.${step}`

/** Items set aside and items handled in one budget's scope, this chunk's counted. */
export interface Tally {
  readonly skipped: number
  readonly handled: number
}

/**
 * The budget check every store runs in a chunk's commit: the partition's budget, then the run's (when
 * the job has one). Returns the error to fail the commit with (naming at most 10 of the chunk's items),
 * or `undefined` when the chunk fits.
 */
export const overBudget = (check: {
  readonly budgets: { readonly partition: Limit; readonly run: Limit | undefined }
  readonly partition: Tally
  readonly run: Tally
  readonly step: string
  readonly partitionKey: string
  readonly items: ReadonlyArray<Item>
}): Errors.SkipBudgetExceeded | undefined => {
  const scopes = [
    { scope: "partition" as const, limit: check.budgets.partition, tally: check.partition },
    ...(check.budgets.run === undefined ? [] : [{ scope: "run" as const, limit: check.budgets.run, tally: check.run }])
  ]
  for (const { limit, scope, tally } of scopes) {
    const allowedNow = allowed(limit, tally.handled)
    if (tally.skipped > allowedNow) {
      const first = check.items[0]
      return new Errors.SkipBudgetExceeded({
        step: check.step,
        partition: check.partitionKey,
        scope,
        skipped: tally.skipped,
        allowed: allowedNow,
        budget: limit.text,
        items: check.items.slice(0, 10).map((item) => item.itemId),
        error: first === undefined ? "" : `${first.errorTag}: ${first.message}`
      })
    }
  }
  return undefined
}

/** What `isolate` found: the items that write, and those that fail with a skippable error. */
export interface Isolated<I> {
  readonly good: ReadonlyArray<I>
  readonly bad: ReadonlyArray<{ readonly item: I; readonly error: unknown }>
  /** Probes it took (each a savepoint, a write and a rollback). */
  readonly probes: number
}

/**
 * D17: finds the items of a chunk that make `write` fail with a skippable error, without a savepoint
 * per item. It probes halves in savepoints that `probe` always rolls back (so at most one is live at a
 * time, however large the chunk), down to single items: about `2·k·log2(n/k)` probes for `k` bad items
 * of `n`. With `firstFailed` (the chunk's first `write` already failed) several items start from their
 * halves; otherwise the whole set is probed first, and one probe is all it takes when every item writes.
 * A probe that fails with another error fails the isolation with it: the chunk fails as any chunk does.
 * Items that fail only together (two halves that write alone) are all good here; the final write of
 * the good items then fails the chunk.
 */
export const isolate = <I, R>(options: {
  readonly items: ReadonlyArray<I>
  readonly write: (items: ReadonlyArray<I>) => Effect.Effect<void, unknown, R>
  readonly probe: <A, E, R2>(
    effect: Effect.Effect<A, E, R2>
  ) => Effect.Effect<Exit.Exit<A, E>, Errors.StoreUnavailable, R2>
  /** The error when `cause` is a failure of a skippable class; `None` otherwise. */
  readonly skippable: (cause: Cause.Cause<unknown>) => Option.Option<unknown>
  /** The whole set already failed to write with a skippable error. */
  readonly firstFailed: boolean
}): Effect.Effect<Isolated<I>, unknown, R> =>
  Effect.gen(function*() {
    const good: Array<I> = []
    const bad: Array<{ readonly item: I; readonly error: unknown }> = []
    let probes = 0
    const probe = (slice: ReadonlyArray<I>): Effect.Effect<void, unknown, R> =>
      Effect.gen(function*() {
        probes += 1
        const exit = yield* options.probe(options.write(slice))
        if (Exit.isSuccess(exit)) {
          good.push(...slice)
          return
        }
        const error = options.skippable(exit.cause)
        if (Option.isNone(error)) return yield* Effect.failCause(exit.cause)
        if (slice.length === 1) bad.push({ item: slice[0]!, error: error.value })
        else yield* halves(slice)
      })
    const halves = (slice: ReadonlyArray<I>): Effect.Effect<void, unknown, R> =>
      Effect.zipRight(
        probe(slice.slice(0, Math.ceil(slice.length / 2))),
        Effect.suspend(() => probe(slice.slice(Math.ceil(slice.length / 2))))
      )
    if (options.firstFailed && options.items.length > 1) yield* halves(options.items)
    else if (options.items.length > 0) yield* probe(options.items)
    return { good, bad, probes }
  })

/** The failure of a skippable class in `cause`, if that is what it is. */
export const skippableIn = (tags: ReadonlySet<string>, cause: Cause.Cause<unknown>): Option.Option<unknown> =>
  Option.filter(
    Cause.failureOption(cause),
    (error) =>
      typeof error === "object" && error !== null && typeof (error as { _tag?: unknown })._tag === "string" &&
      tags.has((error as { _tag: string })._tag)
  )
