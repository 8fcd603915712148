// Runs in a fresh service that installed @chunkwise/core from its packed tarball (scripts/pack-smoke.sh).
import { Job, QueueAdapter, Runner, StateStore, Step, Worker } from "@chunkwise/core"
import { Effect, Layer, Schema } from "effect"
const job = Job.make({
  name: "packed",
  params: Schema.Struct({}),
  partitions: () => ["a", "b"],
  steps: (
    step
  ) => [
    step.chunked("s", {
      cursor: Schema.Struct({ n: Schema.Number }),
      start: { n: 0 },
      transaction: "none",
      process: ({ cursor }) => Effect.succeed(cursor.n >= 3 ? Step.done : { n: cursor.n + 1 })
    })
  ]
})
const program = Effect.gen(function*() {
  yield* Worker.make({ jobs: [job], feedInterval: "20 millis", pollInterval: "20 millis" })
  const { runId } = yield* Runner.start(job, {})
  return yield* Runner.awaitTerminal(runId, { pollInterval: "20 millis" })
}).pipe(Effect.scoped, Effect.provide(Layer.merge(StateStore.layerMemory, QueueAdapter.layerMemory())))
const p = await Effect.runPromise(program)
if (p.run.status !== "succeeded" || p.chunks !== 8) {
  throw new Error(`unexpected result: ${p.run.status}, ${p.chunks} chunks`)
}
console.log("packed:", p.run.status, p.chunks)
