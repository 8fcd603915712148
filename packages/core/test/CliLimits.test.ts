/**
 * The operator CLI's resource limits on a real Postgres store: `limits`, `limits set` (audited, bad
 * flags refused with the flag and the fix), `limits history`, and `status` naming the resource a
 * throttled partition waits for.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Logger, LogLevel, Schedule } from "effect"
import * as Cli from "../src/Cli.js"
import { PgResourceLimiter, PgStateStore, ResourceLimiter, Runner } from "../src/index.js"
import { exec, makeCli, onPostgres } from "./cliFixtures.js"
import { createLimitTables, limitedJob } from "./limitsFixtures.js"
import { pgClient } from "./pg.js"

/** A CLI whose layer holds the store and the Postgres limiter. */
const limitsCli = (store: string, app: string) =>
  Cli.make({
    name: "billing",
    jobs: [limitedJob(app, { partitions: 2, chunks: 2, delayMs: 0 })],
    layer: Layer.mergeAll(
      PgStateStore.layer({ schema: store }),
      PgResourceLimiter.layer({ schema: store }),
      Logger.minimumLogLevel(LogLevel.None)
    ).pipe(Layer.provideMerge(pgClient({ maxConnections: 4 })))
  })

const holder = (runId: string, partitionKey: string, unitId: string): ResourceLimiter.Holder => ({
  runId,
  unitId,
  partitionKey,
  job: "limited-job",
  step: "load",
  workerId: "w-test"
})

