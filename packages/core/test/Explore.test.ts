/**
 * chunkwise proven with its own harness on real Postgres: every crash point of a small run, and a
 * deliberately non-idempotent variant that the harness must catch.
 */
import { Engine, Fault, Guarantees, Harness } from "@chunkwise/testing"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { applied, expectedApplied, freshSchema, pgClient, pgJob, withSchemas } from "./pg.js"

const observe = (app: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.all({
      applied: applied(app),
      summaries: Effect.map(
        sql<{ readonly partition: string; readonly count: number }>`select partition, count from ${
          sql(app)
        }.summaries order by partition`,
        (rows) => Object.fromEntries(rows.map((r) => [r.partition, r.count]))
      ),
      completions: Effect.map(
        sql<{ readonly n: number }>`select coalesce(sum(count), 0)::int as n from ${sql(app)}.completions`,
        ([row]) => row!.n
      )
    }))

const reset = (app: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`truncate ${sql(app)}.applied, ${sql(app)}.completions, ${sql(app)}.summaries`
  )

const quiet = Logger.minimumLogLevel(process.env["CW_TEST_LOGS"] ? LogLevel.Debug : LogLevel.None)

describe("explore on Postgres", () => {
  for (const queue of ["memory", "postgres"] as const) {
    it.live(
      `every crash point of a run, store on Postgres, ${queue} queue: zero divergences`,
      () =>
        Effect.gen(function*() {
          const store = freshSchema("cw_store")
          const app = freshSchema("cw_app")
          yield* withSchemas(store, app)
          const report = yield* Harness.explore({
            engine: Engine.postgres({ schema: store, queue }),
            job: pgJob(app, { partitions: 2, size: 6, chunkSize: 2, summarise: true }),
            params: { label: "explore" },
            workers: 2,
            reset: reset(app),
            observe: observe(app)
          })
          console.log(Harness.format(report))
          expect(report.baseline.status).toBe("succeeded")
          expect(report.sites.length).toBeGreaterThanOrEqual(15)
          expect(Object.values(Harness.observedOrThrow(report.baseline).applied)).toHaveLength(12)
          Harness.assertNoDivergence(report)
        }).pipe(Effect.scoped, Effect.provide(Layer.merge(Layer.orDie(pgClient()), quiet))),
      240_000
    )
  }

  it.live(
    "catches writes that are not idempotent (mode none, no ledger, no ON CONFLICT guard)",
    () =>
      Effect.gen(function*() {
        const store = freshSchema("cw_store")
        const app = freshSchema("cw_app")
        yield* withSchemas(store, app)
        const report = yield* Harness.explore({
          engine: Engine.postgres({ schema: store }),
          job: pgJob(app, { partitions: 1, size: 4, chunkSize: 2, mode: "none" }),
          params: { label: "buggy" },
          points: ["after-effect", "after-commit"],
          reset: reset(app),
          observe: observe(app)
        })
        console.log(Harness.format(report))
        expect(report.divergences.map((d) => d.description)).toEqual([
          "kill the worker at after-effect of p0 / step apply / chunk 0",
          "kill the worker at after-effect of p0 / step apply / chunk 1"
        ])
        for (const d of report.divergences) expect(d.reasons.join()).toMatch(/observed state differs/)
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Layer.orDie(pgClient()), quiet))),
    240_000
  )

  for (const split of [undefined, 3]) {
    it.live(
      `guarantees hold on Postgres under a random schedule of kills, zombies and lost replies${
        split === undefined ? "" : `, partitions split into ${split} ranges`
      }`,
      () =>
        Effect.gen(function*() {
          const store = freshSchema("cw_store")
          const app = freshSchema("cw_app")
          yield* withSchemas(store, app)
          const engine = Engine.postgres({ schema: store, queue: "postgres" })
          const job = pgJob(app, { partitions: 3, size: 6, chunkSize: 2, summarise: true, split })
          let injected = 0
          for (const seed of [1, 2, 3]) {
            const trial = yield* Harness.run({
              engine,
              job,
              params: { label: `random-${split ?? "whole"}` },
              workers: 2,
              seed,
              trial: seed,
              faults: [
                Fault.random({ rate: 0.15, max: 3 }),
                Fault.duplicateDelivery(0.2),
                Fault.storeErrors({ rate: 0.1, replyLost: true, operations: ["transaction"] })
              ],
              reset: reset(app),
              observe: observe(app)
            })
            injected += trial.injections.length
            expect(trial.status, `seed ${seed}`).toBe("succeeded")
            Guarantees.all(trial)
            expect(Harness.observedOrThrow(trial), `seed ${seed}`).toEqual({
              applied: expectedApplied(3, 6),
              summaries: { p0: 1, p1: 1, p2: 1 },
              completions: 1
            })
          }
          expect(injected).toBeGreaterThan(0)
        }).pipe(Effect.scoped, Effect.provide(Layer.merge(Layer.orDie(pgClient()), quiet))),
      240_000
    )
  }
})
