/**
 * Steps: the ordered stages of a partition's work. A `chunked` step walks its partition's data from a
 * cursor to the next, committing a checkpoint after every chunk; a `single` step is one effect.
 *
 * Transaction modes:
 * - `"chunk"`: the step's database writes, the checkpoint and the ledger entry commit in one
 *   transaction. Database effects happen exactly once, even under crashes and duplicate deliveries.
 * - `"none"`: the checkpoint commits after the step's effect. The effect may run again after a crash,
 *   always with the same `idempotencyKey`; the step makes its effects idempotent with it.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Schema } from "effect"
import { initialSize, type Sizing } from "./internal/chunkSizer.js"
import { durationMs, positiveIntProblem } from "./internal/settings.js"
import * as Quarantine from "./Quarantine.js"
import { invalidResourceName } from "./ResourceLimiter.js"

export type { Sizing } from "./internal/chunkSizer.js"

/** A partition as a step sees it. */
export interface Partition {
  readonly key: string
  readonly weight: number
}

/** How a step's effects commit. See the module doc. */
export type TransactionMode = "chunk" | "none"

/** What every step's effect receives. */
export interface StepContext<P> {
  readonly job: string
  readonly runId: string
  readonly params: P
  readonly partition: Partition
  readonly step: string
  /**
   * Stable across every attempt of this chunk (crashes, redeliveries, retries):
   * `"cw1_" + base32(sha256(job, runId, unitId, step, generation, chunkSeq))` unless the step overrides it.
   */
  readonly idempotencyKey: string
  /** A per-item key derived from `idempotencyKey`, for external calls made once per item. */
  readonly itemKey: (itemId: string | number | bigint) => string
  /** 1 for the first execution of this chunk, +1 for every failed or abandoned one. */
  readonly attempt: number
  /** Grows with every claim of the unit; pass it to systems that accept conditional writes. */
  readonly fencingToken: number
  /** The number of chunks of this step already committed in this unit. */
  readonly chunkSeq: number
}

/** Keys a split step cuts ranges on; they compare as numbers, bigints, strings or dates. */
export type RangeKey = number | bigint | string | Date

/** A half-open key range `[from, to)` of a split step; `null` is unbounded on that side. */
export interface Range<K> {
  readonly from: K | null
  readonly to: K | null
}

/** The range of a step that is not split, or of a partition that runs as one unit: every key. */
export const everything: Range<never> = { from: null, to: null }

/** What a split step's `ranges` receives. */
export interface SplitContext<P> {
  readonly job: string
  readonly runId: string
  readonly params: P
  readonly partition: Partition
  readonly step: string
}

/**
 * Lets one partition's chunked step run as several key ranges in parallel, each its own unit with its
 * own lease and checkpoint; the partition's next step starts once every range is done.
 */
export interface SplitOptions<P, K extends RangeKey, KI, R> {
  /** The key's schema: ranges are stored encoded, so keys must round-trip through JSON. */
  readonly key: Schema.Schema<K, KI, never>
  /**
   * The ranges of a partition, asked once when the partition reaches the step. They must cover every
   * key exactly once (build them with `Step.rangesAt(points)`); one range runs the partition as one unit.
   * Each range's chunks start at the step's `start` cursor and must read only keys in `ctx.range`.
   */
  ranges(ctx: SplitContext<P>): Effect.Effect<ReadonlyArray<Range<NoInfer<K>>>, unknown, R>
}

/** At most this many ranges per split: each is a unit row, a lease and a message. */
export const MAX_RANGES = 1000

/**
 * Ranges that cover every key, cut at `points` (ascending): `[null, p1), [p1, p2), …, [pn, null)`.
 * No points: one range, the whole partition.
 */
export const rangesAt = <K extends RangeKey>(points: ReadonlyArray<K>): ReadonlyArray<Range<K>> =>
  Array.from({ length: points.length + 1 }, (_, i) => ({ from: points[i - 1] ?? null, to: points[i] ?? null }))

