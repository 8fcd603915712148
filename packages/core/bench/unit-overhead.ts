/**
 * Per-unit overhead of the Worker on the Postgres store: what a partition costs beyond the store's own
 * calls, in a job shaped like the billing example (a chunked step of one chunk, a single `chunk`-mode step
 * fused into it, a single `none`-mode step) whose steps do no work of their own. Prints figures; asserts
 * nothing. Run: npm run bench:units -w packages/core
 *
 * Contenders, ROUNDS rounds after one warm-up, their order rotated:
 *  - store:  the store's calls for each unit made directly, CONCURRENCY units at a time (claim, one
 *            transaction with the fused `commitChunk`, the `none` step's `commitChunk`): the floor
 *  - worker: the same job run by a Worker at CONCURRENCY (in-memory queue): the gap is the Worker's own
 *            path per unit (message, claim handling, spans, metrics, fibers, retries, keys)
 * Knobs: UNITS (2000), CONCURRENCY (4; the billing benchmark's best is 8), ROUNDS (3), ONLY (store or
 * worker, to profile one with node --cpu-prof).
 */
import { Effect, LogLevel, Schema } from "effect"
import { Job, Runner, StateStore, Step, Worker } from "../src/index.js"
import {
  CONCURRENCY,
  forClaimedUnits,
  makeCompletions,
  measure,
  median,
  rotated,
  ROUNDS,
  runOnStore
} from "./chunkData.js"

/** Partitions per run (each one unit). */
const UNITS = Number(process.env["UNITS"] ?? 2000)
const completions = makeCompletions()

const billingShaped = (name: string) =>
  Job.make({
    name,
    params: Schema.Struct({ round: Schema.Number }),
    partitions: () => Array.from({ length: UNITS }, (_, p) => String(p)),
    steps: (step) => [
      step.chunked("bill", {
        cursor: Schema.Struct({ after: Schema.Number }),
        start: { after: 0 },
        chunkSize: 1,
        transaction: "chunk",
        process: () => Effect.succeed(Step.advance<{ readonly after: number }>(Step.done, 1))
      }),
      step.single("issue", { transaction: "chunk", run: () => Effect.void }),
      step.single("notify", { transaction: "none", run: () => Effect.void })
    ],
    concurrency: { perWorker: CONCURRENCY },
    onComplete: completions.hook
  })
const workerJob = billingShaped("bench-units-worker")
const storeJob = billingShaped("bench-units-store")

/** Each unit through the store's calls alone, as the Worker makes them for this job. */
const storeOnly = (round: number) =>
  forClaimedUnits(storeJob, round, ({ lease, unit }) =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const key = (step: string) => `k-${round}-${unit.unitId}-${step}`
      yield* store.transaction(store.commitChunk({
        lease,
        from: { stepIndex: 0, chunkSeq: 0 },
        to: { stepIndex: 2, chunkSeq: 0, cursor: null },
        unitDone: false,
        items: 1,
        idempotencyKey: key("bill"),
        step: "bill",
        leaseMs: 60_000,
        fused: { step: "issue", idempotencyKey: key("issue") }
      }))
      yield* store.commitChunk({
        lease,
        from: { stepIndex: 2, chunkSeq: 0 },
        to: { stepIndex: 3, chunkSeq: 0, cursor: null },
        unitDone: true,
        items: 0,
        idempotencyKey: key("notify"),
        step: "notify",
        leaseMs: 60_000
      })
    }))

const viaWorker = (round: number) =>
  Effect.flatMap(Runner.start(workerJob, { round }), ({ runId }) => completions.awaitRun(runId))

const program = Effect.gen(function*() {
  const only = process.env["ONLY"]?.split(",")
  const all: ReadonlyArray<readonly [string, (round: number) => Effect.Effect<void, unknown, any>]> = [
    ["store", storeOnly],
    ["worker", viaWorker]
  ]
  const contenders = all.filter(([name]) => only === undefined || only.includes(name))
  if (contenders.some(([name]) => name === "worker")) {
    yield* Worker.make({ jobs: [workerJob], concurrency: CONCURRENCY })
  }
  const results = new Map(contenders.map(([name]) => [name, [] as Array<{ wallMs: number; cpuMs: number }>]))
  for (let round = -1; round < ROUNDS; round++) {
    for (let i = 0; i < contenders.length; i++) {
      const [name, run] = rotated(contenders, round, i)
      const measured = yield* measure(run(round))
      if (round >= 0) results.get(name)!.push(measured)
    }
  }
  console.log(
    `unit overhead: ${UNITS} partitions (one chunk, a fused single step, a none step; no work of their ` +
      `own), concurrency ${CONCURRENCY}, median of ${ROUNDS} rotated rounds after 1 warm-up`
  )
  const base = results.get("store")
  for (const [name, rounds] of results) {
    const wall = median(rounds.map((r) => r.wallMs))
    const cpuPerUnit = (median(rounds.map((r) => r.cpuMs)) / UNITS) * 1000
    const ratio = base === undefined ? "" : `  ${(wall / median(base.map((r) => r.wallMs))).toFixed(2)}x store`
    console.log(
      `  ${name.padEnd(7)} ${wall.toFixed(0).padStart(6)} ms${ratio}  node cpu ${cpuPerUnit.toFixed(0)} µs/unit  ` +
        `[${rounds.map((r) => r.wallMs.toFixed(0)).join(", ")}]`
    )
  }
}).pipe(Effect.scoped)

runOnStore("cw_units", program, LogLevel.Warning)
