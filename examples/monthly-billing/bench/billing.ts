/**
 * The monthly-billing benchmark on a real Postgres (D20): the same generated month, copied into one
 * schema per contender, billed by
 *
 * - before:     one process, companies in a sequential loop, chunked reads and bulk writes, all in ONE transaction;
 * - floor:      the whole month as hand-written set-based SQL (INSERT … SELECT / UPDATE), one transaction;
 * - hand loop:  companies heaviest first, LOOP_CONCURRENCY at a time, the job's own chunk statement per
 *               1,000 records, one transaction per chunk with a checkpoint row (a resumable loop by hand);
 * - chunkwise:  the job at worker concurrency 1, 2, 4, 8 in this process (Postgres store, in-memory
 *               queue), and as two worker processes (`billing worker`, concurrency 4 each, Postgres queue).
 * - makespan:   the job at concurrency 4 and 8 with the largest companies billed whole and split into
 *               ranges of days, against the ideal (the units' total busy time / concurrency).
 *
 * Then the peak RSS of one worker process (concurrency 4) billing RECORDS and RSS_RECORDS records.
 * Every contender's result is checked against the rules (`Expected.verify`). Prints figures; asserts
 * nothing.
 *
 * Run: npm run bench -w examples/monthly-billing
 * Knobs: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), COMPANIES (2000), RECORDS
 * (1000000), RSS_RECORDS (4000000; 0 skips), CONCURRENCIES (1,2,4,8), LOOP_CONCURRENCY (4),
 * SPLIT_CONCURRENCIES (4,8; empty skips), SPLIT_RECORDS (50000), ONLY (comma-separated contender name prefixes), ROUNDS
 * (1: how often the before, floor, hand loop and chunkwise contenders run, each round starting one
 * further along; times are the medians, ratios the medians of the rounds' ratios), POLL_MS and FEED_MS
 * (the in-process workers' poll and feed intervals; default the worker's own, 1 s), PROFILE_DIR (writes a
 * V8 CPU profile of this process for each contender's run, `<contender>-<round>.cpuprofile`, to read
 * where the Node side of a contender spends its time).
 */
import { PgQueue, PgStateStore, QueueAdapter, Runner, Worker } from "@chunkwise/core"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Logger, LogLevel, Redacted } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { Session } from "node:inspector/promises"
import { fileURLToPath } from "node:url"
import * as Billing from "../src/Billing.js"
import * as Expected from "../src/Expected.js"
import * as MonthlyBilling from "../src/MonthlyBilling.js"
import * as Seed from "../src/Seed.js"
import * as Tables from "../src/Tables.js"

const url = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"
const COMPANIES = Number(process.env["COMPANIES"] ?? 2000)
const RECORDS = Number(process.env["RECORDS"] ?? 1_000_000)
const RSS_RECORDS = Number(process.env["RSS_RECORDS"] ?? 4_000_000)
/** A comma-separated list of positive integers; empty means none (`SPLIT_CONCURRENCIES=` skips the makespans). */
const integers = (name: string, fallback: string) => {
  const values = (process.env[name] ?? fallback).split(",").filter((v) => v.trim() !== "").map(Number)
  const bad = values.find((v) => !Number.isInteger(v) || v < 1)
  if (bad !== undefined) throw new TypeError(`${name} must list positive integers, e.g. ${fallback} (got ${bad})`)
  return values
}
const CONCURRENCIES = integers("CONCURRENCIES", "1,2,4,8")
const LOOP_CONCURRENCY = Number(process.env["LOOP_CONCURRENCY"] ?? 4)
const SPLIT_CONCURRENCIES = integers("SPLIT_CONCURRENCIES", "4,8")
const SPLIT_RECORDS = Number(process.env["SPLIT_RECORDS"] ?? 50_000)
const ONLY = process.env["ONLY"]?.split(",")
const ROUNDS = Number(process.env["ROUNDS"] ?? 1)
const PROFILE_DIR = process.env["PROFILE_DIR"]
const MONTH = "2026-10"
const CHUNK = 1000
const SOURCE = "mb_bench_src"
const bin = fileURLToPath(new URL("../src/bin/billing.ts", import.meta.url))

