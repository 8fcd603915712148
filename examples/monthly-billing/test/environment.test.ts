import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import * as Environment from "../src/Environment.js"

const load = (env: Record<string, string>) =>
  Environment.load.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))

describe("the example's settings", () => {
  it.effect("size the pool at BILLING_CONCURRENCY + 4 unless BILLING_MAX_CONNECTIONS says otherwise", () =>
    Effect.gen(function*() {
      expect((yield* load({ BILLING_CONCURRENCY: "6" })).maxConnections).toBe(10)
      expect((yield* load({ BILLING_CONCURRENCY: "6", BILLING_MAX_CONNECTIONS: "8" })).maxConnections).toBe(8)
    }))

  it.effect("refuse a pool the worker would refuse, in the example's own terms", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ BILLING_CONCURRENCY: "6", BILLING_MAX_CONNECTIONS: "7" }))
      expect(error.message).toContain("BILLING_MAX_CONNECTIONS must be at least BILLING_CONCURRENCY + 2")
      expect(error.input).toBe(true)
    }))
})