const comparable = (key: unknown): number | bigint | string | undefined =>
  key instanceof Date
    ? Number.isNaN(key.getTime()) ? undefined : key.getTime()
    : typeof key === "number"
    ? Number.isNaN(key) ? undefined : key
    : typeof key === "bigint" || typeof key === "string"
    ? key
    : undefined

const showKey = (key: unknown): string =>
  key === null ? "unbounded" : key instanceof Date ? key.toISOString() : typeof key === "string"
    ? JSON.stringify(key)
    : String(key)

const showRange = (range: Range<unknown>): string =>
  `[${range.from === null ? "null" : showKey(range.from)}, ${range.to === null ? "null" : showKey(range.to)})`

/**
 * Checks that `ranges` cover every key exactly once: ranges in any order, each `[from, to)` non-empty,
 * the lowest starting at `null`, each ending where the next starts, the highest ending at `null`.
 * Returns them in key order, or the problem in words.
 * @internal
 */
export const checkRanges = (
  ranges: ReadonlyArray<Range<unknown>>
): { readonly _tag: "Ranges"; readonly ranges: ReadonlyArray<Range<unknown>> } | {
  readonly _tag: "Problem"
  readonly problem: string
} => {
  const problem = (text: string) => ({ _tag: "Problem", problem: text }) as const
  if (!Array.isArray(ranges) || ranges.length === 0) {
    return problem("it returned no ranges; return one range to run the partition whole")
  }
  if (ranges.length > MAX_RANGES) return problem(`it returned ${ranges.length} ranges, more than ${MAX_RANGES}`)
  type End = number | bigint | string | null
  const keyed: Array<{ readonly range: Range<unknown>; readonly from: End; readonly to: End }> = []
  let kind: string | undefined
  for (const range of ranges) {
    if (typeof range !== "object" || range === null || !("from" in range) || !("to" in range)) {
      return problem(`${String(range)} is not a range { from, to }`)
    }
    const ends: Array<End | undefined> = [range.from, range.to].map((key) => key === null ? null : comparable(key))
    for (const [i, end] of ends.entries()) {
      if (end === undefined) {
        return problem(
          `range ${showRange(range)} has a key that does not compare (${
            showKey(i === 0 ? range.from : range.to)
          }); keys are numbers, bigints, strings or dates, and null for unbounded`
        )
      }
      if (end !== null) {
        // Dates compare by their time, so keep them apart from numbers by their own kind.
        const endKind = (i === 0 ? range.from : range.to) instanceof Date ? "date" : typeof end
        if (kind !== undefined && endKind !== kind) return problem(`range ${showRange(range)} mixes key types`)
        kind = endKind
      }
    }
    const [from, to] = ends as [End, End]
    if (from !== null && to !== null && !(from < to)) return problem(`range ${showRange(range)} is empty or reversed`)
    keyed.push({ range, from, to })
  }
  keyed.sort((a, b) => (a.from === null ? -1 : b.from === null ? 1 : a.from < b.from ? -1 : a.from > b.from ? 1 : 0))
  const first = keyed[0]!
  if (first.from !== null) {
    return problem(`keys below ${showKey(first.range.from)} are in no range; start the lowest range at null`)
  }
  for (let i = 1; i < keyed.length; i++) {
    const before = keyed[i - 1]!
    const after = keyed[i]!
    if (before.to === null || after.from === null || before.to > after.from) {
      return problem(`ranges ${showRange(before.range)} and ${showRange(after.range)} overlap`)
    }
    if (before.to < after.from) {
      return problem(`keys from ${showKey(before.range.to)} to ${showKey(after.range.from)} are in no range`)
    }
  }
  const last = keyed[keyed.length - 1]!
  if (last.to !== null) {
    return problem(`keys from ${showKey(last.range.to)} up are in no range; end the highest range at null`)
  }
  return { _tag: "Ranges", ranges: keyed.map((k) => k.range) }
}