const Db = PgClient.layer({ url: Redacted.make(url), maxConnections: 16, applicationName: "billing-bench" })

const log = (line: string) => Effect.sync(() => console.log(line))

/** A fresh schema with the month's source rows copied from the seeded one. */
const prepare = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql`drop schema if exists ${sql(schema)} cascade`
    yield* sql`drop schema if exists ${sql(schema + "_cw")} cascade`
    yield* Tables.migrate(schema)
    yield* sql`insert into ${sql(schema)}.companies select * from ${sql(SOURCE)}.companies`
    yield* sql`insert into ${sql(schema)}.work_records select * from ${sql(SOURCE)}.work_records order by id`
    yield* sql`vacuum analyze ${sql(schema)}.companies`
    yield* sql`vacuum analyze ${sql(schema)}.work_records`
    yield* sql`checkpoint`
  })

const drop = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all([
      sql`drop schema if exists ${sql(schema)} cascade`,
      sql`drop schema if exists ${sql(schema + "_cw")} cascade`
    ]))

// ---- the contenders

/** The "before": one transaction, a sequential loop over companies, chunked reads, bulk writes. */
const before = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const { first, next } = Billing.monthBounds(MONTH)
    yield* sql.withTransaction(Effect.gen(function*() {
      const companies = yield* sql<{ readonly id: string; readonly fee: number }>`
        select id::text as id, fee_rate_bp as fee from ${s}.companies where active order by id`
      for (const company of companies) {
        let after = { workedOn: first, id: "0" }
        const totals = { lines: 0, wages: 0n, transport: 0n, fee: 0n }
        while (true) {
          const rows = yield* sql<
            {
              readonly id: string
              readonly workedOn: string
              readonly minutes: number
              readonly wage: number
              readonly transport: number
            }
          >`
            select id::text as id, worked_on::text as "workedOn", minutes, hourly_wage_yen as wage,
              transport_yen as transport
            from ${s}.work_records
            where company_id = ${company.id}::bigint and (worked_on, id) > (${after.workedOn}::date, ${after.id}::bigint)
              and worked_on < ${next}::date and status = 'approved' and invoiced_month is null
            order by worked_on, id limit ${CHUNK}`
          if (rows.length === 0) break
          const lines = rows.map((r) => {
            const wage = Math.floor((r.minutes * r.wage + 30) / 60)
            return { id: r.id, wage, transport: r.transport, fee: Math.floor((wage * company.fee + 5000) / 10000) }
          })
          yield* sql`
            insert into ${s}.invoice_lines (billing_month, work_record_id, company_id, wage_yen, transport_yen, fee_yen)
            select ${first}::date, x.id, ${company.id}::bigint, x.wage, x.transport, x.fee
            from unnest(${`{${lines.map((l) => l.id).join(",")}}`}::bigint[], ${`{${
            lines.map((l) => l.wage).join(",")
          }}`}::int[],
              ${`{${lines.map((l) => l.transport).join(",")}}`}::int[], ${`{${
            lines.map((l) => l.fee).join(",")
          }}`}::int[])
              as x(id, wage, transport, fee)`
          yield* sql`update ${s}.work_records set invoiced_month = ${first}::date
            where id = any(${`{${lines.map((l) => l.id).join(",")}}`}::bigint[])`
          for (const l of lines) {
            totals.lines += 1
            totals.wages += BigInt(l.wage)
            totals.transport += BigInt(l.transport)
            totals.fee += BigInt(l.fee)
          }
          const last = rows[rows.length - 1]!
          after = { workedOn: last.workedOn, id: last.id }
        }
        if (totals.lines === 0) continue
        const tax = totals.fee * 10n / 100n
        const [invoice] = yield* sql<{ readonly id: string }>`
          insert into ${s}.invoices (company_id, billing_month, line_count, wages_yen, transport_yen, fee_yen, tax_yen,
            total_yen)
          values (${company.id}::bigint, ${first}::date, ${totals.lines}, ${String(totals.wages)}::bigint,
            ${String(totals.transport)}::bigint, ${String(totals.fee)}::bigint, ${String(tax)}::bigint,
            ${String(totals.wages + totals.transport + totals.fee + tax)}::bigint)
          returning id::text as id`
        yield* sql`insert into ${s}.billing_notifications values (${company.id}::bigint, ${first}::date,
          ${invoice!.id}::bigint)`
        yield* Billing.sendInvoiceMail({
          schema,
          month: MONTH,
          company: company.id,
          idempotencyKey: `before:${company.id}`,
          invoiceId: invoice!.id,
          totalYen: String(totals.wages + totals.transport + totals.fee + tax)
        })
      }
    }))
  })

