/**
 * The resource limiter on its in-memory driver, under `TestClock`: rates by reservation, in-flight caps,
 * expiring permits, cached limits that follow an operator's change, the audit log, bad settings; and
 * workers on the in-memory engine whose steps share a capped resource.
 */
import { ResourceLimiterConformance } from "@chunkwise/testing"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Effect, Exit, Fiber, Layer, Metric, Schema, Scope, TestClock } from "effect"
import { Job, MemoryDatabase, Metrics, ResourceLimiter, Runner, StateStore, Step, Worker } from "../src/index.js"
import { closeDriven, driveUntil, fastWorker, memoryEngine, runEnded } from "./fixtures.js"

const holder = (unit: string): ResourceLimiter.Holder => ({
  runId: "run_1",
  unitId: unit,
  partitionKey: unit,
  job: "job",
  step: "step",
  workerId: "w"
})

const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
})

describe("ResourceLimiter (memory driver, TestClock)", () => {
  it.effect("a rate grants no more than rate × elapsed + burst, in reservation order, one call each", () =>
    Effect.gen(function*() {
      const rateSeconds = Metric.tagged(
        Metric.tagged(Metrics.throttledSeconds, "resource", "primary-db"),
        "kind",
        "rate"
      )
      const before = yield* Metric.value(rateSeconds)
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([{ resource: "primary-db", limit: { chunksPerSecond: 10, burst: 2 } }], "test")
      const started: Array<number> = []
      const fibers = yield* Effect.forEach(
        Array.from({ length: 12 }, (_, i) => i),
        (i) =>
          Effect.fork(Effect.gen(function*() {
            const permits = yield* limiter.acquire(["primary-db"], holder(`u${i}`), 10_000)
            started.push(yield* Clock.currentTimeMillis)
            return permits
          }))
      )
      yield* settle
      // The burst goes at once; the rest wait for their reserved time.
      expect(started).toHaveLength(2)
      const waiting = yield* limiter.waits({})
      expect(waiting.waits.map((w) => w.kind)).toEqual(Array(10).fill("rate"))
      for (let i = 0; i < 24; i++) {
        yield* TestClock.adjust("50 millis")
        yield* settle
      }
      const permits = yield* Effect.forEach(fibers, Fiber.join)
      expect(started).toHaveLength(12)
      // Tokens at 0, 0, 100, 200, ..., 1000 ms.
      expect(permits.map((p) => Math.round(p.grants[0]!.grantedAt * 1000) / 1000).sort((a, b) => a - b)).toEqual([
        0,
        0,
        100,
        200,
        300,
        400,
        500,
        600,
        700,
        800,
        900,
        1000
      ])
      expect(ResourceLimiterConformance.worstExcess(started, 10, 2)).toBeLessThanOrEqual(1e-9)
      expect((yield* limiter.waits({})).waits).toEqual([])
      const seconds = yield* Metric.value(rateSeconds)
      expect(seconds.count - before.count).toBeCloseTo(0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.6 + 0.7 + 0.8 + 0.9 + 1.0, 6)
    }))

  it.effect("an item rate charges each chunk its planned size at one grant time; a chunk above the burst waits for its excess", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([{ resource: "billing-api", limit: { itemsPerSecond: 100, itemsBurst: 50 } }], "test")
      const sizes = [30, 30, 30, 100, 10]
      const started: Array<{ readonly grantedAt: number; readonly items: number }> = []
      const fibers: Array<Fiber.RuntimeFiber<ResourceLimiter.Permits, unknown>> = []
      for (const [i, items] of sizes.entries()) {
        fibers.push(
          yield* Effect.fork(Effect.gen(function*() {
            const permits = yield* limiter.acquire(["billing-api"], holder(`u${i}`), 10_000, { items })
            started.push({ grantedAt: yield* Clock.currentTimeMillis, items })
            return permits
          }))
        )
        // In this order: each reserves before the next asks.
        yield* settle
      }
      // The first 30 of the burst of 50 go at once; the next 30 wait for 10 more items (100 ms).
      expect(started).toEqual([{ grantedAt: 0, items: 30 }])
      for (let i = 0; i < 32; i++) {
        yield* TestClock.adjust("50 millis")
        yield* settle
      }
      const permits = yield* Effect.forEach(fibers, Fiber.join)
      // 30 at 0, 30 at 100 ms, 30 at 400 ms; the chunk of 100 (above the burst) once its 100 items refilled,
      // 1 s later; the 10 after it 100 ms after that. Nothing waits for ever.
      expect(permits.map((p) => [p.grants[0]!.grantedAt, p.grants[0]!.items])).toEqual([
        [0, 30],
        [100, 30],
        [400, 30],
        [1400, 100],
        [1500, 10]
      ])
      expect(started.map((s) => s.grantedAt)).toEqual([0, 100, 400, 1400, 1500])
      expect(ResourceLimiterConformance.worstItemExcess(started, 100, 100)).toBeLessThanOrEqual(1e-9)
      expect((yield* limiter.waits({})).waits).toEqual([])
    }))

  it.effect("without a size a chunk counts as one item; a size that is not a count dies naming it", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([
        { resource: "billing-api", limit: { itemsPerSecond: 10 } },
        { resource: "primary-db", limit: { chunksPerSecond: 10 } }
      ], "test")
      const permits = yield* limiter.acquire(["billing-api", "primary-db"], holder("u1"), 10_000)
      // A resource without an item rate takes no items.
      expect(permits.grants.map((g) => [g.resource, g.items])).toEqual([["billing-api", 1], ["primary-db", 0]])
      for (const items of [-1, 2.5, Number.NaN]) {
        const exit = yield* Effect.exit(limiter.acquire(["billing-api"], holder("u2"), 10_000, { items }))
        expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
        expect(JSON.stringify(exit)).toContain(
          `ResourceLimiter.acquire: items must be the chunk's planned size, an integer of 0 or more (got ${items})`
        )
      }
      // Nothing was taken by the refused calls: the bucket of 10 has 9 items left.
      expect((yield* limiter.acquire(["billing-api"], holder("u3"), 10_000, { items: 9 })).grants[0]!.waitedMs).toBe(0)
    }))

  it.effect("an in-flight cap of 2 is never exceeded, and a release wakes the next waiter at once", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([{ resource: "billing-api", limit: { inFlight: 2 } }], "test")
      let running = 0
      let most = 0
      const done: Array<number> = []
      const fibers = yield* Effect.forEach(
        Array.from({ length: 6 }, (_, i) => i),
        (i) =>
          Effect.fork(Effect.gen(function*() {
            const permits = yield* limiter.acquire(["billing-api"], holder(`u${i}`), 10_000)
            running += 1
            most = Math.max(most, running)
            yield* Effect.sleep("1 second")
            running -= 1
            yield* limiter.release(permits)
            done.push(yield* Clock.currentTimeMillis)
          }))
      )
      yield* settle
      expect(running).toBe(2)
      const usage = yield* limiter.settings
      expect(usage.map((u) => [u.resource, u.inUse, u.waiting])).toEqual([["billing-api", 2, 4]])
      for (let i = 0; i < 4; i++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      yield* Effect.forEach(fibers, Fiber.join)
      expect(most).toBe(2)
      // Woken by the release, not by a poll: two finish every second.
      expect(done).toEqual([1000, 1000, 2000, 2000, 3000, 3000])
    }))

  it.effect("a permit whose holder died expires like a lease; a renewed one does not", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 1 } }], "test")
      const alive = yield* limiter.acquire(["primary-db"], holder("alive"), 3000)
      const waiter = yield* Effect.fork(limiter.acquire(["primary-db"], holder("waiter"), 3000))
      // (Each step lets the waiter run before time moves on, so its waits are set from the right time:
      // first until it waits, however busy the machine, then a settle after each move.)
      for (let i = 0; i < 1000 && (yield* limiter.settings)[0]!.waiting === 0; i++) yield* Effect.yieldNow()
      yield* settle
      // The holder renews (its heartbeat) twice: the waiter still waits past the first expiry.
      for (let i = 0; i < 2; i++) {
        yield* TestClock.adjust("2 seconds")
        yield* settle
        expect(yield* limiter.renew(alive.slots, 3000)).toEqual(alive.slots)
        yield* settle
      }
      expect(waiter.unsafePoll()).toBeNull()
      // Then it dies: no release, no renewal. Its slot comes back when it expires. (The waiter polls
      // with a growing back-off; if it last polled before the expiry, its next poll is up to a back-off
      // later, so time moves on in steps until it has the slot, within a few back-offs.)
      yield* TestClock.adjust("3500 millis")
      yield* settle
      for (let i = 0; i < 30 && waiter.unsafePoll() === null; i++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      expect(waiter.unsafePoll()).not.toBeNull()
      const permits = yield* Fiber.join(waiter)
      expect(permits.slots).toHaveLength(1)
      // The dead holder's late release does not free the slot now held by another.
      yield* limiter.release(alive)
      expect((yield* limiter.settings)[0]!.inUse).toBe(1)
      expect(yield* limiter.renew(alive.slots, 3000)).toEqual([])
    }))

  it.effect("interrupted while waiting, an acquire holds nothing", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([
        { resource: "a-db", limit: { inFlight: 1 } },
        { resource: "b-api", limit: { inFlight: 1 } }
      ], "test")
      const b = yield* limiter.acquire(["b-api"], holder("b"), 10_000)
      // Takes a-db, then waits for b-api; interrupted, it gives a-db back.
      const both = yield* Effect.fork(limiter.acquire(["b-api", "a-db"], holder("both"), 10_000))
      yield* settle
      expect((yield* limiter.settings).map((u) => [u.resource, u.inUse])).toEqual([["a-db", 1], ["b-api", 1]])
      yield* Fiber.interrupt(both)
      expect((yield* limiter.settings).map((u) => [u.resource, u.inUse])).toEqual([["a-db", 0], ["b-api", 1]])
      yield* limiter.release(b)
    }))

  it.effect("a limit an operator changes reaches another worker's cache within its TTL, and is audited", () =>
    Effect.gen(function*() {
      const store = yield* ResourceLimiter.makeMemoryStore
      const operator = yield* ResourceLimiter.make(store)
      const worker = yield* ResourceLimiter.make(store, { cacheTtl: "5 seconds" })
      yield* worker.declare([{ resource: "primary-db", limit: {} }], "worker w1")
      // No limit: granted at once, and the worker caches that.
      expect(yield* worker.acquire(["primary-db"], holder("u0"), 10_000)).toEqual({ slots: [], grants: [] })
      yield* TestClock.adjust("1 second")
      yield* operator.set("primary-db", { inFlight: 1 }, { actor: "ops", reason: "primary at 90% CPU" }, {
        create: false
      })
      const held = yield* operator.acquire(["primary-db"], holder("u1"), 10_000)
      expect(held.slots).toHaveLength(1)
      // Still within the worker's cache TTL: it does not know the cap yet.
      expect((yield* worker.acquire(["primary-db"], holder("u2"), 10_000)).slots).toEqual([])
      yield* TestClock.adjust("4 seconds")
      const capped = yield* Effect.fork(worker.acquire(["primary-db"], holder("u3"), 10_000))
      yield* settle
      expect(capped.unsafePoll()).toBeNull()
      expect((yield* worker.waits({ runId: "run_1" })).waits.map((w) => [w.partitionKey, w.resource, w.kind])).toEqual([
        ["u3", "primary-db", "in-flight"]
      ])
      yield* operator.release(held)
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(capped)).slots).toHaveLength(1)
      const history = yield* operator.history({ resource: "primary-db", limit: 10 })
      expect(history.map((c) => [c.at, c.actor, c.reason, c.before, c.after])).toEqual([
        [0, "worker w1", "first use: the default declared in code", null, {}],
        [1000, "ops", "primary at 90% CPU", {}, { inFlight: 1 }]
      ])
      // A later code default does not replace the operator's setting.
      const declared = yield* worker.declare([{ resource: "primary-db", limit: { inFlight: 8 } }], "worker w2")
      expect(declared.map((d) => [d.outcome, d.setting.inFlight, d.setting.source])).toEqual([
        ["operator", 1, "operator"]
      ])
    }))

  it.effect("code defaults follow the code while no operator changed them", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      const first = yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 8 } }], "worker a")
      const again = yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 8 } }], "worker b")
      const changed = yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 4 } }], "worker c")
      expect([first, again, changed].map((d) => d[0]!.outcome)).toEqual(["created", "unchanged", "updated"])
      expect((yield* limiter.history({ limit: 10 })).map((c) => [c.actor, c.after])).toEqual([
        ["worker a", { inFlight: 8 }],
        ["worker c", { inFlight: 4 }]
      ])
    }))

  it.effect("a lowered cap drains: no new permit until the holders above it have left", () =>
    Effect.gen(function*() {
      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 3 } }], "test")
      const held = yield* Effect.forEach([0, 1, 2], (i) => limiter.acquire(["primary-db"], holder(`h${i}`), 60_000))
      yield* limiter.set("primary-db", { inFlight: 1 }, { actor: "ops", reason: "slow down" }, { create: false })
      const next = yield* Effect.fork(limiter.acquire(["primary-db"], holder("next"), 60_000))
      yield* limiter.release(held[0]!)
      yield* TestClock.adjust("1 second")
      expect(next.unsafePoll()).toBeNull()
      yield* limiter.release(held[1]!)
      yield* TestClock.adjust("1 second")
      expect(next.unsafePoll()).toBeNull()
      yield* limiter.release(held[2]!)
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(next)).slots.map((s) => s.slot)).toEqual([1])
    }))

  it.effect("bad settings are refused with the setting's name and the fix", () =>
    Effect.gen(function*() {
      const label = (key: string) => `limits["primary-db"]${key === "" ? "" : `.${key}`}`
      expect(ResourceLimiter.invalidLimit({ inFlight: 0 }, label)).toContain(
        `limits["primary-db"].inFlight must be an integer from 1 to 10000`
      )
      expect(ResourceLimiter.invalidLimit({ inFlight: 2.5 }, label)).toContain("(got 2.5)")
      expect(ResourceLimiter.invalidLimit({ chunksPerSecond: -1 }, label)).toContain(
        `limits["primary-db"].chunksPerSecond must be a positive number of chunks per second, e.g. 50 or 0.5 (got -1)`
      )
      expect(ResourceLimiter.invalidLimit({ chunksPerSecond: Number.NaN }, label)).toContain("(got NaN)")
      expect(ResourceLimiter.invalidLimit({ chunksPerSecond: 0 }, label)).toContain("leave it out for no rate limit")
      expect(ResourceLimiter.invalidLimit({ burst: 5 }, label)).toContain("burst needs")
      expect(ResourceLimiter.invalidLimit({ chunkPerSecond: 5 }, label)).toContain(
        `limits["primary-db"].chunkPerSecond is not a limit setting; use chunksPerSecond, burst, itemsPerSecond, ` +
          `itemsBurst or inFlight`
      )
      expect(ResourceLimiter.invalidLimit({ itemsPerSecond: 0 }, label)).toContain(
        `limits["primary-db"].itemsPerSecond must be a positive number of items per second, e.g. 5000 or 0.5 (got 0)`
      )
      expect(ResourceLimiter.invalidLimit({ itemsPerSecond: Number.NaN }, label)).toContain(
        "leave it out for no item rate limit"
      )
      expect(ResourceLimiter.invalidLimit({ itemsPerSecond: 100, itemsBurst: 1.5 }, label)).toContain(
        `limits["primary-db"].itemsBurst must be a positive integer, the items that may start at once after a pause ` +
          `(got 1.5)`
      )
      expect(ResourceLimiter.invalidLimit({ itemsBurst: 100 }, label)).toContain(
        `limits["primary-db"].itemsBurst needs limits["primary-db"].itemsPerSecond`
      )
      expect(ResourceLimiter.invalidLimit({ itemsPerSecond: 5000, itemsBurst: 20_000, inFlight: 8 }, label))
        .toBeUndefined()
      expect(ResourceLimiter.summary({ chunksPerSecond: 50, itemsPerSecond: 5000, inFlight: 8 })).toBe(
        "50 chunks/s (burst 50) · 5000 items/s (burst 5000) · 8 in flight"
      )
      expect(ResourceLimiter.invalidLimit(8, label)).toContain("must be an object like")
      expect(ResourceLimiter.invalidResourceName("Primary DB")).toContain(`e.g. "primary-db"`)
      expect(ResourceLimiter.invalidLimit({ chunksPerSecond: 0.5, inFlight: 8 }, label)).toBeUndefined()

      const limiter = yield* ResourceLimiter.makeMemory()
      yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 2 } }], "test")
      const negative = yield* Effect.flip(
        limiter.set("primary-db", { inFlight: -3 }, { actor: "ops", reason: "x" }, { create: false })
      )
      expect(negative.message).toContain(`limit of "primary-db": inFlight must be an integer from 1 to 10000`)
      const unknown = yield* Effect.flip(
        limiter.set("primry-db", { inFlight: 3 }, { actor: "ops", reason: "x" }, { create: false })
      )
      expect(unknown._tag).toBe("NotFound")
      const badName = yield* Effect.flip(
        limiter.set("Primary_DB!", { inFlight: 3 }, { actor: "ops", reason: "x" }, { create: true })
      )
      expect(badName.message).toContain("is not a valid name")
      // Nothing was changed by the refused calls.
      expect((yield* limiter.history({ limit: 10 })).length).toBe(1)
      const ttl = yield* Effect.flip(ResourceLimiter.makeMemory({ cacheTtl: "1 minute" }))
      expect(ttl.message).toContain("cacheTtl must be a duration above 0 and at most 5 seconds")

      expect(() => Step.single("s", { transaction: "none", resources: ["Primary DB"], run: () => Effect.void }))
        .toThrow(`Step "s": resource "Primary DB" is not a valid name`)
    }))
})

