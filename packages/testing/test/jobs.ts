/**
 * Small jobs the harness tests explore: one that keeps the guarantees (chunk transactions on the
 * in-memory database), and one with a deliberate bug (writes in mode `none` without the ledger).
 */
import { Job, MemoryDatabase, Step } from "@chunkwise/core"
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
