/**
 * The billing service's command line: chunkwise's operator CLI (`Cli.make`: start, worker, status,
 * failures, retry, skip, cancel, audit, redrive, runbooks) plus the example's own commands:
 *
 * - `demo`: the whole example on the embedded PGlite (or `DATABASE_URL`), in one process;
 * - `migrate`: create or upgrade the billing tables and the chunkwise store;
 * - `seed`: generate a month of data (the specification's generator);
 * - `verify`: check a billed month against the rules, computed again.
 *
 * Settings come from the environment (see `Environment.ts`).
 */
import { PgStateStore } from "@chunkwise/core"
import * as ChunkwiseCli from "@chunkwise/core/Cli"
import { Command, Options, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { Cause, Console, Effect, Layer, Logger, LogLevel } from "effect"
import * as Demo from "../Demo.js"
import * as Environment from "../Environment.js"
import { BillingError } from "../Errors.js"
import * as Expected from "../Expected.js"
import * as Seed from "../Seed.js"
import * as Tables from "../Tables.js"

const settings = Effect.runSync(Effect.either(Environment.load))
if (settings._tag === "Left") {
  console.error(`error: ${settings.left.message}`)
  process.exit(2)
}
const s = settings.right

/** Commands other than `demo` need a database that outlives the process. */
const durableDatabase = Environment.isEmbedded(s)
  ? Layer.fail(
    new BillingError({
      message: "this command needs a database that outlives the process: set DATABASE_URL to a Postgres URL " +
        "(the embedded PGlite lives only as long as `billing demo`)",
      input: true
    })
  )
  : Environment.database(s)

const job = Environment.job(s)

const cli = ChunkwiseCli.make({
  name: "billing",
  jobs: [job],
  layer: Environment.store(s).pipe(Layer.provideMerge(durableDatabase)),
  queue: Environment.queue(s).pipe(Layer.provide(durableDatabase)),
  worker: { leaseDuration: Environment.leaseDuration(s) }
})

// ---- the example's own commands

const month = Options.text("month").pipe(
  Options.withDefault("2026-10"),
  Options.withDescription("The month, YYYY-MM")
)
const companies = Options.integer("companies").pipe(Options.withDefault(Seed.demoDefaults.companies))
const records = Options.integer("records").pipe(Options.withDefault(Seed.demoDefaults.records))
const seedOption = Options.integer("seed").pipe(Options.withDefault(Seed.demoDefaults.seed))

const checkMonth = (value: string) =>
  /^\d{4}-(0[1-9]|1[0-2])$/.test(value)
    ? Effect.succeed(value)
    : Effect.fail(new BillingError({ message: `--month must be YYYY-MM, e.g. 2026-10 (got "${value}")`, input: true }))

const demo = Command.make(
  "demo",
  { month, companies, records, seed: seedOption },
  (args) =>
    Effect.gen(function*() {
      const m = yield* checkMonth(args.month)
      let where = Environment.describe(s)
      const db = Environment.database(s, (embedded) =>
        Effect.sync(() => {
          where = Environment.describe(s, embedded)
        }))
      const engine = Layer.mergeAll(Environment.store(s), Environment.queue(s)).pipe(Layer.provideMerge(db))
      const result = yield* Effect.gen(function*() {
        yield* Console.log(`monthly-billing demo: ${where}`)
        return yield* Demo.run({
          job,
          schema: s.billingSchema,
          month: m,
          companies: args.companies,
          records: args.records,
          seed: args.seed,
          concurrency: s.concurrency,
          leaseDuration: Environment.leaseDuration(s)
        })
      }).pipe(Effect.scoped, Effect.provide(engine))
      const ok = result.status === "succeeded" && result.verification.problems.length === 0 &&
        Demo.same(result.first, result.afterAttach) && Demo.same(result.first, result.afterRerun)
      yield* Console.log(ok ? "OK: billed once, exactly by the rules, and unchanged by running it again." : "FAILED")
      if (!ok) return yield* new BillingError({ message: "the demo's checks failed (see above)" })
    })
).pipe(Command.withDescription("Seed a month, bill it, check it, bill it again: the whole example in one process"))

const withDatabase = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) => Effect.provide(effect, durableDatabase)

const migrate = Command.make("migrate", {}, () =>
  withDatabase(Effect.gen(function*() {
    yield* Tables.migrate(s.billingSchema)
    yield* PgStateStore.migrate({ schema: s.storeSchema })
    yield* Console.log(`migrated: billing tables in "${s.billingSchema}", chunkwise store in "${s.storeSchema}"`)
  }))).pipe(Command.withDescription("Create or upgrade the billing tables and the chunkwise store"))

const seed = Command.make(
  "seed",
  { month, companies, records, seed: seedOption },
  (args) =>
    withDatabase(Effect.gen(function*() {
      const m = yield* checkMonth(args.month)
      yield* Tables.migrate(s.billingSchema)
      const started = Date.now()
      yield* Seed.seed({
        schema: s.billingSchema,
        month: m,
        companies: args.companies,
        records: args.records,
        seed: args.seed
      })
      yield* Console.log(
        `seeded ${args.records.toLocaleString("en-US")} work records of ${args.companies.toLocaleString("en-US")} ` +
          `companies around ${m} (seed ${args.seed}) in ${((Date.now() - started) / 1000).toFixed(1)} s`
      )
    }))
).pipe(Command.withDescription("Replace the billing data with a generated month (deterministic by --seed)"))

const verify = Command.make("verify", { month }, (args) =>
  withDatabase(Effect.gen(function*() {
    const m = yield* checkMonth(args.month)
    const v = yield* Expected.verify(s.billingSchema, m)
    if (v.problems.length > 0) {
      return yield* new BillingError({ message: `${m} is not billed by the rules:\n- ${v.problems.join("\n- ")}` })
    }
    yield* Console.log(
      `${m} is billed exactly by the rules: ${v.invoices} invoices, ${v.lines} lines, ¥${
        v.totalYen.toLocaleString("en-US")
      }`
    )
  }))).pipe(Command.withDescription("Check a billed month against the rules, computed again from the source tables"))

const own = Command.make("billing").pipe(Command.withSubcommands([demo, migrate, seed, verify]))
const ownNames = new Set(["demo", "migrate", "seed", "verify"])

const args = process.argv.slice(2)
if (args[0] !== undefined && ownNames.has(args[0])) {
  NodeRuntime.runMain(
    Command.run(own, { name: "billing", version: "0.1.0" })(process.argv).pipe(
      Effect.catchAll((error) =>
        ValidationError.isValidationError(error)
          ? Effect.sync(() => {
            process.exitCode = 2 // @effect/cli printed the usage problem already
          })
          : Effect.zipRight(
            Console.error(
              typeof (error as { readonly message?: unknown }).message === "string"
                ? `error: ${(error as { readonly message: string }).message}`
                : `error: ${Cause.pretty(Cause.fail(error))}`
            ),
            Effect.sync(() => {
              // A setting or an argument is wrong: 2, as the operator CLI's usage errors; else 1.
              process.exitCode = (error as { readonly input?: unknown }).input === true ? 2 : 1
            })
          )
      ),
      Effect.provide(NodeContext.layer),
      Logger.withMinimumLogLevel(LogLevel.Warning)
    ),
    { disableErrorReporting: true }
  )
} else {
  if (args.length === 0 || args[0] === "--help" || args[0] === "-h") {
    console.log(
      "billing: the monthly-billing example. Its own commands: demo, migrate, seed, verify " +
        "(`billing <command> --help`); chunkwise's operator commands follow."
    )
  }
  ChunkwiseCli.main(cli)
}
