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
import { Effect } from "effect"
import type { Duration, Schema } from "effect"

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

/** What a chunked step's effect receives: the step context plus the cursor and the chunk size. */
export interface ChunkContext<P, C> extends StepContext<P> {
  readonly cursor: C
  readonly chunkSize: number
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
}

/** Options of a chunked step whose `process` does its own set-based work for one chunk. */
export interface ProcessOptions<P, C, CI, R> extends CommonOptions {
  /** The cursor's schema: the cursor is stored encoded, so it must round-trip through JSON. */
  readonly cursor: Schema.Schema<C, CI, never>
  /** Where the step starts. */
  readonly start: NoInfer<C>
  /** Items per chunk (default 500). */
  readonly chunkSize?: number | undefined
  /** Does one chunk from `ctx.cursor` and returns the next cursor, or `Step.done`. */
  process(ctx: ChunkContext<P, C>): Effect.Effect<Progress<NoInfer<C>>, unknown, R>
}

/** Options of a chunked step whose items pass through the framework: `read` a chunk, then `write` it. */
export interface ReadWriteOptions<P, C, CI, I, R> extends CommonOptions {
  readonly cursor: Schema.Schema<C, CI, never>
  readonly start: NoInfer<C>
  readonly chunkSize?: number | undefined
  /** Reads at most `ctx.chunkSize` items from `ctx.cursor`; `next` is the cursor after them, or `Step.done`. */
  read(
    ctx: ChunkContext<P, C>
  ): Effect.Effect<{ readonly items: ReadonlyArray<I>; readonly next: C | Done }, unknown, R>
  /** Writes the items read; in mode `"chunk"` it commits with the checkpoint. */
  write(items: ReadonlyArray<I>, ctx: ChunkContext<P, C>): Effect.Effect<void, unknown, R>
}

/** A chunked step. */
export interface Chunked<P, C, R> {
  readonly _tag: "Chunked"
  readonly name: string
  readonly transaction: TransactionMode
  readonly cursor: Schema.Schema<C, unknown, never>
  readonly start: C
  readonly chunkSize: number
  readonly timeout: Duration.DurationInput | undefined
  readonly idempotencyKey: ((input: KeyInput) => string) | undefined
  /** One chunk: the user's process, or read then write. */
  runChunk(ctx: ChunkContext<P, C>): Effect.Effect<{ readonly next: C | Done; readonly items: number }, unknown, R>
}

/** A single step: one effect. */
export interface Single<P, R> {
  readonly _tag: "Single"
  readonly name: string
  readonly transaction: TransactionMode
  readonly timeout: Duration.DurationInput | undefined
  readonly idempotencyKey: ((input: KeyInput) => string) | undefined
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

const checkChunkSize = (name: string, chunkSize: number) => {
  if (!Number.isInteger(chunkSize) || chunkSize < 1) {
    throw new TypeError(`Step "${name}": chunkSize must be a positive integer (got ${chunkSize})`)
  }
}

/**
 * A chunked step: a cursor-driven loop that commits a checkpoint after every chunk.
 *
 * Give either `process` (the step does its own set-based work for one chunk and returns the next
 * cursor; the fast path for SQL-heavy steps) or `read` + `write`.
 */
export function chunked<P, C, CI, R>(name: string, options: ProcessOptions<P, C, CI, R>): Chunked<P, C, R>
export function chunked<P, C, CI, I, R>(name: string, options: ReadWriteOptions<P, C, CI, I, R>): Chunked<P, C, R>
export function chunked<P, C, CI, I, R>(
  name: string,
  options: ProcessOptions<P, C, CI, R> | ReadWriteOptions<P, C, CI, I, R>
): Chunked<P, C, R> {
  checkName(name)
  const chunkSize = options.chunkSize ?? 500
  checkChunkSize(name, chunkSize)
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
    transaction: options.transaction,
    cursor: options.cursor as Schema.Schema<C, unknown, never>,
    start: options.start,
    chunkSize,
    timeout: options.timeout,
    idempotencyKey: options.idempotencyKey,
    runChunk
  }
}

/** Options of a single step. */
export interface SingleOptions<P, R> extends CommonOptions {
  run(ctx: StepContext<P>): Effect.Effect<void, unknown, R>
}

/** A single step: one effect, committed like one chunk. */
export const single = <P, R>(name: string, options: SingleOptions<P, R>): Single<P, R> => {
  checkName(name)
  return {
    _tag: "Single",
    name,
    transaction: options.transaction,
    timeout: options.timeout,
    idempotencyKey: options.idempotencyKey,
    run: (ctx) => options.run(ctx)
  }
}

/**
 * `Step` with the job's params type fixed, handed to `Job.make({ steps: (step) => [...] })` so that
 * every step's `params` is typed without annotations.
 */
export interface Builder<P> {
  chunked<C, CI, R>(name: string, options: ProcessOptions<P, C, CI, R>): Chunked<P, C, R>
  chunked<C, CI, I, R>(name: string, options: ReadWriteOptions<P, C, CI, I, R>): Chunked<P, C, R>
  single<R>(name: string, options: SingleOptions<P, R>): Single<P, R>
  readonly done: Done
  advance<C>(next: C | Done, items: number): Advance<C>
}

/** @internal */
export const builder = <P>(): Builder<P> => ({ chunked, single, done, advance })
