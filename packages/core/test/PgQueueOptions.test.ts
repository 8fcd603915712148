/** PgQueue refuses bad options at start, naming the option and the fix, before it touches the database. */
import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect } from "effect"
import { PgQueue } from "../src/index.js"

const client = PgClient.layer({
  host: "127.0.0.1",
  port: 5432,
  username: "postgres",
  database: "test",
  maxConnections: 2
})

describe("PgQueue options", () => {
  it.scoped("a bad option is refused with its name and the fix", () =>
    Effect.gen(function*() {
      const refused = (options: PgQueue.Options) => Effect.map(Effect.flip(PgQueue.make(options)), (e) => e.message)
      // A zero size limit rejected every send, so a worker's feeder retried forever.
      expect(yield* refused({ maxMessageBytes: 0 })).toMatch(
        /PgQueue: maxMessageBytes must be a positive integer \(got 0\)/
      )
      expect(yield* refused({ queue: "" })).toMatch(/PgQueue: queue must be a non-empty name/)
      expect(yield* refused({ pollInterval: "1 sek" as Duration.DurationInput })).toMatch(
        /PgQueue: pollInterval must be a duration such as/
      )
      expect(yield* refused({ maxReceives: 0 })).toMatch(/PgQueue: maxReceives must be a positive integer \(got 0\)/)
    }).pipe(Effect.provide(client)))
})