/** What a chunked step's effect receives: the step context plus the cursor and the chunk size. */
export interface ChunkContext<P, C, K = never> extends StepContext<P> {
  readonly cursor: C
  /**
   * The key range this unit covers: `Step.everything` unless the step is split. A split step's chunks
   * must read only keys in it (`from` inclusive, `to` exclusive, `null` unbounded).
   */
  readonly range: Range<K>
  /** Items this chunk should take at most (it changes from chunk to chunk when the size adapts). */
  readonly chunkSize: number
  /**
   * With `chunkTime`: when this chunk should be done, in epoch ms on Effect's `Clock`. A step that works
   * item by item can stop early and return the cursor it reached; set-based steps can ignore it (the
   * next chunk's size shrinks instead).
   */
  readonly deadline: number | undefined
}

/** Chunk size bounds for a step that lets chunkwise adapt its chunk size (needs `chunkTime`). */
export interface AdaptiveChunkSize {
  readonly min: number
  readonly max: number
  /** The first chunk's size (default `min`). */
  readonly initial?: number | undefined
}

const DoneTypeId: unique symbol = Symbol.for("chunkwise/Step/done")

/** The type of `Step.done` (an object, so it never widens the way a symbol does in inferred types). */
export interface Done {
  readonly [DoneTypeId]: typeof DoneTypeId
}

/** Returned by a chunk to say the step has no more data. Compared by identity. */
export const done: Done = { [DoneTypeId]: DoneTypeId }

const AdvanceTypeId: unique symbol = Symbol.for("chunkwise/Step/Advance")

/** A chunk's result with the number of items it handled, for metrics and progress. */
export interface Advance<C> {
  readonly [AdvanceTypeId]: typeof AdvanceTypeId
  readonly next: C | Done
  readonly items: number
}

/** What a `process` function returns: the next cursor, `Step.done`, or `Step.advance(next, items)`. */
export type Progress<C> = C | Done | Advance<C>

/** Reports the next cursor (or `Step.done`) together with the number of items this chunk handled. */
export const advance = <C>(next: C | Done, items: number): Advance<C> => ({
  [AdvanceTypeId]: AdvanceTypeId,
  next,
  items
})

/** @internal */
export const toAdvance = <C>(progress: Progress<C>): { readonly next: C | Done; readonly items: number } =>
  typeof progress === "object" && progress !== null && AdvanceTypeId in progress
    ? progress as Advance<C>
    : { next: progress as C | Done, items: 0 }

/** The inputs of a custom idempotency key. */
export interface KeyInput {
  readonly job: string
  readonly runId: string
  readonly unitId: string
  readonly partition: string
  readonly step: string
  readonly generation: number
  readonly chunkSeq: number
}

interface CommonOptions {
  /** `"chunk"`: writes + checkpoint + ledger in one transaction. `"none"`: the step is idempotent itself. */
  readonly transaction: TransactionMode
  /** Interrupt a chunk (or the single effect) that runs longer than this; it fails with `StepTimeout`. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Overrides the default idempotency key; it must give the same key for the same input, always. */
  readonly idempotencyKey?: ((input: KeyInput) => string) | undefined
  /**
   * The shared resources each chunk (or the single effect) loads, e.g. `["primary-db", "billing-api"]`:
   * the worker takes a permit on each before the chunk's transaction begins and gives it back after
   * the commit, so the limits of `Worker.make({ limits })` (or an operator's) hold across all workers.
   */
  readonly resources?: ReadonlyArray<string> | undefined
}

/** Chunk size and time options of every chunked step. */
interface ChunkingOptions {
  /**
   * Items per chunk (default 500), or bounds (`{ min, max }`) within which chunkwise adapts the size to
   * `chunkTime`.
   */
  readonly chunkSize?: number | AdaptiveChunkSize | undefined
  /**
   * How long a chunk's transaction should take (its lock time). With a number `chunkSize`: "at most N
   * items or this long": a chunk that took longer makes the next one smaller, down to 1, and sizes grow
   * back up to N. With bounds: the size adapts within them. `chunk` mode only: in mode `none` a chunk
   * redone after a crash must cover the same items as the first try, since they share a key.
   */
  readonly chunkTime?: Duration.DurationInput | undefined
}