/** The floor: the month in a few set-based statements. */
const floor = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    const { first, next } = Billing.monthBounds(MONTH)
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`
        insert into ${s}.invoice_lines (billing_month, work_record_id, company_id, wage_yen, transport_yen, fee_yen)
        select ${first}::date, w.id, w.company_id, x.wage, w.transport_yen, (x.wage * c.fee_rate_bp + 5000) / 10000
        from ${s}.work_records w join ${s}.companies c on c.id = w.company_id
        cross join lateral (select (w.minutes::bigint * w.hourly_wage_yen + 30) / 60 as wage) x
        where c.active and w.status = 'approved' and w.invoiced_month is null
          and w.worked_on >= ${first}::date and w.worked_on < ${next}::date`
      yield* sql`
        update ${s}.work_records w set invoiced_month = ${first}::date
        from ${s}.companies c
        where c.id = w.company_id and c.active and w.status = 'approved' and w.invoiced_month is null
          and w.worked_on >= ${first}::date and w.worked_on < ${next}::date`
      yield* sql`
        insert into ${s}.invoices (company_id, billing_month, line_count, wages_yen, transport_yen, fee_yen, tax_yen,
          total_yen)
        select company_id, billing_month, count(*), sum(wage_yen), sum(transport_yen), sum(fee_yen),
          sum(fee_yen) * 10 / 100, sum(wage_yen) + sum(transport_yen) + sum(fee_yen) + sum(fee_yen) * 10 / 100
        from ${s}.invoice_lines where billing_month = ${first}::date group by company_id, billing_month`
      yield* sql`
        insert into ${s}.billing_notifications select company_id, billing_month, id from ${s}.invoices
        where billing_month = ${first}::date`
      yield* sql`
        insert into ${s}.mail_sent (idempotency_key, company_id, billing_month, invoice_id, total_yen)
        select 'floor:' || company_id, company_id, billing_month, id, total_yen from ${s}.invoices
        where billing_month = ${first}::date`
    }))
  })

/** The hand-written chunked loop: the job's statements, a checkpoint row per chunk, no framework. */
const handLoop = (schema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(schema)
    yield* sql`create table ${s}.checkpoints (company_id bigint primary key, cursor jsonb, chunks integer not null)`
    const companies = yield* Billing.billableCompanies(schema, MONTH)
    yield* Effect.forEach(companies, ({ key }) =>
      Effect.gen(function*() {
        let cursor: Billing.Cursor | undefined = Billing.startCursor
        while (cursor !== undefined) {
          const from: Billing.Cursor = cursor
          cursor = yield* sql.withTransaction(Effect.gen(function*() {
            const { next } = yield* Billing.billChunk({
              schema,
              month: MONTH,
              company: key,
              cursor: from,
              limit: CHUNK
            })
            yield* sql`
              insert into ${s}.checkpoints values (${key}::bigint,
                ${JSON.stringify(next === undefined ? null : { ...next, afterId: String(next.afterId) })}::jsonb, 1)
              on conflict (company_id) do update set cursor = excluded.cursor, chunks = checkpoints.chunks + 1`
            return next
          }))
        }
        yield* sql.withTransaction(Billing.issueInvoice({ schema, month: MONTH, company: key }))
        yield* Billing.notify({ schema, month: MONTH, company: key, idempotencyKey: `loop:${key}` })
      }), { concurrency: LOOP_CONCURRENCY, discard: true })
  })

