/**
 * Per-chunk overhead of chunkwise on the Postgres store, against hand-written loops doing the same SQL
 * (D20). Prints figures; asserts nothing. Run: npm run bench -w packages/core
 *
 * Data: PARTITIONS × ROWS rows; every contender copies them, CHUNK rows per chunk, CONCURRENCY partitions
 * at a time, into its own target table. Contenders, ROUNDS rounds on the same data, their order rotated
 *  - loop:        BEGIN; the chunk's INSERT ... SELECT; COMMIT            (the bare baseline of D20)
 *  - loop+ckpt:   the same plus an UPDATE of a checkpoint row in the transaction (a hand-written resumable loop)
 *  - loop+ckpt kept: the same, each partition holding one connection for all its chunks (BEGIN and COMMIT
 *                 on it) instead of a withTransaction per chunk, as chunkwise's units do
 *  - chunkwise:   a Step.chunked in "chunk" mode on PgStateStore (checkpoint, ledger, fenced lease)
 * WARMUP (default 1) rounds run first, uncounted. ONLY (comma-separated contender names, e.g.
 * ONLY=chunkwise or ONLY=loop+ckpt) runs those contenders alone, to profile one (node --cpu-prof);
 * MODE=none runs the chunkwise step in mode "none".
 */
import { SqlClient } from "@effect/sql"
import { type Duration, Effect, LogLevel, Schema } from "effect"
import { Job, Runner, Step, Worker } from "../src/index.js"
import {
  CHUNK,
  CHUNKS,
  CONCURRENCY,
  copyChunk,
  createData,
  handLoop,
  makeCompletions,
  measure,
  median,
  PARTITIONS,
  report,
  resetData,
  rotated,
  ROUNDS,
  type Rounds,
  ROWS,
  runOnStore,
  WARMUP
} from "./chunkData.js"

const schema = "cw_bench"
const targets = ["t_loop", "t_loop_ckpt", "t_loop_kept", "t_chunkwise"]

const completions = makeCompletions()

const job = Job.make({
  name: "bench-copy",
  params: Schema.Struct({ round: Schema.Number }),
  partitions: () => Array.from({ length: PARTITIONS }, (_, p) => String(p)),
  steps: (step) => [
    step.chunked("copy", {
      cursor: Schema.Struct({ after: Schema.Number }),
      start: { after: 0 },
      chunkSize: CHUNK,
      transaction: (process.env["MODE"] ?? "chunk") as "chunk" | "none",
      process: ({ cursor, partition }) =>
        Effect.map(
          copyChunk(schema, "t_chunkwise", Number(partition.key), cursor.after),
          ({ last, n }) => Step.advance(last === null ? Step.done : { after: last }, n)
        )
    })
  ],
  concurrency: { perWorker: CONCURRENCY },
  onComplete: completions.hook
})

/**
 * One run, from `Runner.start` to its completion hook. The worker is long-lived, as in a
 * service: it starts once, before the first round, so its start-up is not a per-chunk cost.
 */
const chunkwise = (round: number) =>
  Effect.gen(function*() {
    const { runId } = yield* Runner.start(job, { round })
    yield* completions.awaitRun(runId)
  })

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* createData(schema, targets)
  const results: Record<string, Rounds> = { loop: [], "loop+ckpt": [], "loop+ckpt kept": [], chunkwise: [] }
  const only = process.env["ONLY"]?.split(",")
  const all: ReadonlyArray<readonly [string, (round: number) => Effect.Effect<void, unknown, any>]> = [
    ["loop", () => handLoop(schema, "t_loop", false)],
    ["loop+ckpt", () => handLoop(schema, "t_loop_ckpt", true)],
    ["loop+ckpt kept", () => handLoop(schema, "t_loop_kept", true, true)],
    ["chunkwise", chunkwise]
  ]
  const contenders = all.filter(([name]) => only === undefined || only.includes(name))
  const runsChunkwise = contenders.some(([name]) => name === "chunkwise")
  if (runsChunkwise) {
    yield* Worker.make({
      jobs: [job],
      concurrency: CONCURRENCY,
      feedInterval: (process.env["FEED"] ?? "1 second") as Duration.DurationInput
    })
  }
  for (let round = -WARMUP; round < ROUNDS; round++) {
    yield* resetData(schema, targets)
    // Rotate the order each round, so no contender always runs after the others' writes (WAL, checkpoints).
    for (let i = 0; i < contenders.length; i++) {
      const [name, run] = rotated(contenders, round, i)
      const measured = yield* measure(run(round))
      if (round >= 0) results[name]!.push(measured)
    }
  }
  const [copied] = yield* sql<{ readonly n: number }>`select count(*)::int as n from ${sql(schema)}.t_chunkwise`
  if (runsChunkwise && copied?.n !== PARTITIONS * ROWS) {
    throw new Error(`chunkwise copied ${copied?.n} rows`)
  }
  const base = median(
    (results["loop"]!.length > 0 ? results["loop"]! : results[contenders[0]![0]]!).map((r) => r.wallMs)
  )
  console.log(
    `chunk overhead: ${PARTITIONS} partitions × ${ROWS} rows, ${CHUNK}-row chunks (~${CHUNKS} chunks), ` +
      `concurrency ${CONCURRENCY}, median of ${ROUNDS} rounds in rotated order after ${WARMUP} warm-up`
  )
  for (const [name, xs] of Object.entries(results).filter(([, xs]) => xs.length > 0)) report(name, xs, base, "loop")
  yield* sql`drop schema ${sql(schema)} cascade`
}).pipe(Effect.scoped)

runOnStore(schema, program, LogLevel.Warning)
