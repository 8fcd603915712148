/**
 * Fixtures for the operator CLI tests: a job whose failures an operator can fix (rows of `<app>.bad`),
 * a CLI over a Postgres store schema, and `exec`, which runs one command line in-process with its
 * output captured.
 */
import { NodeContext } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { Console, Effect, Layer, Logger, LogLevel, Schema, type Scope } from "effect"
import * as Cli from "../src/Cli.js"
import { Job, PgQueue, PgStateStore, type QueueAdapter, Runbook, StateStore, Step } from "../src/index.js"
import { freshSchema, pgClient, pgEngine, withSchemas } from "./pg.js"

export class BadRow extends Schema.TaggedError<BadRow>()("BadRow", { partition: Schema.String, item: Schema.Number }) {}

export const PARTITIONS = ["a", "b", "c", "d"] as const
export const SIZE = 6

/**
 * Partitions a–d of 6 items, 2 per chunk (`load`, chunk mode), then `publish` (mode none). A chunk
 * fails with `BadRow` while `<app>.bad` holds one of its items; `executions` logs every chunk run.
 */
export const cliJob = (app: string, executions: Array<string>) =>
  Job.make({
    name: "cli-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => PARTITIONS.map((key, i) => ({ key, weight: PARTITIONS.length - i })),
    steps: (step) => [
      step.chunked("load", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: 2,
        transaction: "chunk",
        process: ({ chunkSeq, chunkSize, cursor, partition }) =>
          Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            executions.push(`${partition.key}/load/${chunkSeq}`)
            const end = Math.min(cursor.next + chunkSize, SIZE)
            const bad = yield* sql<{ readonly item: number }>`
              select item from ${sql(app)}.bad
              where partition = ${partition.key} and item >= ${cursor.next} and item < ${end}`
            if (bad.length > 0) return yield* new BadRow({ partition: partition.key, item: bad[0]!.item })
            const base = PARTITIONS.indexOf(partition.key as typeof PARTITIONS[number]) * 1000
            yield* sql`
              insert into ${sql(app)}.applied (item, count)
              select g, 1 from generate_series(${base + cursor.next}::int, ${base + end - 1}::int) g
              on conflict (item) do update set count = applied.count + 1`
            return Step.advance(end >= SIZE ? Step.done : { next: end }, end - cursor.next)
          })
      }),
      step.single("publish", {
        transaction: "none",
        run: ({ partition }) => Effect.sync(() => executions.push(`${partition.key}/publish`))
      })
    ],
    errors: [
      Runbook.make(BadRow, {
        id: "cli-bad-row",
        title: "A row cannot be loaded",
        severity: "ticket",
        meaning: "A source row is invalid; its chunk rolled back.",
        steps: ["Fix the row, then `billing retry <run> --partition <key> --reason ...`."]
      })
    ]
  })

const quiet = Logger.minimumLogLevel(process.env["CW_TEST_LOGS"] ? LogLevel.Debug : LogLevel.None)

/** The service's CLI over the store schema: the store layer for every command, the Postgres queue apart. */
export const makeCli = (store: string, app: string, executions: Array<string>) =>
  Cli.make({
    name: "billing",
    jobs: [cliJob(app, executions)],
    layer: Layer.mergeAll(PgStateStore.layer({ schema: store }), quiet).pipe(
      Layer.provideMerge(pgClient({ maxConnections: 4 }))
    ),
    queue: PgQueue.layer({ schema: store }).pipe(Layer.provide(pgClient({ maxConnections: 2 })))
  })

export interface Output {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
  readonly json: () => any
}

/** Runs one command line in-process; stdout and stderr are captured through Effect's Console. */
export const exec = (cli: Cli.Cli, ...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const stdout: Array<string> = []
    const stderr: Array<string> = []
    const base = yield* Console.consoleWith(Effect.succeed)
    const text = (parts: ReadonlyArray<unknown>) => parts.map(String).join(" ")
    const captured: Console.Console = {
      ...base,
      log: (...parts) => Effect.sync(() => void stdout.push(text(parts))),
      info: (...parts) => Effect.sync(() => void stdout.push(text(parts))),
      error: (...parts) => Effect.sync(() => void stderr.push(text(parts))),
      warn: (...parts) => Effect.sync(() => void stderr.push(text(parts)))
    }
    const code = yield* Cli.run(cli, args).pipe(Effect.withConsole(captured), Effect.provide(NodeContext.layer))
    const out = stdout.join("\n")
    return { code, stdout: out, stderr: stderr.join("\n"), json: () => JSON.parse(out) } satisfies Output
  })

/** A fresh store schema and app schema (with the `bad` table); the body gets the engine and both names. */
export const onPostgres = <A, E>(
  body: (
    names: { readonly store: string; readonly app: string }
  ) => Effect.Effect<A, E, StateStore.StateStore | SqlClient.SqlClient | QueueAdapter.QueueAdapter | Scope.Scope>
) => {
  const store = freshSchema("cw_cli_store")
  const app = freshSchema("cw_cli_app")
  return Effect.gen(function*() {
    yield* withSchemas(store, app)
    const sql = yield* SqlClient.SqlClient
    yield* sql`create table ${sql(app)}.bad (partition text not null, item integer not null)`
    return yield* body({ store, app }).pipe(Effect.scoped, Effect.provide(pgEngine(store)))
  }).pipe(Effect.scoped, Effect.provide(Layer.orDie(pgClient())))
}

/** The store's view of the units, by partition key. */
export const unitsByPartition = (runId: string) =>
  Effect.flatMap(StateStore.StateStore, (store) =>
    Effect.map(
      store.listUnits(runId, { limit: 100 }),
      (units) => Object.fromEntries(units.filter((u) => u.kind === "partition").map((u) => [u.partitionKey, u]))
    ))