/** How busy the units of a run were, from the store: the sum of their busy times and the longest one. */
interface Busy {
  readonly workSeconds: number
  readonly longestSeconds: number
  readonly ranges: number
}

/**
 * A unit is busy from its first claim to its end; a split company's own unit only after its last range
 * ended (before that it waits while its ranges work).
 */
const busy = (storeSchema: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const s = sql(storeSchema)
    const [row] = yield* sql<Busy>`
      with u as (select * from ${s}.units where kind <> 'finalize'),
      joined as (select parent_unit_id, max(finished_at) as at from u where kind = 'range' group by parent_unit_id),
      spans as (
        select extract(epoch from (u.finished_at - coalesce(j.at, u.started_at)))::float8 as seconds, u.kind
        from u left join joined j on j.parent_unit_id = u.unit_id)
      select coalesce(sum(seconds), 0)::float8 as "workSeconds", coalesce(max(seconds), 0)::float8 as "longestSeconds",
        (count(*) filter (where kind = 'range'))::int as ranges
      from spans`
    return row!
  })

/**
 * The worker's poll and feed intervals (POLL_MS, FEED_MS; default: the worker's own, 1 s each). The
 * feeder is kicked whenever units end or new work appears, so the intervals only bound waits; short
 * ones cost CPU on every tick (a timer wake-up costs 0.4-1 ms of CPU on the shared development VM).
 */
const WORKER_INTERVALS = {
  ...(process.env["POLL_MS"] === undefined ? {} : { pollInterval: Duration.millis(Number(process.env["POLL_MS"])) }),
  ...(process.env["FEED_MS"] === undefined ? {} : { feedInterval: Duration.millis(Number(process.env["FEED_MS"])) })
}

/** chunkwise in this process: Postgres store, in-memory queue; `splitRecords` as the job's option. */
const chunkwise = (schema: string, concurrency: number, splitRecords?: number) =>
  Effect.gen(function*() {
    const job = MonthlyBilling.make({ schema, perWorker: concurrency, splitRecords })
    return yield* Effect.gen(function*() {
      yield* Worker.make({ jobs: [job], concurrency, ...WORKER_INTERVALS })
      const { runId } = yield* Runner.start(job, { month: MONTH })
      const { run } = yield* Runner.awaitTerminal(runId, { pollInterval: "100 millis" })
      if (run.status !== "succeeded") yield* log(`  run ended ${run.status}`)
      return yield* busy(`${schema}_cw`)
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.merge(PgStateStore.layer({ schema: `${schema}_cw` }), QueueAdapter.layerMemory()))
    )
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: concurrency + 4 })))

/** Starts `billing worker` processes and resolves once each says it runs. */
const startWorkers = (schema: string, count: number, concurrency: number) =>
  Effect.promise(() =>
    Promise.all(Array.from({ length: count }, (_, i) =>
      new Promise<ChildProcess>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", bin, "worker", "--concurrency", String(concurrency)],
          {
            env: {
              ...process.env,
              DATABASE_URL: url,
              BILLING_SCHEMA: schema,
              CHUNKWISE_SCHEMA: `${schema}_cw`,
              CHUNKWISE_QUEUE: "postgres",
              BILLING_CONCURRENCY: String(concurrency),
              CHUNKWISE_WORKER_ID: `bench-${i + 1}`
            },
            stdio: ["ignore", "ignore", "pipe"]
          }
        )
        let seen = ""
        child.stderr!.on("data", (d: Buffer) => {
          seen += d.toString()
          if (seen.includes("SIGTERM or Ctrl-C drains it")) resolve(child)
        })
        child.once("exit", (code) => reject(new Error(`worker exited with ${code} before it ran:\n${seen}`)))
      })))
  )

/** Peak resident memory of a process, from /proc (VmHWM), in MiB. */
const peakRss = (pid: number) => {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return match === null ? NaN : Number(match[1]) / 1024
}

