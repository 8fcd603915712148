/**
 * The conformance suite of the resource limiter's drivers (`ResourceLimiter.Store`): a driver runs it
 * in a couple of lines against its real backend, with two drivers open on it at once, as two worker
 * processes would be. It checks the contract of `ResourceLimiter`'s module doc: a rate of chunks, and
 * one of items, grants at most `rate × length + burst` over any interval (measured by the grant times
 * and item counts the driver reports, on its own clock, never by wall-clock durations), a chunk larger
 * than the item burst is granted, both rates charge a chunk at one grant time, an in-flight cap holds
 * under concurrent claims, expired slots come back, a lowered cap drains its holders before any new
 * slot, waits are visible, settings are declared, changed and audited, and bad settings are refused
 * with the setting and the fix.
 *
 * It runs live (drivers decide time on their backend's clock), with short TTLs.
 *
 * @since 0.1.0
 */
import { ResourceLimiter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"

/** Options of the suite. */
export interface Options {
  /**
   * A fresh, empty backend per test, removed when the scope closes. Its value opens another driver on
   * that backend (its own connection, as another worker process would have).
   */
  readonly make: Effect.Effect<Effect.Effect<ResourceLimiter.Store, unknown, Scope.Scope>, unknown, Scope.Scope>
}

/**
 * The worst excess of grants over `rate × length + burst` across every window [a, b] of the grant
 * times (ms): at most 0 (plus float rounding) when the limit held.
 */
export const worstExcess = (times: ReadonlyArray<number>, rate: number, burst: number): number => {
  const sorted = [...times].sort((a, b) => a - b)
  let worst = -Infinity
  for (let i = 0; i < sorted.length; i++) {
    for (let j = i; j < sorted.length; j++) {
      worst = Math.max(worst, j - i + 1 - (rate * (sorted[j]! - sorted[i]!)) / 1000 - burst)
    }
  }
  return worst
}

/**
 * The worst excess of items granted over `rate × length + burst` across every window [a, b] of the
 * grant times (ms), each grant counting its `items`: at most 0 (plus float rounding) when the limit held.
 */
export const worstItemExcess = (
  grants: ReadonlyArray<{ readonly grantedAt: number; readonly items: number }>,
  rate: number,
  burst: number
): number => {
  const sorted = [...grants].sort((a, b) => a.grantedAt - b.grantedAt)
  let worst = -Infinity
  for (let i = 0; i < sorted.length; i++) {
    let items = 0
    for (let j = i; j < sorted.length; j++) {
      items += sorted[j]!.items
      worst = Math.max(worst, items - (rate * (sorted[j]!.grantedAt - sorted[i]!.grantedAt)) / 1000 - burst)
    }
  }
  return worst
}

/** A holder for unit `unit` of run `run`. */
export const holder = (unit: string, run = "run_1"): ResourceLimiter.Holder => ({
  runId: run,
  unitId: unit,
  partitionKey: unit,
  job: "conformance",
  step: "load",
  workerId: "worker"
})

const operator = { actor: "ops", reason: "conformance" }
/** Grant times are floats in ms: allow a thousandth of a permit. */
const tolerance = 1e-3
let permits = 0
const permitId = () => `conformance.${(permits += 1).toString(36)}`

/** Registers the conformance tests under `describe(name)`. */
export const suite = (name: string, options: Options): void => {
  /** Runs `body` with two drivers ("two workers") on one fresh backend. */
  const test = (
    title: string,
    body: (a: ResourceLimiter.Store, b: ResourceLimiter.Store) => Effect.Effect<void, unknown, Scope.Scope>
  ) =>
    it.live(title, () =>
      Effect.scoped(Effect.gen(function*() {
        const open = yield* options.make
        const a = yield* open
        const b = yield* open
        yield* body(a, b)
      })), 30_000)

  describe(name, () => {
    test(
      "a rate grants no more than rate × length + burst across two drivers, the burst at once",
      (a, b) =>
        Effect.gen(function*() {
          const rate = 20
          const burst = 3
          yield* a.declare([{ resource: "primary-db", limit: { chunksPerSecond: rate, burst } }], "worker A")
          // Both drivers reserve at once: 30 tokens, far above the burst; nobody waits here for them.
          const reserved = yield* Effect.forEach(
            Array.from({ length: 30 }, (_, i) => i),
            (i) => (i % 2 === 0 ? a : b).reserve("primary-db", holder(`u${i}`)),
            { concurrency: "unbounded" }
          )
          const grants = reserved.map((r) => r!)
          expect(grants).toHaveLength(30)
          expect(worstExcess(grants.map((g) => g.grantedAt), rate, burst)).toBeLessThanOrEqual(tolerance)
          // The burst went at once; every other token is in debt, due one 1/rate after another: the last is
          // due (30 - burst) / rate after the first, however the calls spread in time.
          expect(grants.filter((g) => g.waitMs === 0).length).toBeLessThanOrEqual(burst + 1)
          const times = grants.map((g) => g.grantedAt)
          expect(Math.max(...times) - Math.min(...times)).toBeCloseTo(((30 - burst) / rate) * 1000, 0)
          // The waiters are visible until their tokens are due, as rate waits: at least every one due after
          // now on the driver's clock (the first may have ended already if the calls took long).
          const visible = yield* b.waits({})
          expect(visible.waits.length).toBeGreaterThanOrEqual(grants.filter((g) => g.grantedAt > visible.now).length)
          expect(visible.waits.length).toBeGreaterThan(0)
          expect(new Set(visible.waits.map((w) => w.kind))).toEqual(new Set(["rate"]))
          for (const wait of visible.waits) expect(wait.until).toBeGreaterThan(visible.now)
          // A resource without a rate takes no token.
          yield* a.declare([{ resource: "billing-api", limit: { inFlight: 2 } }], "worker A")
          expect(yield* a.reserve("billing-api", holder("x"))).toBeUndefined()
          expect(yield* a.reserve("never-declared", holder("x"))).toBeUndefined()
        })
    )

    test(
      "an in-flight cap is never exceeded under concurrent claims from two drivers, and is reached",
      (a, b) =>
        Effect.gen(function*() {
          const cap = 3
          yield* a.declare([{ resource: "primary-db", limit: { inFlight: cap } }], "worker A")
          let running = 0
          let most = 0
          const held: Array<ResourceLimiter.Slot> = []
          const worker = (store: ResourceLimiter.Store, unit: string) =>
            Effect.gen(function*() {
              for (let round = 0; round < 3; round++) {
                let claimed: ResourceLimiter.ClaimResult = { _tag: "Full" }
                while (claimed._tag === "Full") {
                  claimed = yield* store.claim("primary-db", holder(unit), { ttlMs: 10_000, permitId: permitId() })
                  if (claimed._tag === "Full") yield* Effect.sleep("5 millis")
                }
                if (claimed._tag !== "Held") return yield* Effect.dieMessage("the resource has a cap")
                running += 1
                most = Math.max(most, running)
                held.push(claimed.slot)
                yield* Effect.sleep("15 millis")
                running -= 1
                yield* store.release([claimed.slot])
              }
            })
          yield* Effect.forEach(
            Array.from({ length: 10 }, (_, i) => i),
            (i) => worker(i % 2 === 0 ? a : b, `u${i}`),
            { concurrency: "unbounded", discard: true }
          )
          expect(most).toBe(cap)
          expect(held).toHaveLength(30)
          expect(new Set(held.map((s) => s.slot))).toEqual(new Set([1, 2, 3]))
          const [usage] = yield* b.settings
          expect([usage!.resource, usage!.inFlight, usage!.inUse, usage!.waiting]).toEqual(["primary-db", cap, 0, 0])
          // A resource without a cap is unlimited.
          yield* a.declare([{ resource: "billing-api", limit: { chunksPerSecond: 5 } }], "worker A")
          expect((yield* a.claim("billing-api", holder("x"), { ttlMs: 1000, permitId: permitId() }))._tag).toBe(
            "Unlimited"
          )
        })
    )

    test("a slot whose holder died comes back when it expires; a renewed one does not; a late release frees nothing", (
      a,
      b
    ) =>
      Effect.gen(function*() {
        yield* a.declare([{ resource: "primary-db", limit: { inFlight: 1 } }], "worker A")
        const first = yield* a.claim("primary-db", holder("alive"), { ttlMs: 400, permitId: permitId() })
        if (first._tag !== "Held") return yield* Effect.dieMessage(`expected a slot, got ${first._tag}`)
        expect(first.slot.slot).toBe(1)
        // Renewed (its heartbeat) far past its first expiry: nobody else gets it meanwhile.
        expect(yield* a.renew([first.slot], 3000)).toEqual([first.slot])
        yield* Effect.sleep("600 millis")
        expect((yield* b.claim("primary-db", holder("waiter"), { ttlMs: 400, permitId: permitId() }))._tag).toBe("Full")
        const [waiting] = (yield* b.waits({})).waits
        expect([waiting?.unitId, waiting?.kind, waiting?.resource]).toEqual(["waiter", "in-flight", "primary-db"])
        // Its holder dies: renewed for a short time, never again.
        expect(yield* a.renew([first.slot], 200)).toEqual([first.slot])
        let second: ResourceLimiter.ClaimResult = { _tag: "Full" }
        while (second._tag === "Full") {
          yield* Effect.sleep("50 millis")
          second = yield* b.claim("primary-db", holder("waiter"), { ttlMs: 10_000, permitId: permitId() })
        }
        if (second._tag !== "Held") return yield* Effect.dieMessage(`expected a slot, got ${second._tag}`)
        expect(second.slot.slot).toBe(1)
        // The waiter holds it now: no longer waiting; the dead holder's renewal and release touch nothing.
        expect((yield* a.waits({})).waits).toEqual([])
        expect(yield* a.renew([first.slot], 3000)).toEqual([])
        yield* a.release([first.slot])
        expect((yield* a.settings)[0]!.inUse).toBe(1)
        expect(yield* b.renew([second.slot], 3000)).toEqual([second.slot])
        yield* b.release([second.slot])
        expect((yield* a.settings)[0]!.inUse).toBe(0)
      }))

    test(
      "a lowered cap drains its holders before any new slot; a raised one gives slots at once",
      (a, b) =>
        Effect.gen(function*() {
          yield* a.declare([{ resource: "primary-db", limit: { inFlight: 3 } }], "worker A")
          const claim = (store: ResourceLimiter.Store, unit: string) =>
            store.claim("primary-db", holder(unit), { ttlMs: 10_000, permitId: permitId() })
          const slots: Array<ResourceLimiter.Slot> = []
          for (const [store, unit] of [[a, "u1"], [b, "u2"], [a, "u3"]] as const) {
            const claimed = yield* claim(store, unit)
            if (claimed._tag !== "Held") return yield* Effect.dieMessage(`expected a slot, got ${claimed._tag}`)
            slots.push(claimed.slot)
          }
          expect(slots.map((s) => s.slot)).toEqual([1, 2, 3])
          yield* b.set("primary-db", { inFlight: 1 }, operator, { create: false })
          // Slot 1 is free within the new cap, but slots 2 and 3 are held above it: no new slot.
          yield* a.release([slots[0]!])
          expect((yield* claim(b, "u4"))._tag).toBe("Full")
          yield* b.release([slots[2]!])
          expect((yield* claim(a, "u4"))._tag).toBe("Full")
          yield* a.release([slots[1]!])
          // Drained: one slot again, and only one.
          const next = yield* claim(b, "u4")
          expect(next._tag === "Held" ? next.slot.slot : next._tag).toBe(1)
          expect((yield* claim(a, "u5"))._tag).toBe("Full")
          // Raised: the next claim gets a slot at once.
          yield* a.set("primary-db", { inFlight: 2 }, operator, { create: false })
          const raised = yield* claim(a, "u5")
          expect(raised._tag === "Held" ? raised.slot.slot : raised._tag).toBe(2)
          // Removed: unlimited.
          yield* a.set("primary-db", { inFlight: null }, operator, { create: false })
          expect((yield* claim(b, "u6"))._tag).toBe("Unlimited")
        })
    )

    test("declare creates once across drivers, follows code defaults, keeps an operator's setting, and audits", (
      a,
      b
    ) =>
      Effect.gen(function*() {
        const limit = { chunksPerSecond: 50, inFlight: 8 }
        const [fromA, fromB] = yield* Effect.all([
          a.declare([{ resource: "primary-db", limit }], "worker A"),
          b.declare([{ resource: "primary-db", limit }], "worker B")
        ], { concurrency: "unbounded" })
        expect([fromA![0]!.outcome, fromB![0]!.outcome].sort()).toEqual(["created", "unchanged"])
        expect(ResourceLimiter.limitOf(fromA![0]!.setting)).toEqual(limit)
        const changed = yield* a.declare([{ resource: "primary-db", limit: { chunksPerSecond: 40 } }], "worker A")
        expect(changed[0]!.outcome).toBe("updated")
        expect(changed[0]!.setting.source).toBe("default")
        const set = yield* b.set("primary-db", { inFlight: 4 }, { actor: "ops", reason: "primary at 95% CPU" }, {
          create: false
        })
        expect([set.source, set.updatedBy, set.reason]).toEqual(["operator", "ops", "primary at 95% CPU"])
        expect(ResourceLimiter.limitOf(set)).toEqual({ chunksPerSecond: 40, inFlight: 4 })
        const kept = yield* a.declare([{ resource: "primary-db", limit }], "worker A")
        expect(kept[0]!.outcome).toBe("operator")
        expect(ResourceLimiter.limitOf(kept[0]!.setting)).toEqual({ chunksPerSecond: 40, inFlight: 4 })
        const history = yield* b.history({ resource: "primary-db", limit: 10 })
        expect(history.map((c) => [c.reason, c.before, c.after])).toEqual([
          ["first use: the default declared in code", null, limit],
          ["the default declared in code changed", limit, { chunksPerSecond: 40 }],
          ["primary at 95% CPU", { chunksPerSecond: 40 }, { chunksPerSecond: 40, inFlight: 4 }]
        ])
        expect(history[2]!.actor).toBe("ops")
        // The audit row and the setting are written by one operation (drivers may read their clock twice).
        expect(Math.abs(history[2]!.at - set.updatedAt)).toBeLessThan(1000)
        expect((yield* a.history({ resource: "primary-db", limit: 1 })).map((c) => c.reason)).toEqual([
          "primary at 95% CPU"
        ])
        yield* a.set("billing-api", { inFlight: 2 }, operator, { create: true })
        expect((yield* a.history({ limit: 10 })).map((c) => c.resource)).toEqual([
          "primary-db",
          "primary-db",
          "primary-db",
          "billing-api"
        ])
        expect((yield* b.settings).map((u) => u.resource)).toEqual(["billing-api", "primary-db"])
      }))

    test(
      "a rate changed by an operator applies at once; waits of one run are listed apart",
      (a, b) =>
        Effect.gen(function*() {
          yield* a.declare([{ resource: "primary-db", limit: { chunksPerSecond: 1000, burst: 5 } }], "worker A")
          // Down to 1 per second with a burst of 1: the full bucket keeps one token, the next is due a second later.
          yield* b.set("primary-db", { chunksPerSecond: 1, burst: 1 }, operator, { create: false })
          expect((yield* a.reserve("primary-db", holder("first")))!.waitMs).toBe(0)
          const slow = yield* b.reserve("primary-db", holder("slow", "run_2"))
          expect(slow!.waitMs).toBeGreaterThan(500)
          expect(slow!.waitMs).toBeLessThanOrEqual(1000)
          const ofRun = yield* a.waits({ runId: "run_2" })
          expect(ofRun.waits.map((w) => [w.unitId, w.kind, w.until])).toEqual([["slow", "rate", slow!.grantedAt]])
          expect((yield* a.waits({ runId: "run_1" })).waits).toEqual([])
          expect((yield* a.settings)[0]!.waiting).toBe(1)
          // Removing the rate removes its burst too, and reservations stop.
          const cleared = yield* a.set("primary-db", { chunksPerSecond: null }, operator, { create: false })
          expect(ResourceLimiter.limitOf(cleared)).toEqual({})
          expect(yield* b.reserve("primary-db", holder("free"))).toBeUndefined()
        })
    )

    test(
      "an item rate grants no more than itemsPerSecond × length + itemsBurst items across two drivers",
      (a, b) =>
        Effect.gen(function*() {
          const rate = 400
          const burst = 60
          yield* a.declare(
            [{ resource: "billing-api", limit: { itemsPerSecond: rate, itemsBurst: burst } }],
            "worker A"
          )
          // Chunks of 10 to 49 items (planned sizes), reserved at once from both drivers: far above the burst.
          const sizes = Array.from({ length: 30 }, (_, i) => 10 + ((i * 7) % 40))
          const reserved = yield* Effect.forEach(
            sizes,
            (items, i) => (i % 2 === 0 ? a : b).reserve("billing-api", holder(`u${i}`), { items }),
            { concurrency: "unbounded" }
          )
          const grants = reserved.map((r) => r!)
          // Each chunk took its planned size.
          expect(grants.map((g) => g.items)).toEqual(sizes)
          expect(worstItemExcess(grants, rate, burst)).toBeLessThanOrEqual(tolerance)
          // Past the burst every chunk waits for its items: the last is due (total - burst) / rate after the
          // first, however the calls spread in time.
          const total = sizes.reduce((sum, n) => sum + n, 0)
          const times = grants.map((g) => g.grantedAt)
          expect(Math.max(...times) - Math.min(...times)).toBeCloseTo(((total - burst) / rate) * 1000, 0)
          const visible = yield* b.waits({})
          expect(visible.waits.length).toBeGreaterThanOrEqual(grants.filter((g) => g.grantedAt > visible.now).length)
          expect(visible.waits.length).toBeGreaterThan(0)
          expect(new Set(visible.waits.map((w) => w.kind))).toEqual(new Set(["rate"]))
          // Without `items`, a chunk counts as one item.
          const one = yield* a.reserve("billing-api", holder("one"))
          expect(one!.items).toBe(1)
          expect(one!.grantedAt - Math.max(...times)).toBeCloseTo((1 / rate) * 1000, 0)
        })
    )

    test(
      "a chunk larger than the item burst is granted once its excess refilled, and the next waits for its own",
      (a, b) =>
        Effect.gen(function*() {
          yield* a.declare([{ resource: "billing-api", limit: { itemsPerSecond: 100, itemsBurst: 10 } }], "worker A")
          // The bucket is full (10): the 25 items above it take 250 ms, and the chunk leaves it empty.
          const big = (yield* a.reserve("billing-api", holder("big"), { items: 35 }))!
          expect(big.items).toBe(35)
          expect(big.waitMs).toBeCloseTo(250, 0)
          const next = (yield* b.reserve("billing-api", holder("next"), { items: 5 }))!
          expect(next.grantedAt - big.grantedAt).toBeCloseTo(50, 0)
          // The bound holds with the largest chunk as the burst: a chunk is not split.
          expect(worstItemExcess([big, next], 100, 35)).toBeLessThanOrEqual(tolerance)
          const { waits } = yield* a.waits({})
          expect(waits.map((w) => [w.unitId, w.kind, w.until])).toEqual([
            ["big", "rate", big.grantedAt],
            ["next", "rate", next.grantedAt]
          ])
        })
    )

    test(
      "a chunk takes its chunk and item tokens at one grant time: chunks held back by one rate do not bunch on the other",
      (a, b) =>
        Effect.gen(function*() {
          yield* a.declare([{
            resource: "primary-db",
            limit: { chunksPerSecond: 10, burst: 1, itemsPerSecond: 1000, itemsBurst: 10 }
          }], "worker A")
          // A chunk of 2,000 items waits about 2 s for them; its chunk token was there at once.
          const big = (yield* a.reserve("primary-db", holder("big"), { items: 2000 }))!
          expect(big.waitMs).toBeCloseTo(1990, 0)
          // Then chunks of one item, whose items are there almost at once: their chunk tokens come one per
          // 100 ms after the big chunk's grant, not all at once when the big one's items are due.
          const small: Array<ResourceLimiter.Reservation> = []
          for (let i = 0; i < 9; i++) {
            small.push((yield* (i % 2 === 0 ? b : a).reserve("primary-db", holder(`s${i}`), { items: 1 }))!)
          }
          small.forEach((grant, k) => expect(grant.grantedAt - big.grantedAt).toBeCloseTo(100 * (k + 1), 0))
          const grants = [big, ...small]
          expect(worstExcess(grants.map((g) => g.grantedAt), 10, 1)).toBeLessThanOrEqual(tolerance)
          expect(worstItemExcess(grants, 1000, 2000)).toBeLessThanOrEqual(tolerance)
        })
    )

    test(
      "an item rate is declared, changed, lowered at once, removed and audited like the other settings",
      (a, b) =>
        Effect.gen(function*() {
          const declared = yield* a.declare([{ resource: "billing-api", limit: { itemsPerSecond: 5000 } }], "worker A")
          expect([declared[0]!.setting.itemsPerSecond, declared[0]!.setting.itemsBurst]).toEqual([5000, null])
          const withBurst = yield* b.set("billing-api", { itemsBurst: 200 }, operator, { create: false })
          expect(ResourceLimiter.limitOf(withBurst)).toEqual({ itemsPerSecond: 5000, itemsBurst: 200 })
          const both = yield* a.set("billing-api", { chunksPerSecond: 50 }, operator, { create: false })
          expect(ResourceLimiter.limitOf(both)).toEqual({ chunksPerSecond: 50, itemsPerSecond: 5000, itemsBurst: 200 })
          // A full item bucket of 200: a chunk of 150 goes at once.
          const first = (yield* a.reserve("billing-api", holder("first"), { items: 150 }))!
          expect([first.items, first.waitMs]).toEqual([150, 0])
          // Lowered to 1 item per second with a burst of 1: the bucket keeps one item, the next is a second later.
          yield* b.set("billing-api", { itemsPerSecond: 1, itemsBurst: 1 }, operator, { create: false })
          // (The chunk rate, 50/s, has its tokens: the items decide.)
          expect((yield* a.reserve("billing-api", holder("one"), { items: 1 }))!.waitMs).toBe(0)
          const slow = (yield* b.reserve("billing-api", holder("slow"), { items: 1 }))!
          expect(slow.waitMs).toBeGreaterThan(500)
          expect(slow.waitMs).toBeLessThanOrEqual(1000)
          // Removing the item rate removes its burst too; the chunk rate stays and takes no items.
          const cleared = yield* a.set("billing-api", { itemsPerSecond: null }, operator, { create: false })
          expect(ResourceLimiter.limitOf(cleared)).toEqual({ chunksPerSecond: 50 })
          expect((yield* b.reserve("billing-api", holder("chunks"), { items: 40 }))!.items).toBe(0)
          yield* a.set("billing-api", { chunksPerSecond: null }, operator, { create: false })
          expect(yield* b.reserve("billing-api", holder("free"), { items: 40 })).toBeUndefined()
          const [usage] = yield* b.settings
          expect([usage!.itemsPerSecond, usage!.itemsBurst, usage!.chunksPerSecond]).toEqual([null, null, null])
          expect((yield* a.history({ resource: "billing-api", limit: 10 })).map((c) => [c.before, c.after])).toEqual([
            [null, { itemsPerSecond: 5000 }],
            [{ itemsPerSecond: 5000 }, { itemsPerSecond: 5000, itemsBurst: 200 }],
            [{ itemsPerSecond: 5000, itemsBurst: 200 }, { chunksPerSecond: 50, itemsPerSecond: 5000, itemsBurst: 200 }],
            [{ chunksPerSecond: 50, itemsPerSecond: 5000, itemsBurst: 200 }, {
              chunksPerSecond: 50,
              itemsPerSecond: 1,
              itemsBurst: 1
            }],
            [{ chunksPerSecond: 50, itemsPerSecond: 1, itemsBurst: 1 }, { chunksPerSecond: 50 }],
            [{ chunksPerSecond: 50 }, {}]
          ])
          // Code defaults with an item rate are followed like the others.
          yield* a.declare([{ resource: "primary-db", limit: { itemsPerSecond: 100 } }], "worker A")
          const updated = yield* b.declare(
            [{ resource: "primary-db", limit: { itemsPerSecond: 200, itemsBurst: 50 } }],
            "B"
          )
          expect([updated[0]!.outcome, ResourceLimiter.limitOf(updated[0]!.setting)]).toEqual([
            "updated",
            { itemsPerSecond: 200, itemsBurst: 50 }
          ])
        })
    )

    test(
      "bad item settings are refused with the setting and the fix, and change nothing",
      (a, b) =>
        Effect.gen(function*() {
          yield* a.declare([{ resource: "billing-api", limit: { itemsPerSecond: 500 } }], "test")
          for (const bad of [Number.NaN, 0, -5, Number.POSITIVE_INFINITY]) {
            const refused = yield* Effect.flip(
              b.set("billing-api", { itemsPerSecond: bad }, operator, { create: false })
            )
            expect(refused.message).toContain(
              `limit of "billing-api": itemsPerSecond must be a positive number of items per second`
            )
            expect(refused.message).toContain(`(got ${String(bad)})`)
          }
          const fraction = yield* Effect.flip(b.set("billing-api", { itemsBurst: 2.5 }, operator, { create: false }))
          expect(fraction.message).toContain("itemsBurst must be a positive integer")
          const zero = yield* Effect.flip(b.set("billing-api", { itemsBurst: 0 }, operator, { create: false }))
          expect(zero.message).toContain("leave it out for one second of items")
          const burstAlone = yield* Effect.flip(b.set("primary-db", { itemsBurst: 100 }, operator, { create: true }))
          expect(burstAlone.message).toContain("itemsBurst needs")
          const settings = yield* a.settings
          expect(settings.map((s) => [s.resource, ResourceLimiter.limitOf(s)])).toEqual([
            ["billing-api", { itemsPerSecond: 500 }]
          ])
          expect(yield* a.history({ limit: 10 })).toHaveLength(1)
        })
    )

    test("bad settings are refused with the setting and the fix, and change nothing", (a, b) =>
      Effect.gen(function*() {
        yield* a.declare([{ resource: "primary-db", limit: { chunksPerSecond: 50, inFlight: 8 } }], "test")
        const nan = yield* Effect.flip(
          b.set("primary-db", { chunksPerSecond: Number.NaN }, operator, { create: false })
        )
        expect(nan.message).toContain(`limit of "primary-db": chunksPerSecond must be a positive number`)
        const zero = yield* Effect.flip(b.set("primary-db", { inFlight: 0 }, operator, { create: false }))
        expect(zero.message).toContain("inFlight must be an integer from 1 to 10000")
        const fraction = yield* Effect.flip(b.set("primary-db", { burst: 1.5 }, operator, { create: false }))
        expect(fraction.message).toContain("burst must be a positive integer")
        const burstAlone = yield* Effect.flip(b.set("billing-api", { burst: 2 }, operator, { create: true }))
        expect(burstAlone.message).toContain("burst needs")
        const unknown = yield* Effect.flip(b.set("primary-dbb", { inFlight: 2 }, operator, { create: false }))
        expect(unknown._tag).toBe("NotFound")
        const badName = yield* Effect.flip(b.set("Primary DB", { inFlight: 2 }, operator, { create: true }))
        expect(badName.message).toContain(`resource "Primary DB" is not a valid name`)
        const settings = yield* a.settings
        expect(settings.map((s) => [s.resource, ResourceLimiter.limitOf(s)])).toEqual([
          ["primary-db", { chunksPerSecond: 50, inFlight: 8 }]
        ])
        expect(yield* a.history({ limit: 10 })).toHaveLength(1)
      }))
  })
}