// ---- workers on the in-memory engine

/** Partition `pN` runs `chunks` chunks of one item, each taking 1 s (TestClock), on `primary-db`. */
const sharedJob = (counter: { running: number; most: number; chunks: number }, chunks: number) =>
  Job.make({
    name: "shared",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => ["p0", "p1", "p2", "p3"],
    steps: (step) => [
      step.chunked("load", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: 1,
        transaction: "chunk",
        resources: ["primary-db"],
        process: ({ cursor }) =>
          Effect.gen(function*() {
            const db = yield* MemoryDatabase.MemoryDatabase
            counter.running += 1
            counter.most = Math.max(counter.most, counter.running)
            yield* Effect.sleep("1 second")
            counter.running -= 1
            counter.chunks += 1
            yield* db.put("done", `${cursor.next}`, 1)
            return cursor.next + 1 >= chunks ? Step.done : { next: cursor.next + 1 }
          })
      })
    ],
    concurrency: { perWorker: 4 }
  })

describe("Worker with resource limits (memory engine, TestClock)", () => {
  it.scoped("two workers share an in-flight cap: never more than 2 chunks on the resource at once", () =>
    Effect.gen(function*() {
      const counter = { running: 0, most: 0, chunks: 0 }
      const job = sharedJob(counter, 3)
      const limits = { "primary-db": { inFlight: 2 } }
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "A", limits })
      yield* Worker.make({ jobs: [job], ...fastWorker, workerId: "B", limits })
      const { runId } = yield* Runner.start(job, { label: "shared" })
      let sawThrottled = false
      const limiter = yield* ResourceLimiter.ResourceLimiter
      yield* driveUntil(
        Effect.zipRight(
          Effect.map(limiter.waits({ runId }), ({ waits }) => {
            if (waits.some((w) => w.resource === "primary-db" && w.kind === "in-flight")) sawThrottled = true
          }),
          runEnded(runId)
        )
      )
      expect((yield* Runner.status(runId)).run.status).toBe("succeeded")
      expect(counter.chunks).toBe(12)
      expect(counter.most).toBe(2)
      expect(sawThrottled).toBe(true)
      expect((yield* limiter.settings).map((u) => [u.resource, u.inFlight, u.inUse])).toEqual([["primary-db", 2, 0]])
    }).pipe(Effect.provide(Layer.merge(memoryEngine(), ResourceLimiter.layerMemory()))))

  it.scoped("a worker charges each chunk its planned size on an item rate: items started stay within the rate", () =>
    Effect.gen(function*() {
      const started: Array<{ readonly grantedAt: number; readonly items: number }> = []
      const job = Job.make({
        name: "items",
        params: Schema.Struct({ label: Schema.String }),
        partitions: () => ["p0", "p1", "p2", "p3"],
        steps: (step) => [
          step.chunked("load", {
            cursor: Schema.Struct({ next: Schema.Number }),
            start: { next: 0 },
            chunkSize: 5,
            transaction: "chunk",
            resources: ["billing-api"],
            process: ({ chunkSize, cursor }) =>
              Effect.gen(function*() {
                started.push({ grantedAt: yield* Clock.currentTimeMillis, items: chunkSize })
                return Step.advance(
                  cursor.next + chunkSize >= 20 ? Step.done : { next: cursor.next + chunkSize },
                  chunkSize
                )
              })
          })
        ],
        concurrency: { perWorker: 4 }
      })
      yield* Worker.make({
        jobs: [job],
        ...fastWorker,
        limits: { "billing-api": { itemsPerSecond: 10, itemsBurst: 10 } }
      })
      const { runId } = yield* Runner.start(job, { label: "items" })
      yield* driveUntil(runEnded(runId))
      expect((yield* Runner.status(runId)).items).toBe(80)
      expect(started.reduce((sum, s) => sum + s.items, 0)).toBe(80)
      // 80 items at 10/s after a burst of 10: the last chunk starts no earlier than 6.5 s in.
      expect(ResourceLimiterConformance.worstItemExcess(started, 10, 10)).toBeLessThanOrEqual(1e-9)
      expect(Math.max(...started.map((s) => s.grantedAt)) - Math.min(...started.map((s) => s.grantedAt)))
        .toBeGreaterThanOrEqual(6_500)
    }).pipe(Effect.provide(Layer.merge(memoryEngine(), ResourceLimiter.layerMemory()))))

  it.scoped("on shutdown, a unit waiting for a permit gives its unit back: no attempt counted, nothing run", () =>
    Effect.gen(function*() {
      const counter = { running: 0, most: 0, chunks: 0 }
      const job = sharedJob(counter, 2)
      const limiter = yield* ResourceLimiter.ResourceLimiter
      yield* limiter.declare([{ resource: "primary-db", limit: { inFlight: 1 } }], "test")
      // Another process holds the only slot for an hour.
      yield* limiter.acquire(["primary-db"], holder("blocker"), 3_600_000)
      const scope = yield* Scope.make()
      yield* Worker.make({ jobs: [job], ...fastWorker, limits: { "primary-db": { inFlight: 1 } } }).pipe(
        Scope.extend(scope)
      )
      const { runId } = yield* Runner.start(job, { label: "drain" })
      yield* driveUntil(Effect.map(limiter.waits({ runId }), ({ waits }) => waits.length === 4))
      yield* closeDriven(scope)
      const store = yield* StateStore.StateStore
      const units = (yield* store.listUnits(runId, { limit: 10 })).filter((u) => u.kind === "partition")
      expect(units.map((u) => [u.status, u.attempt, u.chunks, u.crashesSinceProgress])).toEqual(
        Array(4).fill(["pending", 1, 0, 0])
      )
      expect(yield* store.listFailures(runId, { limit: 10 })).toEqual([])
      expect(counter.chunks).toBe(0)
      expect((yield* limiter.settings)[0]!.inUse).toBe(1)
    }).pipe(Effect.provide(Layer.merge(memoryEngine(), ResourceLimiter.layerMemory()))))

  it.scoped("a worker refuses limits it cannot enforce, and bad limits, naming the fix", () =>
    Effect.gen(function*() {
      const job = sharedJob({ running: 0, most: 0, chunks: 0 }, 1)
      const noLimiter = yield* Effect.exit(Worker.make({ jobs: [job], ...fastWorker }))
      expect(Exit.isFailure(noLimiter)).toBe(true)
      expect(JSON.stringify(noLimiter)).toContain(
        "step(s) shared/load name resources (primary-db), but no ResourceLimiter is provided"
      )
      const bad = yield* Effect.exit(
        Worker.make({ jobs: [job], ...fastWorker, limits: { "primary-db": { inFlight: 0 } } }).pipe(
          Effect.provide(ResourceLimiter.layerMemory())
        )
      )
      expect(JSON.stringify(bad)).toContain(`Worker: limits[\\"primary-db\\"].inFlight must be an integer from 1`)
      const badName = yield* Effect.exit(
        Worker.make({ jobs: [job], ...fastWorker, limits: { "Primary DB": { inFlight: 2 } } }).pipe(
          Effect.provide(ResourceLimiter.layerMemory())
        )
      )
      expect(JSON.stringify(badName)).toContain(`Worker: limits: resource \\"Primary DB\\" is not a valid name`)
    }).pipe(Effect.provide(memoryEngine())))
})
