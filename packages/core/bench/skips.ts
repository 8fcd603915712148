/**
 * What setting bad items aside costs (D17), on the Postgres store. Prints figures; asserts nothing.
 * Run: npm run bench:skips -w packages/core
 *
 * Data: PARTITIONS × ROWS rows in two tables, `clean` and `dirty`; in `dirty` every BAD_EVERY-th row has
 * a negative value that the target's check constraint refuses. Both contenders run the same read/write
 * step with `skip` declared, CHUNK rows per chunk, CONCURRENCY partitions at a time, ROUNDS rounds in
 * rotated order:
 *  - clean: no write fails: the price of declaring `skip` is nothing on this path.
 *  - dirty: a chunk with a bad row rolls back, reads again, probes halves in savepoints (always rolled
 *    back) down to the bad row, writes the rest and the quarantine row with its checkpoint.
 * The extra time per chunk with a bad row is (dirty − clean) × CONCURRENCY / chunks with a bad row.
 */
import { SqlClient, SqlError } from "@effect/sql"
import { Effect, LogLevel, Schema } from "effect"
import { Job, Runbook, Runner, Step, Worker } from "../src/index.js"
import { CHUNK, CONCURRENCY, median, PARTITIONS, ROUNDS, ROWS, runOnStore, time } from "./chunkData.js"

const schema = "cw_bench_skips"
const BAD_EVERY = Number(process.env["BAD_EVERY"] ?? 5 * CHUNK)

class InvalidRow extends Schema.TaggedError<InvalidRow>()("InvalidRow", { detail: Schema.String }) {}
const Row = Schema.Struct({ id: Schema.Number, v: Schema.Number })

const jobOf = (source: "clean" | "dirty") =>
  Job.make({
    name: `bench-skips-${source}`,
    params: Schema.Struct({ round: Schema.Number }),
    partitions: () => Array.from({ length: PARTITIONS }, (_, p) => String(p)),
    errors: [Runbook.make(InvalidRow, {
      id: "bench-invalid-row",
      title: "A row the target refuses",
      severity: "info",
      meaning: "Benchmark data.",
      steps: ["None."]
    })],
    steps: (step) => [
      step.chunked("copy", {
        cursor: Schema.Struct({ after: Schema.Number }),
        start: { after: 0 },
        chunkSize: CHUNK,
        transaction: "chunk",
        read: ({ chunkSize, cursor, partition }) =>
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            Effect.map(
              sql<{ readonly id: number; readonly v: number }>`
                select id, v from ${sql(schema)}.${sql(source)}
                where p = ${Number(partition.key)} and id > ${cursor.after} order by id limit ${chunkSize}`,
              (items) => ({ items, next: items.length < chunkSize ? Step.done : { after: items.at(-1)!.id } })
            )).pipe(Effect.orDie),
        write: (rows, { partition }) =>
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            sql`
              insert into ${sql(schema)}.${sql(`t_${source}`)} (p, id, v)
              select ${Number(partition.key)}, x.id, x.v from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
                as x(id int, v int)`.pipe(
              Effect.catchIf(
                (e): e is SqlError.SqlError =>
                  e instanceof SqlError.SqlError && (e.cause as { code?: string } | undefined)?.code === "23514",
                (e) => new InvalidRow({ detail: e.message })
              )
            )),
        skip: { on: [InvalidRow], item: Row, id: (row) => row.id, budget: "1%" }
      })
    ],
    concurrency: { perWorker: CONCURRENCY }
  })

const jobs = { clean: jobOf("clean"), dirty: jobOf("dirty") }

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`drop schema if exists ${sql(schema)} cascade`
  yield* sql`create schema ${sql(schema)}`
  for (const source of ["clean", "dirty"] as const) {
    yield* sql`create table ${sql(schema)}.${sql(source)} (p int not null, id int not null, v int not null,
      primary key (p, id))`
    yield* sql`insert into ${sql(schema)}.${sql(source)} select p, i,
        case when ${source} = 'dirty' and i % ${BAD_EVERY} = 0 then -1 else i % 1000 end
      from generate_series(0, ${PARTITIONS - 1}) p, generate_series(1, ${ROWS}) i`
    yield* sql`analyze ${sql(schema)}.${sql(source)}`
    yield* sql`create table ${sql(schema)}.${sql(`t_${source}`)} (p int not null, id int not null,
      v int not null check (v >= 0))`
  }
  yield* Worker.make({ jobs: [jobs.clean, jobs.dirty], concurrency: CONCURRENCY })
  const results: Record<"clean" | "dirty", Array<number>> = { clean: [], dirty: [] }
  let quarantined = 0
  for (let round = 0; round < ROUNDS; round++) {
    yield* sql`truncate ${sql(schema)}.t_clean, ${sql(schema)}.t_dirty`
    for (const source of round % 2 === 0 ? ["clean", "dirty"] as const : ["dirty", "clean"] as const) {
      results[source].push(
        yield* time(Effect.gen(function*() {
          const { runId } = yield* Runner.start(jobs[source], { round })
          const progress = yield* Runner.awaitTerminal(runId, { pollInterval: "10 millis" })
          if (progress.run.status !== "succeeded") throw new Error(`bench run ${progress.run.status}`)
          if (source === "dirty") quarantined = progress.quarantine.quarantined
        }))
      )
    }
  }
  const [copied] = yield* sql<{ readonly n: number }>`select count(*)::int as n from ${sql(schema)}.t_dirty`
  const bad = PARTITIONS * Math.floor(ROWS / BAD_EVERY)
  if (copied?.n !== PARTITIONS * ROWS - bad || quarantined !== bad) {
    throw new Error(`dirty run copied ${copied?.n} rows and set aside ${quarantined}, expected ${bad} bad rows`)
  }
  const clean = median(results.clean)
  const dirty = median(results.dirty)
  const chunks = PARTITIONS * Math.ceil(ROWS / CHUNK)
  console.log(
    `skips: ${PARTITIONS} partitions × ${ROWS} rows, ${CHUNK}-row chunks (${chunks} chunks), concurrency ` +
      `${CONCURRENCY}, 1 bad row every ${BAD_EVERY} (${bad} set aside), median of ${ROUNDS} rounds`
  )
  console.log(`  clean  ${clean.toFixed(0).padStart(7)} ms  [${results.clean.map((x) => x.toFixed(0)).join(", ")}]`)
  console.log(
    `  dirty  ${dirty.toFixed(0).padStart(7)} ms  ${(dirty / clean).toFixed(3)}x clean  ` +
      `[${results.dirty.map((x) => x.toFixed(0)).join(", ")}]`
  )
  if (bad > 0) {
    console.log(
      `  a chunk with a bad row costs ${((dirty - clean) * CONCURRENCY / bad).toFixed(1)} ms more than a clean ` +
        `one (${(clean * CONCURRENCY / chunks).toFixed(1)} ms per clean chunk)`
    )
  }
  yield* sql`drop schema ${sql(schema)} cascade`
}).pipe(Effect.scoped)

runOnStore(schema, program, LogLevel.Warning)