/** Options every chunked step has: its cursor, and how it may split. */
interface CursorOptions<P, C, CI, R, K extends RangeKey, KI> {
  /** The cursor's schema: the cursor is stored encoded, so it must round-trip through JSON. */
  readonly cursor: Schema.Schema<C, CI, never>
  /** Where the step starts (every range of a split step starts here too). */
  readonly start: NoInfer<C>
  /** Run each partition's step as key ranges in parallel (see `SplitOptions`). */
  readonly split?: SplitOptions<P, K, KI, R> | undefined
}

/** Options of a chunked step whose `process` does its own set-based work for one chunk. */
export interface ProcessOptions<P, C, CI, R, K extends RangeKey = never, KI = never>
  extends CommonOptions, ChunkingOptions, CursorOptions<P, C, CI, R, K, KI>
{
  /** Does one chunk from `ctx.cursor` and returns the next cursor, or `Step.done`. */
  process(ctx: ChunkContext<P, C, K>): Effect.Effect<Progress<NoInfer<C>>, unknown, R>
}

/** Options of a chunked step whose items pass through the framework: `read` a chunk, then `write` it. */
export interface ReadWriteOptions<P, C, CI, I, R, K extends RangeKey = never, KI = never, II = never>
  extends CommonOptions, ChunkingOptions, CursorOptions<P, C, CI, R, K, KI>
{
  /** Reads at most `ctx.chunkSize` items from `ctx.cursor`; `next` is the cursor after them, or `Step.done`. */
  read(
    ctx: ChunkContext<P, C, K>
  ): Effect.Effect<{ readonly items: ReadonlyArray<I>; readonly next: C | Done }, unknown, R>
  /** Writes the items read; in mode `"chunk"` it commits with the checkpoint. */
  write(items: ReadonlyArray<I>, ctx: ChunkContext<P, C, K>): Effect.Effect<void, unknown, R>
  /** Set aside the items that make `write` fail with these error classes, instead of failing the chunk. */
  readonly skip?: SkipOptions<I, II> | undefined
}

/**
 * Item-level skips of a `read` + `write` step in mode `"chunk"` (see `Quarantine`). Never a default:
 * only the error classes in `on` are set aside, and `budget` bounds how many per partition.
 */
export interface SkipOptions<I, II> {
  /** The error classes whose items are set aside; each must be registered in the job's `errors`. */
  readonly on: ReadonlyArray<{ readonly _tag: string }>
  /** The item's schema: a quarantined item is stored encoded, and a re-run decodes it for `write`. */
  readonly item: Schema.Schema<I, II, never>
  /** The item's id, unique within its partition and step: how operators name it. */
  readonly id: (item: I) => string | number | bigint
  /**
   * Items one partition may set aside in this step before it fails: a count, or a percentage of the
   * items the partition's step has handled so far (`"0.5%"`; early chunks judge on few items).
   */
  readonly budget: Quarantine.Budget
}

/** A split step's ranges as the worker uses them: the key type erased, the range schema built. */
export interface Splitter<P, R> {
  /** `{ from, to }` with the key schema, each end nullable: how ranges are stored. */
  readonly range: Schema.Schema<Range<unknown>, unknown, never>
  ranges(ctx: SplitContext<P>): Effect.Effect<ReadonlyArray<Range<unknown>>, unknown, R>
}

/** A step's item-level skips as the worker uses them: the item type erased. */
export interface Skipper<P, C, R> {
  /** The tags of the error classes set aside. */
  readonly tags: ReadonlySet<string>
  readonly budget: Quarantine.Limit
  readonly item: Schema.Schema<unknown, unknown, never>
  readonly idOf: (item: unknown) => string
  read(ctx: ChunkContext<P, C, any>): Effect.Effect<
    { readonly items: ReadonlyArray<unknown>; readonly next: C | Done },
    unknown,
    R
  >
  write(items: ReadonlyArray<unknown>, ctx: ChunkContext<P, C, any>): Effect.Effect<void, unknown, R>
}

