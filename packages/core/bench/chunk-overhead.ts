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
 * Each contender also runs over partitions with no rows ("empty"): what it costs per run rather than
 * per chunk (chunkwise: the run's start, a claim and one empty chunk per partition, the finish; the
 * loops: one empty chunk per partition). The per-chunk ratio takes each contender's empty run off its
 * full one, so it compares the chunks alone; the whole-run ratio is printed beside it.
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
  emptyPartition,
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
  params: Schema.Struct({ round: Schema.Number, empty: Schema.Boolean }),
  partitions: () => Array.from({ length: PARTITIONS }, (_, p) => String(p)),
  steps: (step) => [
    step.chunked("copy", {
      cursor: Schema.Struct({ after: Schema.Number }),
      start: { after: 0 },
      chunkSize: CHUNK,
      transaction: (process.env["MODE"] ?? "chunk") as "chunk" | "none",
      process: ({ cursor, params, partition }) =>
        Effect.map(
          copyChunk(
            schema,
            "t_chunkwise",
            params.empty ? emptyPartition(Number(partition.key)) : Number(partition.key),
            cursor.after
          ),
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
const chunkwise = (round: number, empty = false) =>
  Effect.gen(function*() {
    const { runId } = yield* Runner.start(job, { round, empty })
    yield* completions.awaitRun(runId)
  })

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* createData(schema, targets)
  const names = ["loop", "loop+ckpt", "loop+ckpt kept", "chunkwise"] as const
  const results: Record<string, Rounds> = Object.fromEntries(names.flatMap((n) => [[n, []], [`${n} empty`, []]]))
  const only = process.env["ONLY"]?.split(",")
  const all: ReadonlyArray<readonly [string, (round: number) => Effect.Effect<void, unknown, any>]> = [
    ["loop", () => handLoop(schema, "t_loop", false)],
    ["loop+ckpt", () => handLoop(schema, "t_loop_ckpt", true)],
    ["loop+ckpt kept", () => handLoop(schema, "t_loop_kept", true, true)],
    ["chunkwise", (round) => chunkwise(round)],
    ["loop empty", () => handLoop(schema, "t_loop", false, false, true)],
    ["loop+ckpt empty", () => handLoop(schema, "t_loop_ckpt", true, false, true)],
    ["loop+ckpt kept empty", () => handLoop(schema, "t_loop_kept", true, true, true)],
    ["chunkwise empty", (round) => chunkwise(round, true)]
  ]
  const contenders = all.filter(([name]) => only === undefined || only.includes(name.replace(/ empty$/, "")))
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
  const measuredNames = names.filter((n) => results[n]!.length > 0)
  const baseName = measuredNames[0]!
  const wall = (name: string) => median(results[name]!.map((r) => r.wallMs))
  console.log(
    `chunk overhead: ${PARTITIONS} partitions × ${ROWS} rows, ${CHUNK}-row chunks (~${CHUNKS} chunks), ` +
      `concurrency ${CONCURRENCY}, median of ${ROUNDS} rounds in rotated order after ${WARMUP} warm-up`
  )
  console.log("whole runs:")
  for (const name of measuredNames) report(name, results[name]!, wall(baseName), baseName)
  // A contender's chunks alone: its full run less its empty one (what it costs once per run).
  const chunksOf = (name: string) => wall(name) - wall(`${name} empty`)
  console.log(`per chunk (each contender's empty run taken off its whole run):`)
  for (const name of measuredNames) {
    console.log(
      `  ${name.padEnd(14)} ${chunksOf(name).toFixed(0).padStart(7)} ms  ${
        (chunksOf(name) / chunksOf(baseName)).toFixed(3)
      }x ` +
        `${baseName}  (empty run ${wall(`${name} empty`).toFixed(1)} ms: [${
          results[`${name} empty`]!.map((r) => r.wallMs.toFixed(1)).join(", ")
        }])`
    )
  }
  yield* sql`drop schema ${sql(schema)} cascade`
}).pipe(Effect.scoped)

runOnStore(schema, program, LogLevel.Warning)