const stopWorkers = (children: ReadonlyArray<ChildProcess>) =>
  Effect.promise(() =>
    Promise.all(children.map((c) =>
      new Promise<void>((resolve) => {
        if (c.exitCode !== null) return resolve()
        c.once("exit", () => resolve())
        c.kill("SIGTERM")
      })
    ))
  )

/** chunkwise as worker processes on the Postgres queue; returns their peak RSS. */
const processes = (schema: string, count: number, concurrency: number) =>
  Effect.gen(function*() {
    const job = MonthlyBilling.make({ schema, perWorker: concurrency })
    yield* PgStateStore.migrate({ schema: `${schema}_cw` })
    const children = yield* startWorkers(schema, count, concurrency)
    const started = Date.now()
    yield* Effect.gen(function*() {
      const { runId } = yield* Runner.start(job, { month: MONTH })
      yield* Runner.awaitTerminal(runId, { pollInterval: "100 millis" })
    }).pipe(
      Effect.provide(
        Layer.merge(
          PgStateStore.layer({ schema: `${schema}_cw` }),
          PgQueue.layer({ schema: `${schema}_cw`, queue: "billing" })
        )
      )
    )
    const seconds = (Date.now() - started) / 1000
    const rss = children.map((c) => peakRss(c.pid!))
    yield* stopWorkers(children)
    return { seconds, rss }
  })

// ---- the run

interface Figure {
  readonly name: string
  /** The median of its rounds. */
  readonly seconds: number
  /** Every contender's seconds in each round, when it ran in the rounds. */
  readonly rounds?: ReadonlyArray<ReadonlyMap<string, number>>
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** `f` against `ref`: the median of the rounds' ratios when both ran in the rounds, else of the times. */
const ratio = (f: Figure, ref: Figure | undefined) => {
  if (ref === undefined) return ""
  const paired = (f.rounds ?? []).filter((r) => r.has(f.name) && r.has(ref.name))
  return (paired.length > 0 && f.rounds === ref.rounds
    ? median(paired.map((r) => r.get(f.name)! / r.get(ref.name)!))
    : f.seconds / ref.seconds).toFixed(2)
}

/** The machine's busy CPU seconds so far (all processes, from /proc/stat). */
const machineCpuSeconds = () => {
  const [, ...ticks] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).map(Number)
  // user nice system idle iowait irq softirq steal: busy is user to softirq but idle and iowait. Steal
  // (time the hypervisor gave a neighbour) is not this machine's work, so it is left out.
  return ticks.slice(0, 7).reduce((a, b, i) => (i === 3 || i === 4 ? a : a + b), 0) / 100
}

/** This process's CPU seconds so far. */
const ownCpuSeconds = () => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1e6
}

/** Runs `effect` under the V8 CPU profiler when PROFILE_DIR is set, writing `<file>.cpuprofile` there. */
const profiled = <A, E, R>(file: string, effect: Effect.Effect<A, E, R>) =>
  PROFILE_DIR === undefined ? effect : Effect.acquireUseRelease(
    Effect.promise(async () => {
      const session = new Session()
      session.connect()
      await session.post("Profiler.enable")
      await session.post("Profiler.start")
      return session
    }),
    () => effect,
    (session) =>
      Effect.promise(async () => {
        const { profile } = await session.post("Profiler.stop")
        mkdirSync(PROFILE_DIR, { recursive: true })
        writeFileSync(`${PROFILE_DIR}/${file.replace(/[^\w-]+/g, "_")}.cpuprofile`, JSON.stringify(profile))
        session.disconnect()
      })
  )

let profiles = 0

