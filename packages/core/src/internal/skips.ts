/**
 * The worker's side of item-level skips (D17): a skip step's first try, its isolation pass, and one
 * chunk of an operator's re-run of quarantined items. Each returns what the chunk commits: the next
 * cursor, the items handled and the quarantine changes.
 */
import { Cause, Effect, Either, Option, ParseResult, Schema } from "effect"
import * as Errors from "../Errors.js"
import type * as Job from "../Job.js"
import * as Quarantine from "../Quarantine.js"
import type { ChunkQuarantine, StateStoreShape } from "../StateStore.js"
import * as Step from "../Step.js"
import { classify } from "./classify.js"

/** What a chunk of a skip step commits. */
export interface Outcome {
  readonly next: unknown
  readonly items: number
  readonly quarantine?: ChunkQuarantine | undefined
}

/**
 * The first try failed with a skippable error: the worker rolls the chunk back and runs the isolation
 * pass. Never leaves the worker, never recorded as a failure.
 */
export class IsolateChunk {
  readonly _tag = "chunkwise/IsolateChunk"
  constructor(readonly skip: Step.Skipper<unknown, unknown, unknown>) {}
}

type Ctx = Step.ChunkContext<unknown, unknown, unknown>

/** A skip step's chunk as any other: read, write. A write that fails with a skippable error asks for isolation. */
export const firstTry = (skip: Step.Skipper<unknown, unknown, unknown>, ctx: Ctx) =>
  Effect.flatMap(skip.read(ctx), ({ items, next }): Effect.Effect<Outcome, unknown, unknown> =>
    items.length === 0
      ? Effect.succeed({ next, items: 0 })
      : skip.write(items, ctx).pipe(
        Effect.catchAllCause((cause) =>
          Option.isSome(Quarantine.skippableIn(skip.tags, cause))
            ? Effect.fail(new IsolateChunk(skip))
            : Effect.failCause(cause)
        ),
        Effect.as({ next, items: items.length })
      ))

/**
 * The isolation pass, in a new transaction: reads the chunk again, finds its bad items by bisection,
 * writes the good ones and returns the bad ones to set aside with the checkpoint, under the budgets.
 * `cursor` and `range` are the chunk's start cursor and the unit's range, encoded.
 */
export const isolateChunk = (
  store: StateStoreShape,
  job: Job.Any,
  skip: Step.Skipper<unknown, unknown, unknown>,
  ctx: Ctx,
  origin: { readonly cursor: unknown; readonly range: unknown }
): Effect.Effect<Outcome, unknown, unknown> =>
  Effect.gen(function*() {
    const { items, next } = yield* skip.read(ctx)
    const found = yield* Quarantine.isolate({
      items,
      write: (some) => skip.write(some, ctx),
      probe: store.probe,
      skippable: (cause) => Quarantine.skippableIn(skip.tags, cause),
      firstFailed: true
    })
    if (found.good.length > 0) yield* skip.write(found.good, ctx)
    const setAside = found.bad.map(({ error, item }) => toItem(job, ctx.step, skip, skip.idOf(item), item, error))
    yield* Effect.logInfo(
      `chunkwise: set aside ${setAside.length} of ${items.length} items (${found.probes} probes): ` +
        setAside.slice(0, 10).map((i) => i.itemId).join(", ")
    )
    return {
      next,
      items: items.length,
      quarantine: {
        items: setAside,
        ...origin,
        budgets: { partition: skip.budget, run: job.skipBudget }
      }
    }
  })

/**
 * One chunk of an operator's re-run (an `items` unit): takes up to `ctx.chunkSize` of the partition's
 * items in `retry` that a chunk set aside together, hands them to `write` with that chunk's cursor and
 * range, and marks those that wrote `resolved`; the others are set aside again. `Step.done` when none
 * is left.
 */
