/**
 * Several billing worker processes on the Postgres store and the Postgres queue, SIGKILLed at random
 * and restarted: the month must end billed exactly by the rules, every invoice with one notification
 * and one mail.
 */
import { PgQueue, PgStateStore, Runner, StateStore } from "@chunkwise/core"
import { Chaos } from "@chunkwise/testing"
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { fileURLToPath } from "node:url"
import * as Expected from "../src/Expected.js"
import * as MonthlyBilling from "../src/MonthlyBilling.js"
import * as Seed from "../src/Seed.js"
import { DATABASE_URL, freshSchema, pgClient, quiet, withBilling } from "./fixtures.js"

const script = fileURLToPath(new URL("./worker-process.ts", import.meta.url))
const month = "2026-10"

describe("worker processes killed at random", () => {
  it.live("end with every invoice correct, once", () =>
    Effect.gen(function*() {
      const app = freshSchema("mb_app")
      const store = freshSchema("mb_store")
      yield* withBilling(app, store)
      yield* Seed.seed({ schema: app, month, companies: 30, records: 6000, seed: 3 })
      // The largest companies are billed as ranges of days, so kills land in ranges and barriers too.
      const job = MonthlyBilling.make({ schema: app, chunkSize: 25, splitRecords: 400 })
      yield* Effect.gen(function*() {
        const { runId } = yield* Runner.start(job, { month })
        const report = yield* Chaos.run({
          worker: {
            args: ["--import", "tsx", script],
            readyLine: "ready",
            env: {
              DATABASE_URL,
              BILLING_SCHEMA: app,
              CHUNKWISE_SCHEMA: store,
              CHUNKWISE_QUEUE: "postgres",
              BILLING_CHUNK_SIZE: "25",
              BILLING_SPLIT_RECORDS: "400",
              BILLING_CONCURRENCY: "2"
            }
          },
          processes: 3,
          seed: 5,
          killEvery: "300 millis",
          maxKills: 4,
          until: Effect.map(Runner.status(runId), (p) => StateStore.isTerminalRun(p.run.status)),
          timeout: "150 seconds"
        })
        expect(report.kills.length).toBeGreaterThan(0)
        const progress = yield* Runner.status(runId)
        expect(progress.run.status).toBe("succeeded")
        expect(progress.ranges.succeeded).toBeGreaterThan(1)
        expect((yield* Expected.verify(app, month)).problems).toEqual([])
        const sql = (yield* SqlClient.SqlClient).withoutTransforms()
        const [mails] = yield* sql<{ readonly invoices: number; readonly mails: number; readonly keys: number }>`
          select (select count(*)::int from ${sql(app)}.invoices) as invoices,
            (select count(*)::int from ${sql(app)}.mail_sent) as mails,
            (select count(distinct company_id)::int from ${sql(app)}.mail_sent) as keys`
        expect(mails!.mails).toBe(mails!.invoices)
        expect(mails!.keys).toBe(mails!.invoices)
        expect(report.survivorExitCodes).toEqual([0, 0, 0])
      }).pipe(
        Effect.provide(
          Layer.mergeAll(
            PgStateStore.layer({ schema: store }),
            PgQueue.layer({ schema: store, queue: "billing" }),
            quiet
          )
        )
      )
    }).pipe(Effect.scoped, Effect.provide(pgClient())), 180_000)
})
