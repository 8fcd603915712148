/**
 * Where chunkwise's per-chunk overhead lives: the same chunks copied by the hand-written loop with a
 * checkpoint row (each partition keeping one connection, as a unit keeps its session's), by the Postgres
 * store's own chunk path driven directly (BEGIN, the chunk's SQL, the `commit_chunk` call, COMMIT, in a
 * session per unit, with no Worker around it), and by the Worker. The gap between the
 * second and the third is the Worker's per-chunk path; the gap between the first and the second is the
 * store's. Prints figures; asserts nothing. Run: npx tsx bench/chunk-breakdown.ts (same env as `bench`).
 */
import { SqlClient } from "@effect/sql"
import { Effect, LogLevel, Schema } from "effect"
import { Job, Runner, StateStore, Step, Worker } from "../src/index.js"
import {
  CHUNK,
  CHUNKS,
  CONCURRENCY,
  copyChunk,
  createData,
  forClaimedUnits,
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

const schema = "cw_breakdown"
const targets = ["t_loop_ckpt", "t_store", "t_worker"]

const completions = makeCompletions()

const job = (label: string) =>
  Job.make({
    name: `bench-breakdown-${label}`,
    params: Schema.Struct({ round: Schema.Number }),
    partitions: () => Array.from({ length: PARTITIONS }, (_, p) => String(p)),
    steps: (step) => [
      step.chunked("copy", {
        cursor: Schema.Struct({ after: Schema.Number }),
        start: { after: 0 },
        chunkSize: CHUNK,
        transaction: "chunk",
        process: ({ cursor, partition }) =>
          Effect.map(
            copyChunk(schema, "t_worker", Number(partition.key), cursor.after),
            ({ last, n }) => Step.advance(last === null ? Step.done : { after: last }, n)
          )
      })
    ],
    concurrency: { perWorker: CONCURRENCY },
    onComplete: completions.hook
  })
const workerJob = job("worker")
const storeJob = job("store")

/** The store's chunk path alone: claim each unit, then per chunk one transaction of its session with commit_chunk. */
const storeOnly = (round: number) =>
  forClaimedUnits(storeJob, round, ({ lease, unit }) =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      // The unit's chunks through one session, as the Worker runs them.
      const transaction = store.session === undefined ? store.transaction : (yield* store.session).transaction
      let after = 0
      let chunkSeq = 0
      while (true) {
        const done = yield* transaction(Effect.gen(function*() {
          const { last, n } = yield* copyChunk(schema, "t_store", Number(unit.partitionKey), after)
          yield* store.commitChunk({
            lease,
            from: { stepIndex: 0, chunkSeq },
            to: last === null
              ? { stepIndex: 1, chunkSeq: 0, cursor: null }
              : { stepIndex: 0, chunkSeq: chunkSeq + 1, cursor: { after: last } },
            unitDone: last === null,
            items: n,
            idempotencyKey: `k-${round}-${unit.unitId}-${chunkSeq}`,
            step: "copy",
            leaseMs: 60_000,
            last: true
          })
          return last
        }))
        if (done === null) return
        after = done
        chunkSeq += 1
      }
    }).pipe(Effect.scoped))

const viaWorker = (round: number) =>
  Effect.gen(function*() {
    const { runId } = yield* Runner.start(workerJob, { round })
    yield* completions.awaitRun(runId)
    workerRuns.push(runId)
  })
const workerRuns: Array<string> = []

/** Where a worker run's wall time went, in database time: before the first chunk, between units, after the last. */
const databaseTimes = (runId: string) =>
  Effect.gen(function*() {
    yield* Runner.awaitTerminal(runId)
    const sql = yield* SqlClient.SqlClient
    const [t] = yield* sql<Record<string, number>>`
      with l as (
        select unit_id, min(committed_at) as first, max(committed_at) as last from ${sql(`${schema}_store`)}.ledger
        where run_id = ${runId} and step = 'copy' group by unit_id)
      select
        (extract(epoch from (select min(first) from l) - r.created_at) * 1000)::float8 as "toFirstChunk",
        (extract(epoch from r.finished_at - (select max(last) from l)) * 1000)::float8 as "afterLastChunk",
        (extract(epoch from r.finished_at - r.created_at) * 1000)::float8 as "run",
        (select (avg(extract(epoch from l.first - u.started_at)) * 1000)::float8 from l
          join ${
      sql(`${schema}_store`)
    }.units u on u.run_id = ${runId} and u.unit_id = l.unit_id) as "claimToFirstChunk"
      from ${sql(`${schema}_store`)}.runs r where r.run_id = ${runId}`
    return t!
  })

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* createData(schema, targets)
  yield* Worker.make({ jobs: [workerJob], concurrency: CONCURRENCY })
  const contenders: ReadonlyArray<readonly [string, (round: number) => Effect.Effect<void, unknown, any>]> = [
    ["loop+ckpt kept", () => handLoop(schema, "t_loop_ckpt", true, true)],
    ["store path", storeOnly],
    ["worker", viaWorker]
  ]
  const results = new Map<string, Rounds>(contenders.map(([name]) => [name, []]))
  for (let round = -WARMUP; round < ROUNDS; round++) {
    yield* resetData(schema, targets)
    for (let i = 0; i < contenders.length; i++) {
      const [name, run] = rotated(contenders, round, i)
      const measured = yield* measure(run(round))
      if (round >= 0) results.get(name)!.push(measured)
    }
  }
  const base = median(results.get("loop+ckpt kept")!.map((r) => r.wallMs))
  console.log(
    `chunk breakdown: ${PARTITIONS} partitions × ${ROWS} rows, ${CHUNK}-row chunks (~${CHUNKS} chunks), ` +
      `concurrency ${CONCURRENCY}, median of ${ROUNDS} rotated rounds after ${WARMUP} warm-up`
  )
  for (const [name, xs] of results) report(name, xs, base, "loop+ckpt kept")
  for (const runId of workerRuns) {
    const t = yield* databaseTimes(runId)
    console.log(
      `  worker run (database time): ${Object.entries(t).map(([k, v]) => `${k} ${Number(v).toFixed(0)} ms`).join(", ")}`
    )
  }
  yield* sql`drop schema ${sql(schema)} cascade`
}).pipe(Effect.scoped)

runOnStore(schema, program, LogLevel.Error)