export const rerunChunk = (
  store: StateStoreShape,
  job: Job.Any,
  step: Step.Chunked<unknown, unknown, unknown>,
  ctx: Ctx
): Effect.Effect<Outcome, unknown, unknown> =>
  Effect.gen(function*() {
    const waiting = yield* store.listQuarantine(ctx.runId, {
      step: step.name,
      partitions: [ctx.partition.key],
      status: ["retry"],
      limit: ctx.chunkSize
    })
    if (waiting.length === 0) return { next: Step.done, items: 0 }
    // Items a chunk set aside together share its cursor and range: write them as that chunk did.
    const origin = JSON.stringify([waiting[0]!.cursor, waiting[0]!.range])
    const batch = waiting.filter((entry) => JSON.stringify([entry.cursor, entry.range]) === origin)
    const unusable = (reason: string) => (entry: Quarantine.Entry) =>
      toItem(
        job,
        step.name,
        undefined,
        entry.itemId,
        entry.item,
        new Errors.ItemNotRerun({
          step: step.name,
          item: entry.itemId,
          reason
        })
      )
    const skip = step.skip
    if (skip === undefined) {
      const reason = "the deployed step does not declare skip, so it has no item schema to decode it with"
      return yield* setAsideOnly(ctx, batch.map(unusable(reason)))
    }
    const cursor = batch[0]!.cursor === null
      ? Either.right(step.start)
      : Schema.decodeUnknownEither(step.cursor)(batch[0]!.cursor)
    const range = batch[0]!.range === null || step.split === undefined
      ? Either.right(Step.everything)
      : Schema.decodeUnknownEither(step.split.range)(batch[0]!.range)
    if (Either.isLeft(cursor) || Either.isLeft(range)) {
      const error = Either.isLeft(cursor) ? cursor.left : (range as Either.Left<ParseResult.ParseError, unknown>).left
      return yield* setAsideOnly(
        ctx,
        batch.map(unusable(`its chunk's cursor or range no longer decodes: ${error.message}`))
      )
    }
    const decoded: Array<{ readonly entry: Quarantine.Entry; readonly item: unknown }> = []
    const undecodable: Array<Quarantine.Item> = []
    for (const entry of batch) {
      const item = Schema.decodeUnknownEither(skip.item)(entry.item)
      if (Either.isRight(item)) decoded.push({ entry, item: item.right })
      else undecodable.push(unusable(`it does not decode with the step's item schema: ${item.left.message}`)(entry))
    }
    const chunkCtx: Ctx = { ...ctx, cursor: cursor.right, range: range.right }
    const found = yield* Quarantine.isolate({
      items: decoded,
      write: (some) => skip.write(some.map((d) => d.item), chunkCtx),
      probe: store.probe,
      skippable: (c) => Quarantine.skippableIn(skip.tags, c),
      firstFailed: false
    })
    if (found.good.length > 0) yield* skip.write(found.good.map((d) => d.item), chunkCtx)
    return {
      next: ctx.cursor,
      items: batch.length,
      quarantine: {
        items: [
          ...undecodable,
          ...found.bad.map(({ error, item }) => toItem(job, step.name, skip, item.entry.itemId, item.item, error))
        ],
        resolved: found.good.map((d) => d.entry.itemId),
        cursor: null,
        range: null
      }
    }
  })

const setAsideOnly = (ctx: Ctx, items: ReadonlyArray<Quarantine.Item>): Effect.Effect<Outcome> =>
  Effect.succeed({ next: ctx.cursor, items: items.length, quarantine: { items, cursor: null, range: null } })

/**
 * An item set aside with its error, classified like a failure (its runbook). `skip` encodes it; without
 * one (an item already stored) `item` is kept as stored.
 */
const toItem = (
  job: Job.Any,
  step: string,
  skip: Step.Skipper<unknown, unknown, unknown> | undefined,
  itemId: string,
  item: unknown,
  error: unknown
): Quarantine.Item => {
  const classified = classify(job, Cause.fail(error), step)
  const encoded = skip === undefined ? Either.right(item) : Schema.encodeEither(skip.item)(item)
  return {
    itemId,
    item: Either.isRight(encoded)
      ? encoded.right ?? null
      : { unencodable: `the item does not encode with the step's item schema: ${encoded.left.message}` },
    errorTag: classified.tag,
    message: classified.message,
    runbookId: classified.runbook.id
  }
}
