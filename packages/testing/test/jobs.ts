/**
 * Small jobs the harness tests explore: one that keeps the guarantees (chunk transactions on the
 * in-memory database), and one with a deliberate bug (writes in mode `none` without the ledger).
 */
import { Job, MemoryDatabase, Runbook, Step } from "@chunkwise/core"
import { Effect, Option, Schema } from "effect"

const bump = (table: string, key: string) =>
  Effect.flatMap(
    MemoryDatabase.MemoryDatabase,
    (db) =>
      Effect.flatMap(db.get(table, key), (seen) => db.put(table, key, Option.getOrElse(seen, () => 0) as number + 1))
  )

/**
 * `partitions` partitions × `items` items, applied `chunkSize` at a time, then a summary per partition.
 * With `rangeSize`, the apply step splits every partition into ranges of that many item indexes; each
 * range applies its items only.
 */
export const counting = (options: {
  readonly partitions: number
  readonly items: number
  readonly chunkSize: number
  readonly mode: "chunk" | "none"
  readonly rangeSize?: number
}) =>
  Job.make({
    name: `counting-${options.mode}`,
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => Array.from({ length: options.partitions }, (_, i) => ({ key: `p${i}`, weight: i + 1 })),
    steps: (step) => [
      step.chunked("apply", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: options.chunkSize,
        transaction: options.mode,
        split: options.rangeSize === undefined ? undefined : {
          key: Schema.Number,
          ranges: () =>
            Effect.succeed(Step.rangesAt(
              Array.from(
                { length: Math.ceil(options.items / options.rangeSize!) - 1 },
                (_, i) => (i + 1) * options.rangeSize!
              )
            ))
        },
        process: (ctx) =>
          Effect.gen(function*() {
            const from = Math.max(ctx.cursor.next, ctx.range.from ?? 0)
            const last = Math.min(ctx.range.to ?? options.items, options.items)
            const end = Math.min(from + ctx.chunkSize, last)
            for (let i = from; i < end; i++) yield* bump("applied", `${ctx.partition.key}-${i}`)
            return Step.advance(end >= last ? Step.done : { next: end }, end - from)
          })
      }),
      step.single("summarise", {
        transaction: options.mode,
        run: (ctx) => bump("summaries", ctx.partition.key)
      })
    ],
    concurrency: { perWorker: 2 },
    onComplete: (ctx) => ctx.outcome === "succeeded" ? bump("completions", "run") : Effect.void
  })

/** What a counting job leaves behind: how many times each item, summary and completion was applied. */
export const observeCounts = Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) =>
  Effect.all({
    applied: Effect.map(db.rows("applied"), (rows) => Object.fromEntries(rows)),
    summaries: Effect.map(db.rows("summaries"), (rows) => Object.fromEntries(rows)),
    completions: Effect.map(db.rows("completions"), (rows) => Object.fromEntries(rows))
  }))

/** An item the `skipping` job's write refuses. */
export class InvalidItem extends Schema.TaggedError<InvalidItem>()("InvalidItem", { item: Schema.Number }) {}

/**
 * `partitions` × `items` items read and written `chunkSize` at a time; the write applies items one by
 * one and refuses those in `bad` with `InvalidItem`, which the step sets aside (at most `bad.length`
 * per partition).
 */
export const skipping = (options: {
  readonly partitions: number
  readonly items: number
  readonly chunkSize: number
  readonly bad: ReadonlyArray<number>
}) =>
  Job.make({
    name: "skipping",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => Array.from({ length: options.partitions }, (_, i) => ({ key: `p${i}`, weight: i + 1 })),
    errors: [Runbook.make(InvalidItem, {
      id: "test-invalid-item",
      title: "An item the write refuses",
      severity: "ticket",
      meaning: "Test data.",
      steps: ["None: it is a test."]
    })],
    steps: (step) => [
      step.chunked("apply", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: options.chunkSize,
        transaction: "chunk",
        read: (ctx) =>
          Effect.sync(() => {
            const end = Math.min(ctx.cursor.next + ctx.chunkSize, options.items)
            const items = Array.from({ length: end - ctx.cursor.next }, (_, i) => ctx.cursor.next + i)
            return { items, next: end >= options.items ? Step.done : { next: end } }
          }),
        write: (items, ctx) =>
          Effect.forEach(items, (i) =>
            Effect.zipRight(
              bump("applied", `${ctx.partition.key}-${i}`),
              options.bad.includes(i) ? Effect.fail(new InvalidItem({ item: i })) : Effect.void
            ), { discard: true }),
        skip: { on: [InvalidItem], item: Schema.Number, id: (i) => i, budget: options.bad.length }
      })
    ],
    concurrency: { perWorker: 2 },
    onComplete: (ctx) => ctx.outcome === "succeeded" ? bump("completions", "run") : Effect.void
  })