const timed = <A, E, R>(name: string, schema: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    yield* prepare(schema)
    const started = Date.now()
    const cpu = { machine: machineCpuSeconds(), own: ownCpuSeconds() }
    const out = yield* profiled(`${name}-${++profiles}`, effect)
    const seconds = (Date.now() - started) / 1000
    const own = ownCpuSeconds() - cpu.own
    const others = machineCpuSeconds() - cpu.machine - own
    const v = yield* Expected.verify(schema, MONTH)
    const check = v.problems.length === 0 ? `ok (${v.invoices} invoices, ${v.lines} lines)` : v.problems.join("; ")
    yield* log(
      `  ${name.padEnd(26)} ${seconds.toFixed(1).padStart(7)} s   cpu: node ${own.toFixed(1)} s, database ${
        others.toFixed(1)
      } s   check: ${check}`
    )
    yield* drop(schema)
    return { name, seconds, out }
  })

const wanted = (name: string) => ONLY === undefined || ONLY.some((o) => name.startsWith(o))

const main = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* log(`monthly-billing benchmark: ${COMPANIES} companies, ${RECORDS.toLocaleString("en-US")} work records`)
  yield* sql`drop schema if exists ${sql(SOURCE)} cascade`
  yield* Tables.migrate(SOURCE)
  const seedStart = Date.now()
  yield* Seed.seed({ schema: SOURCE, month: MONTH, companies: COMPANIES, records: RECORDS, seed: 42 })
  const [shape] = yield* sql<{ readonly billable: number; readonly largest: number }>`
    select sum(weight)::int as billable, max(weight)::int as largest from (
      select count(*) as weight from ${sql(SOURCE)}.work_records w join ${
    sql(SOURCE)
  }.companies c on c.id = w.company_id
      where c.active and w.status = 'approved' and w.worked_on >= '2026-10-01' and w.worked_on < '2026-11-01'
      group by w.company_id) t`
  yield* log(
    `seeded in ${((Date.now() - seedStart) / 1000).toFixed(1)} s; ${
      shape!.billable.toLocaleString("en-US")
    } billable ` +
      `records in ${MONTH}, the largest company holds ${shape!.largest.toLocaleString("en-US")} ` +
      `(${(100 * shape!.largest / shape!.billable).toFixed(1)} %)`
  )
  const figures: Array<Figure> = []
  // The main contenders, ROUNDS times, each round starting one further along (so none always goes
  // first on a warm or a cold machine); a ratio is the median of the rounds' ratios.
  const contenders: Array<{
    readonly name: string
    readonly schema: string
    readonly effect: Effect.Effect<unknown, unknown, SqlClient.SqlClient>
  }> = [
    { name: "before", schema: "mb_bench_before", effect: before("mb_bench_before") },
    { name: "floor", schema: "mb_bench_floor", effect: floor("mb_bench_floor") },
    { name: `hand loop x${LOOP_CONCURRENCY}`, schema: "mb_bench_loop", effect: handLoop("mb_bench_loop") },
    ...CONCURRENCIES.map((c) => ({
      name: `chunkwise x${c}`,
      schema: `mb_bench_cw${c}`,
      effect: chunkwise(`mb_bench_cw${c}`, c)
    }))
  ].filter((c) => wanted(c.name))
  const rounds: Array<Map<string, number>> = []
  for (let round = 0; round < ROUNDS; round++) {
    if (ROUNDS > 1) yield* log(`round ${round + 1} of ${ROUNDS}`)
    const seconds = new Map<string, number>()
    for (let i = 0; i < contenders.length; i++) {
      const c = contenders[(i + round) % contenders.length]!
      seconds.set(c.name, (yield* timed(c.name, c.schema, c.effect)).seconds)
    }
    rounds.push(seconds)
  }
  for (const c of contenders) {
    figures.push({ name: c.name, seconds: median(rounds.map((r) => r.get(c.name)!)), rounds })
  }
  // Makespan with and without range splits: the run's time against the ideal (the units' total busy
  // time spread evenly over the concurrency), and the longest unit (the tail).
  const makespans: Array<{ readonly name: string; readonly seconds: number; readonly busy: Busy; readonly c: number }> =
    []
  for (const c of SPLIT_CONCURRENCIES) {
    for (const [label, splitRecords] of [["whole", Infinity], ["split", SPLIT_RECORDS]] as const) {
      const name = `makespan x${c} ${label}`
      if (!wanted(name)) continue
      const f = yield* timed(name, `mb_bench_ms${c}${label}`, chunkwise(`mb_bench_ms${c}${label}`, c, splitRecords))
      makespans.push({ name, seconds: f.seconds, busy: f.out, c })
    }
  }
  if (makespans.length > 0) {
    yield* log(
      `\nmakespan with and without range splits (companies over ${SPLIT_RECORDS.toLocaleString("en-US")} records ` +
        `split into ranges of days); ideal = units' busy time / concurrency`
    )
    yield* log(
      `  ${"contender".padEnd(26)} ${"seconds".padStart(8)} ${"ideal".padStart(8)} ${"/ideal".padStart(8)} ${
        "longest".padStart(8)
      } ${"ranges".padStart(7)}`
    )
    for (const m of makespans) {
      const ideal = m.busy.workSeconds / m.c
      yield* log(
        `  ${m.name.padEnd(26)} ${m.seconds.toFixed(1).padStart(8)} ${ideal.toFixed(1).padStart(8)} ${
          (m.seconds / ideal).toFixed(2).padStart(8)
        } ${m.busy.longestSeconds.toFixed(1).padStart(8)} ${String(m.busy.ranges).padStart(7)}`
      )
    }
  }
  if (wanted("chunkwise 2 processes")) {
    const schema = "mb_bench_procs"
    yield* prepare(schema)
    const { rss, seconds } = yield* processes(schema, 2, 4)
    const v = yield* Expected.verify(schema, MONTH)
    yield* log(
      `  ${"chunkwise 2 processes x4".padEnd(26)} ${seconds.toFixed(1).padStart(7)} s   check: ${
        v.problems.length === 0 ? `ok (${v.invoices} invoices, ${v.lines} lines)` : v.problems.join("; ")
      }; peak RSS ${rss.map((r) => `${r.toFixed(0)} MiB`).join(", ")}`
    )
    figures.push({ name: "chunkwise 2 processes x4", seconds })
    yield* drop(schema)
  }

  const get = (prefix: string) => figures.find((f) => f.name.startsWith(prefix))
  const floorF = get("floor")
  const loopF = get("hand loop")
  const beforeF = get("before")
  yield* log("\nratios (time / reference; lower is faster)")
  yield* log(
    `  ${"contender".padEnd(26)} ${"seconds".padStart(8)} ${"/floor".padStart(8)} ${"/loop".padStart(8)} ${
      "/before".padStart(8)
    }`
  )
  for (const f of figures) {
    const r = (ref: Figure | undefined) => ratio(f, ref)
    yield* log(
      `  ${f.name.padEnd(26)} ${f.seconds.toFixed(1).padStart(8)} ${r(floorF).padStart(8)} ${r(loopF).padStart(8)} ${
        r(beforeF).padStart(8)
      }`
    )
  }

  if (RSS_RECORDS > 0 && wanted("rss")) {
    yield* log("\npeak RSS of one worker process (concurrency 4, Postgres queue)")
    for (const records of [RECORDS, RSS_RECORDS]) {
      yield* sql`drop schema if exists ${sql(SOURCE)} cascade`
      yield* Tables.migrate(SOURCE)
      yield* Seed.seed({ schema: SOURCE, month: MONTH, companies: COMPANIES, records, seed: 42 })
      yield* prepare("mb_bench_rss")
      const { rss, seconds } = yield* processes("mb_bench_rss", 1, 4)
      yield* log(
        `  ${records.toLocaleString("en-US").padStart(10)} records: ${rss[0]!.toFixed(0)} MiB (run ${
          seconds.toFixed(1)
        } s)`
      )
      yield* drop("mb_bench_rss")
    }
  }
  yield* sql`drop schema if exists ${sql(SOURCE)} cascade`
})

Effect.runPromise(main.pipe(Effect.provide(Db), Logger.withMinimumLogLevel(LogLevel.Error))).catch((e) => {
  console.error(e)
  process.exit(1)
})