/** A chunked step. */
export interface Chunked<P, C, R> {
  readonly _tag: "Chunked"
  readonly name: string
  readonly transaction: TransactionMode
  readonly cursor: Schema.Schema<C, unknown, never>
  readonly start: C
  /** The first chunk's size. */
  readonly chunkSize: number
  /** How chunk sizes are chosen (fixed, or adapting to `chunkTime`). */
  readonly sizing: Sizing
  /** `chunkTime` in ms, when set. */
  readonly chunkTimeMs: number | undefined
  readonly timeout: Duration.DurationInput | undefined
  readonly idempotencyKey: ((input: KeyInput) => string) | undefined
  /** The resources each chunk loads (validated names, no duplicates). */
  readonly resources: ReadonlyArray<string>
  /** Set when the step may run as key ranges. */
  readonly split: Splitter<P, R> | undefined
  /** Set when the step sets bad items aside. */
  readonly skip: Skipper<P, C, R> | undefined
  /** One chunk: the user's process, or read then write. */
  runChunk(
    ctx: ChunkContext<P, C, any>
  ): Effect.Effect<{ readonly next: C | Done; readonly items: number }, unknown, R>
}

/** A single step: one effect. */
export interface Single<P, R> {
  readonly _tag: "Single"
  readonly name: string
  readonly transaction: TransactionMode
  readonly timeout: Duration.DurationInput | undefined
  readonly idempotencyKey: ((input: KeyInput) => string) | undefined
  /** The resources the effect loads (validated names, no duplicates). */
  readonly resources: ReadonlyArray<string>
  run(ctx: StepContext<P>): Effect.Effect<void, unknown, R>
}

/** Any step of a job with params `P` whose effects need `R`. */
export type Step<P, R> = Chunked<P, any, R> | Single<P, R>

/** The services a step's effects need. */
export type Context<S> = S extends Chunked<any, any, infer R> ? R : S extends Single<any, infer R> ? R : never

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

const checkName = (name: string) => {
  if (!NAME_PATTERN.test(name)) {
    throw new TypeError(
      `Step "${name}": a step name is 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit`
    )
  }
}

/**
 * Validates the options every step has: the transaction mode (a typo would run the step as `none` and
 * lose exactly-once) and the timeout. A bad one fails `Job.make` with the option and the fix.
 */
const commonOf = (name: string, options: CommonOptions): Pick<CommonOptions, "transaction" | "timeout"> => {
  if (options.transaction !== "chunk" && options.transaction !== "none") {
    throw new TypeError(
      `Step "${name}": transaction must be "chunk" (writes, checkpoint and ledger in one transaction) or ` +
        `"none" (the step is idempotent itself) (got ${JSON.stringify(options.transaction)})`
    )
  }
  if (options.timeout !== undefined) {
    const checked = durationMs("timeout", options.timeout, options.timeout)
    if ("problem" in checked) throw new TypeError(`Step "${name}": ${checked.problem}`)
  }
  return { transaction: options.transaction, timeout: options.timeout }
}

/** Validates `resources`; a bad name fails `Job.make` with the name and the fix. */
const resourcesOf = (name: string, resources: ReadonlyArray<string> | undefined): ReadonlyArray<string> => {
  if (resources === undefined) return []
  if (!Array.isArray(resources)) {
    throw new TypeError(`Step "${name}": resources must be an array of resource names, e.g. ["primary-db"]`)
  }
  for (const resource of resources) {
    const problem = invalidResourceName(resource)
    if (problem !== undefined) throw new TypeError(`Step "${name}": ${problem}`)
  }
  return [...new Set(resources)].sort()
}

const isPositiveInteger = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 1