describe("operator CLI: resource limits", () => {
  it.live(
    "limits, limits set and limits history: audited, bad flags refused with the fix",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          const noLimiter = yield* exec(makeCli(store, app, []), "limits")
          expect(noLimiter.code).toBe(1)
          expect(noLimiter.stderr).toContain("this CLI has no ResourceLimiter: add PgResourceLimiter.layer")

          const limiter = yield* PgResourceLimiter.make({ schema: store })
          yield* limiter.declare([{ resource: "primary-db", limit: { chunksPerSecond: 50, inFlight: 8 } }], "worker w1")
          const cli = limitsCli(store, app)

          const listed = yield* exec(cli, "limits", "--json")
          expect(listed.code).toBe(0)
          expect(listed.json().limits).toMatchObject([{
            resource: "primary-db",
            chunksPerSecond: 50,
            burst: 50,
            itemsPerSecond: null,
            itemsBurst: null,
            inFlight: 8,
            inUse: 0,
            waiting: 0,
            source: "default",
            updatedBy: "worker w1"
          }])
          expect((yield* exec(cli, "limits")).stdout).toContain("primary-db")

          const set = yield* exec(
            cli,
            "limits",
            "set",
            "primary-db",
            "--in-flight",
            "2",
            "--chunks-per-second",
            "none",
            "--reason",
            "primary at 95% CPU",
            "--actor",
            "ops"
          )
          expect(set.code).toBe(0)
          expect(set.stdout).toContain("primary-db: 2 in flight (was 50 chunks/s (burst 50) · 8 in flight), set by ops")
          const stored = (yield* limiter.settings)[0]!
          expect([stored.chunksPerSecond, stored.inFlight, stored.source, stored.updatedBy, stored.reason]).toEqual([
            null,
            2,
            "operator",
            "ops",
            "primary at 95% CPU"
          ])

          const history = yield* exec(cli, "limits", "history", "primary-db", "--json")
          expect(history.json().changes.map((c: any) => [c.actor, c.reason, c.before, c.after])).toEqual([
            ["worker w1", "first use: the default declared in code", null, { chunksPerSecond: 50, inFlight: 8 }],
            ["ops", "primary at 95% CPU", { chunksPerSecond: 50, inFlight: 8 }, { inFlight: 2 }]
          ])
          expect((yield* exec(cli, "limits", "history")).stdout).toContain("8 in flight")

          const zero = yield* exec(cli, "limits", "set", "primary-db", "--in-flight", "0", "--reason", "x")
          expect(zero.code).toBe(2)
          expect(zero.stderr).toContain("--in-flight must be an integer from 1 to 10000")
          const notANumber = yield* exec(
            cli,
            "limits",
            "set",
            "primary-db",
            "--chunks-per-second",
            "fast",
            "--reason",
            "x"
          )
          expect(notANumber.code).toBe(2)
          expect(notANumber.stderr).toContain(`--chunks-per-second must be a positive number of chunks per second`)
          expect(notANumber.stderr).toContain(`(got "fast")`)
          const negative = yield* exec(cli, "limits", "set", "primary-db", "--chunks-per-second", "-5", "--reason", "x")
          expect(negative.code).toBe(2)
          expect(negative.stderr).toContain("(got -5)")
          const burstAlone = yield* exec(cli, "limits", "set", "primary-db", "--burst", "4", "--reason", "x")
          expect(burstAlone.code).toBe(2)
          expect(burstAlone.stderr).toContain("burst needs")
          const nothing = yield* exec(cli, "limits", "set", "primary-db", "--reason", "x")
          expect(nothing.code).toBe(2)
          expect(nothing.stderr).toContain(
            "give --chunks-per-second, --burst, --items-per-second, --items-burst and/or --in-flight"
          )
          const noReason = yield* exec(cli, "limits", "set", "primary-db", "--in-flight", "3")
          expect(noReason.code).toBe(2)
          expect(noReason.stderr).toContain(`limits set needs --reason "<why>"`)
          const typo = yield* exec(cli, "limits", "set", "primary-dbb", "--in-flight", "3", "--reason", "x")
          expect(typo.code).toBe(2)
          expect(typo.stderr).toContain(`resource "primary-dbb" is not known`)
          expect(typo.stderr).toContain("--create")
          const badName = yield* exec(cli, "limits", "set", "Primary DB", "--in-flight", "3", "--reason", "x")
          expect(badName.code).toBe(2)
          expect(badName.stderr).toContain("is not a valid name")
          // None of the refused commands changed anything.
          expect(yield* limiter.history({ limit: 10 })).toHaveLength(2)

          // Items per second, with its burst: set, listed, refused when bad, removed with `none`.
          const itemBurstAlone = yield* exec(
            cli,
            "limits",
            "set",
            "primary-db",
            "--items-burst",
            "100",
            "--reason",
            "x"
          )
          expect(itemBurstAlone.code).toBe(2)
          expect(itemBurstAlone.stderr).toContain("itemsBurst needs")
          const items = yield* exec(
            cli,
            "limits",
            "set",
            "primary-db",
            "--items-per-second",
            "5000",
            "--items-burst",
            "20000",
            "--reason",
            "the API is priced per row",
            "--actor",
            "ops"
          )
          expect(items.code).toBe(0)
          expect(items.stdout).toContain(
            "primary-db: 5000 items/s (burst 20000) · 2 in flight (was 2 in flight), set by ops"
          )
          expect((yield* exec(cli, "limits", "--json")).json().limits).toMatchObject([{
            resource: "primary-db",
            chunksPerSecond: null,
            burst: null,
            itemsPerSecond: 5000,
            itemsBurst: 20000,
            inFlight: 2,
            source: "operator"
          }])
          const table = (yield* exec(cli, "limits")).stdout
          expect(table).toContain("ITEMS/S")
          expect(table).toMatch(/primary-db\s+—\s+—\s+5000\s+20000\s+2\s/)
          for (
            const [flag, value, message] of [
              [
                "--items-per-second",
                "0",
                "--items-per-second must be a positive number of items per second, e.g. 5000"
              ],
              ["--items-per-second", "lots", `--items-per-second must be a positive number of items per second`],
              ["--items-per-second", "-1", "(got -1)"],
              ["--items-burst", "2.5", "--items-burst must be a positive integer"]
            ] as const
          ) {
            const refused = yield* exec(cli, "limits", "set", "primary-db", flag, value, "--reason", "x")
            expect(refused.code).toBe(2)
            expect(refused.stderr).toContain(message)
          }
          const defaultBurst = yield* exec(
            cli,
            "limits",
            "set",
            "primary-db",
            "--items-burst",
            "none",
            "--reason",
            "one second of items is enough"
          )
          expect(defaultBurst.stdout).toContain("primary-db: 5000 items/s (burst 5000) · 2 in flight")
          const removed = yield* exec(
            cli,
            "limits",
            "set",
            "primary-db",
            "--items-per-second",
            "none",
            "--reason",
            "vendor dropped per-row pricing"
          )
          expect(removed.code).toBe(0)
          expect(removed.stdout).toContain("primary-db: 2 in flight (was 5000 items/s (burst 5000) · 2 in flight)")
          const changes = yield* exec(cli, "limits", "history", "primary-db", "--json")
          expect(changes.json().changes.slice(2).map((c: any) => [c.before, c.after])).toEqual([
            [{ inFlight: 2 }, { itemsPerSecond: 5000, itemsBurst: 20000, inFlight: 2 }],
            [{ itemsPerSecond: 5000, itemsBurst: 20000, inFlight: 2 }, { itemsPerSecond: 5000, inFlight: 2 }],
            [{ itemsPerSecond: 5000, inFlight: 2 }, { inFlight: 2 }]
          ])
        })
      ),
    60_000
  )

  it.live(
    "status names the resource a throttled partition waits for",
    () =>
      onPostgres(({ app, store }) =>
        Effect.gen(function*() {
          yield* createLimitTables(app)
          const job = limitedJob(app, { partitions: 2, chunks: 2, delayMs: 0 })
          const { runId } = yield* Runner.start(job, { label: "throttled" })
          const limiter = yield* PgResourceLimiter.make({ schema: store })
          yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 1 } }], "test")
          // Another chunk holds the only slot; p0's chunk waits for it.
          const held = yield* limiter.acquire(["primary-db"], holder(runId, "p1", "p_other"), 60_000)
          const waiting = yield* Effect.fork(limiter.acquire(["primary-db"], holder(runId, "p0", "p_zero"), 60_000))
          // Until the store records p0's wait (not a fixed sleep: the fork may take long on a busy machine).
          yield* limiter.settings.pipe(
            Effect.repeat({ until: (settings) => settings[0]?.waiting === 1, schedule: Schedule.spaced("10 millis") }),
            Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("p0's wait was never recorded") })
          )
          const cli = limitsCli(store, app)
          const status = yield* exec(cli, "status", runId, "--json")
          expect(status.code).toBe(0)
          expect(status.json().throttled).toMatchObject([{
            partition: "p0",
            step: "load",
            resource: "primary-db",
            kind: "in-flight",
            status: "throttled by primary-db",
            worker: "w-test"
          }])
          const text = yield* exec(cli, "status", runId)
          expect(text.stdout).toContain("Throttled partitions")
          expect(text.stdout).toMatch(/p0\s+load\s+throttled by primary-db\s+a slot \(in flight\)/)
          const listed = yield* exec(cli, "limits", "--json")
          expect(listed.json().limits).toMatchObject([{ resource: "primary-db", inUse: 1, waiting: 1 }])
          // Without a limiter in its layer, status says nothing about throttling rather than "none".
          expect((yield* exec(makeCli(store, app, []), "status", runId, "--json")).json().throttled).toBeNull()
          yield* limiter.release(held)
          const granted = yield* Fiber.join(waiting)
          expect(granted.slots).toHaveLength(1)
          expect((yield* exec(cli, "status", runId, "--json")).json().throttled).toEqual([])
        })
      ),
    60_000
  )
})
