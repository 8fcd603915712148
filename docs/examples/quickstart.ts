// Quick start: a job of 3 partitions × 2 steps on the in-memory engine. Run: npx tsx docs/examples/quickstart.ts
import { Job, MemoryDatabase, QueueAdapter, Runner, StateStore, Step, Worker } from "@chunkwise/core"
import { Effect, Layer, Schema } from "effect"

export const countdown = Job.make({
  name: "countdown",
  params: Schema.Struct({ from: Schema.Number }),
  partitions: () => ["alpha", "beta", "gamma"],
  steps: (step) => [
    step.chunked("count", {
      cursor: Schema.Struct({ n: Schema.Number }),
      start: { n: 0 },
      chunkSize: 10,
      transaction: "chunk", // the writes below commit with the checkpoint, exactly once
      process: ({ chunkSize, cursor, params, partition }) =>
        Effect.gen(function*() {
          const db = yield* MemoryDatabase.MemoryDatabase
          const end = Math.min(cursor.n + chunkSize, params.from)
          for (let i = cursor.n; i < end; i++) yield* db.put("ticks", `${partition.key}-${i}`, i)
          return Step.advance(end >= params.from ? Step.done : { n: end }, end - cursor.n)
        })
    }),
    step.single("announce", {
      transaction: "none", // an external effect: it gets a stable idempotency key
      run: ({ idempotencyKey, partition }) => Effect.log(`${partition.key} done (key ${idempotencyKey.slice(0, 12)}…)`)
    })
  ]
})

/** Starts a worker, starts a run, waits for it and returns what it did. */
export const program: Effect.Effect<{ readonly status: string; readonly ticks: number }, unknown> = Effect.gen(
  function*() {
    yield* Worker.make({ jobs: [countdown], feedInterval: "50 millis", pollInterval: "50 millis" })
    const { runId } = yield* Runner.start(countdown, { from: 25 })
    const progress = yield* Runner.awaitTerminal(runId, { pollInterval: "50 millis" })
    const ticks = yield* Effect.flatMap(MemoryDatabase.MemoryDatabase, (db) => db.rows("ticks"))
    yield* Effect.log(`run ${runId}: ${progress.run.status}, ${progress.items} items in ${progress.chunks} chunks`)
    return { status: progress.run.status, ticks: ticks.length }
  }
).pipe(Effect.scoped, Effect.provide(Layer.merge(StateStore.layerMemory, QueueAdapter.layerMemory())))

if (import.meta.url === `file://${process.argv[1]}`) Effect.runPromise(program).then(console.log)