/** Validates the chunking options; a bad one fails `Job.make` with the option and the fix. */
const sizingOf = (name: string, options: ChunkingOptions & CommonOptions): Sizing => {
  const size = options.chunkSize ?? 500
  const fail = (message: string): never => {
    throw new TypeError(`Step "${name}": ${message}`)
  }
  const chunkTime = options.chunkTime === undefined
    ? undefined
    : durationMs("chunkTime", options.chunkTime, options.chunkTime)
  if (chunkTime !== undefined && "problem" in chunkTime) fail(chunkTime.problem)
  const targetMs = chunkTime !== undefined && "ms" in chunkTime ? chunkTime.ms : undefined
  if (targetMs !== undefined && !Number.isFinite(targetMs)) {
    fail(`chunkTime must be a finite duration (got ${String(options.chunkTime)})`)
  }
  if (targetMs !== undefined && options.transaction !== "chunk") {
    fail(
      `chunkTime needs transaction "chunk": in mode "none" a chunk redone after a crash must cover the same ` +
        `items as its first try, because both share one idempotency key; use a fixed chunkSize instead`
    )
  }
  if (typeof size === "number") {
    const sizeProblem = positiveIntProblem("chunkSize", size)
    if (sizeProblem !== undefined) fail(sizeProblem)
    return targetMs === undefined
      ? { _tag: "Fixed", size }
      : { _tag: "Adaptive", min: 1, max: size, initial: size, targetMs }
  }
  const { initial, max, min } = size
  if (!isPositiveInteger(min) || !isPositiveInteger(max) || min > max) {
    fail(`chunkSize bounds must be positive integers with min <= max (got min ${min}, max ${max})`)
  }
  const first = initial ?? min
  if (!isPositiveInteger(first) || first < min || first > max) {
    fail(`chunkSize.initial must be an integer between min and max (got ${first})`)
  }
  if (targetMs === undefined) {
    fail(`chunkSize bounds need chunkTime, the chunk time to adapt to (e.g. chunkTime: "500 millis")`)
  }
  return { _tag: "Adaptive", min, max, initial: first, targetMs: targetMs! }
}

/**
 * A chunked step: a cursor-driven loop that commits a checkpoint after every chunk.
 *
 * Give either `process` (the step does its own set-based work for one chunk and returns the next
 * cursor; the fast path for SQL-heavy steps) or `read` + `write`.
 */
export function chunked<P, C, CI, R, K extends RangeKey = never, KI = never>(
  name: string,
  options: ProcessOptions<P, C, CI, R, K, KI>
): Chunked<P, C, R>
/**
 * A chunked step whose chunk is `read` (up to `chunkSize` items after the cursor, and the next cursor)
 * then `write` (the items, in the chunk's transaction in `chunk` mode); with `skip`, bad items are set
 * aside instead of failing the chunk.
 */
export function chunked<P, C, CI, I, R, K extends RangeKey = never, KI = never, II = never>(
  name: string,
  options: ReadWriteOptions<P, C, CI, I, R, K, KI, II>
): Chunked<P, C, R>
export function chunked<P, C, CI, I, R, K extends RangeKey, KI, II>(
  name: string,
  options: ProcessOptions<P, C, CI, R, K, KI> | ReadWriteOptions<P, C, CI, I, R, K, KI, II>
): Chunked<P, C, R> {
  checkName(name)
  const common = commonOf(name, options)
  const sizing = sizingOf(name, options)
  const split = options.split === undefined ? undefined : splitterOf(name, options.split)
  const runChunk: Chunked<P, C, R>["runChunk"] = "process" in options
    ? (ctx) => Effect.map(options.process(ctx), toAdvance)
    : (ctx) =>
      Effect.flatMap(options.read(ctx), ({ items, next }) =>
        items.length === 0
          ? Effect.succeed({ next, items: 0 })
          : Effect.as(options.write(items, ctx), { next, items: items.length }))
  return {
    _tag: "Chunked",
    name,
    transaction: common.transaction,
    cursor: options.cursor as Schema.Schema<C, unknown, never>,
    start: options.start,
    chunkSize: initialSize(sizing),
    sizing,
    chunkTimeMs: sizing._tag === "Adaptive" ? sizing.targetMs : undefined,
    timeout: common.timeout,
    idempotencyKey: options.idempotencyKey,
    resources: resourcesOf(name, options.resources),
    split,
    skip: "process" in options || options.skip === undefined ? undefined : skipperOf(name, options),
    runChunk
  }
}

/** Validates `skip`; a bad one fails `Job.make` with the option and the fix. */
const skipperOf = <P, C, CI, I, R, K extends RangeKey, KI, II>(
  name: string,
  options: ReadWriteOptions<P, C, CI, I, R, K, KI, II>
): Skipper<P, C, R> => {
  const skip = options.skip!
  const fail = (message: string): never => {
    throw new TypeError(`Step "${name}": ${message}`)
  }
  if (options.transaction !== "chunk") {
    fail(
      `skip needs transaction "chunk": bad items are found by writing halves of the chunk and rolling ` +
        `them back, which only a chunk transaction can undo`
    )
  }
  if (!Array.isArray(skip.on) || skip.on.length === 0 || skip.on.some((c) => typeof c?._tag !== "string")) {
    fail(`skip.on must list the error classes to set aside, e.g. skip: { on: [InvalidRecord], ... }`)
  }
  if (!Schema.isSchema(skip.item) || typeof skip.id !== "function") {
    fail(`skip needs an item schema and an id function, e.g. skip: { item: Record, id: (r) => r.id, ... }`)
  }
  return {
    tags: new Set(skip.on.map((c) => c._tag)),
    budget: Quarantine.limitOf(`Step "${name}": skip.budget`, skip.budget),
    item: skip.item as Schema.Schema<unknown, unknown, never>,
    idOf: (item) => String(skip.id(item as I)),
    read: (ctx) => options.read(ctx),
    write: (items, ctx) => options.write(items as ReadonlyArray<I>, ctx)
  }
}

/** Validates `split`; a bad one fails `Job.make` with the option and the fix. */
const splitterOf = <P, K extends RangeKey, KI, R>(name: string, split: SplitOptions<P, K, KI, R>): Splitter<P, R> => {
  if (!Schema.isSchema(split.key) || typeof split.ranges !== "function") {
    throw new TypeError(
      `Step "${name}": split needs a key schema and a ranges function, e.g. ` +
        `split: { key: Schema.Number, ranges: () => Effect.succeed(Step.rangesAt([1000])) }`
    )
  }
  const key = split.key as Schema.Schema<unknown, unknown, never>
  return {
    range: Schema.Struct({ from: Schema.NullOr(key), to: Schema.NullOr(key) }) as Schema.Schema<
      Range<unknown>,
      unknown,
      never
    >,
    ranges: (ctx) => split.ranges(ctx)
  }
}

/** Options of a single step. */
export interface SingleOptions<P, R> extends CommonOptions {
  run(ctx: StepContext<P>): Effect.Effect<void, unknown, R>
}

/** A single step: one effect, committed like one chunk. */
export const single = <P, R>(name: string, options: SingleOptions<P, R>): Single<P, R> => {
  checkName(name)
  const common = commonOf(name, options)
  return {
    _tag: "Single",
    name,
    transaction: common.transaction,
    timeout: common.timeout,
    idempotencyKey: options.idempotencyKey,
    resources: resourcesOf(name, options.resources),
    run: (ctx) => options.run(ctx)
  }
}

/**
 * `Step` with the job's params type fixed, handed to `Job.make({ steps: (step) => [...] })` so that
 * every step's `params` is typed without annotations.
 */
export interface Builder<P> {
  chunked<C, CI, R, K extends RangeKey = never, KI = never>(
    name: string,
    options: ProcessOptions<P, C, CI, R, K, KI>
  ): Chunked<P, C, R>
  chunked<C, CI, I, R, K extends RangeKey = never, KI = never, II = never>(
    name: string,
    options: ReadWriteOptions<P, C, CI, I, R, K, KI, II>
  ): Chunked<P, C, R>
  single<R>(name: string, options: SingleOptions<P, R>): Single<P, R>
  readonly done: Done
  advance<C>(next: C | Done, items: number): Advance<C>
  rangesAt<K extends RangeKey>(points: ReadonlyArray<K>): ReadonlyArray<Range<K>>
}

/** @internal */
export const builder = <P>(): Builder<P> => ({ chunked, single, done, advance, rangesAt })
