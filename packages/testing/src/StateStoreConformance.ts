/**
 * The `StateStore` conformance suite: the memory and Postgres stores (and any other driver) run it in a
 * couple of lines, so each keeps the contract the worker relies on: idempotent starts, the receive
 * rules (D2), fenced claims, the compare-and-set commit (D3) inside the caller's transaction, lease
 * expiry, completion claimed once, audited operator actions, and the quarantine of items set aside
 * (recorded with their chunk, under skip budgets, re-run by an items unit).
 *
 * @since 0.1.0
 */
import { Errors, Job, type Message, Quarantine, StateStore, Step } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, type Layer, Option, Schema, TestClock } from "effect"

/** Options of the suite. */
export interface Options<W, E, R> {
  /** A fresh, empty store per test (plus whatever `writes` needs). */
  readonly make: () => Layer.Layer<StateStore.StateStore | W, E, R>
  /** `test-clock` for stores on Effect's `Clock`; `live` for stores on the database's clock. */
  readonly time: "test-clock" | "live"
  /**
   * A user write that joins the store's transaction and a way to read it back, to check that a failed
   * commit rolls the user's writes back with it (e.g. the `MemoryDatabase`, or a SQL table).
   */
  readonly writes: {
    readonly write: (key: string) => Effect.Effect<void, unknown, W>
    readonly read: (key: string) => Effect.Effect<boolean, unknown, W>
  }
}

const job = Job.make({
  name: "conformance",
  params: Schema.Struct({ n: Schema.Number }),
  partitions: () => [],
  steps: (step) => [
    step.chunked("first", {
      cursor: Schema.Struct({ next: Schema.Number }),
      start: { next: 0 },
      transaction: "none",
      process: ({ cursor }) => Effect.succeed(Step.advance(cursor.next > 0 ? Step.done : { next: 1 }, 1))
    }),
    step.single("second", { transaction: "none", run: () => Effect.void })
  ]
})

const operator = { actor: "conformance", reason: "testing the contract" }

let runs = 0

/** Registers the conformance tests under `describe(name)`. */
export const suite = <W, E, R>(name: string, options: Options<W, E, R>): void => {
  const leaseMs = options.time === "test-clock" ? 10_000 : 1_000
  const pass = (ms: number) => options.time === "test-clock" ? TestClock.adjust(ms) : Effect.sleep(ms)
  const test = (title: string, body: Effect.Effect<void, unknown, StateStore.StateStore | W>) =>
    options.time === "test-clock"
      ? it.effect(title, () => Effect.provide(body, options.make()) as Effect.Effect<void, unknown>)
      : it.live(title, () => Effect.provide(body, options.make()) as Effect.Effect<void, unknown>, 60_000)

  /** `createRun` of the suite's job (or `jobName`) with its params; the base key defaults to the run id. */
  const newRun = (runId: string, baseKey = runId, jobName = job.name) =>
    Effect.flatMap(StateStore.StateStore, (store) =>
      store.createRun({
        runId,
        job: jobName,
        runKey: runId,
        baseKey,
        params: { n: 1 },
        definition: job.definition,
        fingerprint: job.fingerprint
      }))

  /** A new run of the suite's job, still enumerating: no partitions yet. */
  const createRun = Effect.gen(function*() {
    const runId = `run_conformance_${process.pid}_${Date.now().toString(36)}_${runs++}`
    const { created } = yield* newRun(runId)
    expect(created).toBe(true)
    return runId
  })

  /**
   * A running run with one partition per weight (`k0, k1, ...`); `budget` maps the partition count to
   * the failure budget.
   */
  const openRun = (weights: ReadonlyArray<number>, budget: (count: number) => number = (count) => count) =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const runId = yield* createRun
      const units = weights.map((weight, i) => ({ unitId: `${runId}-u${i}`, partitionKey: `k${i}`, weight }))
      yield* store.insertUnits(runId, units)
      const run = yield* store.openRun(runId, budget)
      return { runId, run, unitIds: units.map((u) => u.unitId) }
    })

  /** Feeds, and returns the run's messages by unit id (feed hands each unit out once). */
  const messagesOf = (runId: string) =>
    Effect.flatMap(StateStore.StateStore, (store) =>
      Effect.map(
        store.feed({ maxOutstanding: 1000, redeliverAfterMs: 3_600_000 }),
        (messages) => new Map(messages.filter((m) => m.runId === runId).map((m) => [m.unitId, m]))
      ))

  /** Feeds and returns the message for the run's only (or first) unit. */
  const messageFor = (runId: string, unitId: string) =>
    Effect.flatMap(messagesOf(runId), (messages) =>
      messages.has(unitId)
        ? Effect.succeed(messages.get(unitId)!)
        : Effect.dieMessage(`feed did not return a message for ${unitId}`))

  const claim = (message: Message.WorkMessage, workerId: string, claimId?: string, jobConcurrency?: number) =>
    Effect.flatMap(
      StateStore.StateStore,
      (store) => store.claim({ message, workerId, leaseMs, jobConcurrency, claimId })
    )

  const claimed = (message: Message.WorkMessage, workerId: string, claimId?: string, jobConcurrency?: number) =>
    Effect.flatMap(claim(message, workerId, claimId, jobConcurrency), (result) =>
      result._tag === "Claimed"
        ? Effect.succeed(result)
        : Effect.dieMessage(`expected ${workerId} to claim ${message.unitId}, got ${JSON.stringify(result)}`))

  /** Commits one item of step `first`; with `unitDone`, its last chunk (with `fused`, and step `second`). */
  const commit = (
    lease: StateStore.Lease,
    from: StateStore.Position,
    key: string,
    unitDone = false,
    fused?: StateStore.FusedCommit,
    last = false
  ) =>
    Effect.flatMap(StateStore.StateStore, (store) =>
      store.commitChunk({
        last,
        lease,
        from,
        to: unitDone
          ? { stepIndex: 2, chunkSeq: 0, cursor: null }
          : { stepIndex: from.stepIndex, chunkSeq: from.chunkSeq + 1, cursor: { next: from.chunkSeq + 1 } },
        unitDone,
        items: 1,
        idempotencyKey: key,
        step: "first",
        leaseMs,
        fused
      }))

  const unitOf = (runId: string, unitId: string) =>
    Effect.flatMap(
      StateStore.StateStore,
      (store) => Effect.map(store.listUnits(runId, { limit: 1000 }), (units) => units.find((u) => u.unitId === unitId)!)
    )

  /** Records a `BadRecord` failure of the unit for operators and fails the unit, as a worker does. */
  const failBadRecord = (lease: StateStore.Lease, partitionKey: string, cursor: string | null) =>
    Effect.flatMap(StateStore.StateStore, (store) =>
      Effect.zipRight(
        store.recordFailure({
          runId: lease.runId,
          unitId: lease.unitId,
          partitionKey,
          step: "first",
          errorTag: "BadRecord",
          message: "record 7 is invalid",
          cause: "BadRecord: record 7 is invalid",
          cursor,
          attempt: 1,
          runbookId: "bad-record",
          severity: "ticket",
          outcome: "failed",
          at: Date.now()
        }),
        store.failUnit(lease, { _tag: "Failed", errorTag: "BadRecord" })
      ))

  describe(name, () => {
    test(
      "createRun is idempotent and insertUnits leaves existing partitions alone",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, run, unitIds } = yield* openRun([1, 2])
        expect(run.status).toBe("running")
        expect(run.partitionCount).toBe(2)
        const again = yield* newRun(runId)
        expect(again.created).toBe(false)
        expect(again.run.runId).toBe(runId)
        yield* store.insertUnits(runId, [{ unitId: unitIds[0]!, partitionKey: "k0", weight: 99 }])
        const units = yield* store.listUnits(runId, { limit: 10 })
        expect(units.map((u) => [u.partitionKey, u.weight]).sort()).toEqual([["k0", 1], ["k1", 2]])
        expect((yield* store.progress(runId)).units.pending).toBe(2)
      })
    )

    test(
      "createRun refuses a second live run of the same params (of two at once too); an ended run re-opens only without one",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const base = `base_${process.pid}_${Date.now().toString(36)}_${runs++}`
        const both = yield* Effect.all([newRun(`${base}-a`, base), newRun(`${base}-b`, base)].map(Effect.either), {
          concurrency: "unbounded"
        })
        const created = both.filter(Either.isRight).map((e) => e.right)
        const refused = both.filter(Either.isLeft).map((e) => e.left)
        expect(created.map((c) => c.created)).toEqual([true])
        expect(refused.map((e) => e._tag)).toEqual(["RunAlreadyActive"])
        const first = created[0]!.run.runId
        const second = first === `${base}-a` ? `${base}-b` : `${base}-a`
        expect(refused[0]).toMatchObject({ activeRunId: first, activeStatus: "enumerating", runKey: second })
        expect(Option.isNone(yield* store.getRun(second))).toBe(true)
        // Attaching to the live run itself is never refused; other params and other jobs are not held back.
        expect((yield* newRun(first, base)).created).toBe(false)
        expect((yield* newRun(`${base}-c`, `${base}-other`)).created).toBe(true)
        expect((yield* newRun(`${base}-d`, base, `${job.name}-other`)).created).toBe(true)
        yield* store.insertUnits(first, [{ unitId: `${first}-u0`, partitionKey: "k0", weight: 1 }])
        yield* store.openRun(first, (count) => count)
        expect(yield* Effect.flip(newRun(second, base))).toMatchObject({
          _tag: "RunAlreadyActive",
          activeStatus: "running"
        })
        expect((yield* store.cancelRun(first, operator)).status).toBe("cancelled")
        expect((yield* newRun(second, base)).created).toBe(true)
        // Nor does the ended run re-open beside its live re-run: a retry (its dry run too) is refused.
        for (const dryRun of [true, false]) {
          expect(yield* Effect.flip(store.retry(first, { dryRun }, operator))).toMatchObject({
            _tag: "RunAlreadyActive",
            activeRunId: second
          })
        }
        expect((yield* store.getRun(first)).pipe(Option.map((r) => r.status))).toEqual(Option.some("cancelled"))
        expect((yield* store.listUnits(first, { limit: 10 })).map((u) => u.status)).toEqual(["cancelled"])
        expect((yield* store.cancelRun(second, operator)).status).toBe("cancelled")
        expect((yield* store.retry(first, { dryRun: false }, operator)).map((p) => p.partitionKey)).toEqual(["k0"])
        expect((yield* store.getRun(first)).pipe(Option.map((r) => r.status))).toEqual(Option.some("running"))
      })
    )

    test(
      "feed sends the heaviest partitions first, at most maxOutstanding, and each once",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 5, 3])
        const first = yield* store.feed({ maxOutstanding: 2, redeliverAfterMs: 3_600_000 })
        const ours = first.filter((m) => m.runId === runId)
        expect(ours.map((m) => m.unitId)).toEqual([unitIds[1], unitIds[2]])
        const second = yield* store.feed({ maxOutstanding: 2, redeliverAfterMs: 3_600_000 })
        expect(second.filter((m) => m.runId === runId)).toEqual([])
        const third = yield* store.feed({ maxOutstanding: 3, redeliverAfterMs: 3_600_000 })
        expect(third.filter((m) => m.runId === runId).map((m) => m.unitId)).toEqual([unitIds[0]])
      })
    )

    test(
      "feed hands a large run out in feed order across feeds, each unit once",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        // 300 distinct weights in a shuffled order (37 and 300 are coprime).
        const weights = Array.from({ length: 300 }, (_, i) => ((i * 37) % 300) + 1)
        const { runId, unitIds } = yield* openRun(weights)
        const heaviestFirst = unitIds.map((id, i) => ({ id, weight: weights[i]! }))
          .sort((a, b) => b.weight - a.weight).map((u) => u.id)
        const handed: Array<string> = []
        for (const maxOutstanding of [40, 80, 80, 300, 300]) {
          const messages = yield* store.feed({ maxOutstanding, redeliverAfterMs: 3_600_000 })
          handed.push(...messages.filter((m) => m.runId === runId).map((m) => m.unitId))
        }
        expect(handed).toEqual(heaviestFirst)
      })
    )

    test(
      "a claim fences the unit: another worker is told to come back later, a stale message is acked",
      Effect.gen(function*() {
        const { runId, unitIds } = yield* openRun([1])
        const message = yield* messageFor(runId, unitIds[0]!)
        const first = yield* claimed(message, "w1")
        expect(first.lease).toMatchObject({ runId, unitId: unitIds[0], workerId: "w1" })
        // The unit and its run, each with its own status.
        expect(first.unit).toMatchObject({
          runId,
          unitId: unitIds[0],
          status: "leased",
          leaseOwner: "w1",
          fencingToken: first.lease.fencingToken,
          finishedAt: null
        })
        expect(first.run).toMatchObject({ runId, job: job.name, status: "running", params: { n: 1 }, finishedAt: null })
        expect(first.run.fingerprint).toBe(job.fingerprint)
        const second = yield* claim(message, "w2")
        expect(second._tag).toBe("Later")
        if (second._tag === "Later") {
          expect(second.reason).toBe("leased-elsewhere")
          expect(second.delayMs).toBeGreaterThan(0)
          expect(second.delayMs).toBeLessThanOrEqual(leaseMs)
        }
        const stale = yield* claim({ ...message, seq: message.seq - 1 }, "w2")
        expect(stale).toEqual({ _tag: "Ack", reason: "stale-message" })
        const unknown = yield* claim({ ...message, unitId: "no-such-unit" }, "w2")
        expect(unknown).toEqual({ _tag: "Ack", reason: "unknown-unit" })
      })
    )

    test(
      "commitChunk is a compare-and-set on the token and the checkpoint, and records the ledger",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* commit(lease, { stepIndex: 0, chunkSeq: 0 }, "key-0")
        const wrongToken = yield* Effect.flip(
          commit({ ...lease, fencingToken: lease.fencingToken + 1 }, { stepIndex: 0, chunkSeq: 1 }, "key-x")
        )
        expect(wrongToken).toBeInstanceOf(Errors.LeaseLost)
        const moved = yield* Effect.flip(commit(lease, { stepIndex: 0, chunkSeq: 0 }, "key-0-again"))
        expect(moved).toBeInstanceOf(Errors.CheckpointMoved)
        yield* commit(lease, { stepIndex: 0, chunkSeq: 1 }, "key-1")
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["key-0", "key-1"])
        const unit = yield* unitOf(runId, unitIds[0]!)
        expect(unit).toMatchObject({ stepIndex: 0, chunkSeq: 2, cursor: { next: 2 }, chunks: 2, items: 2 })
      })
    )

    test(
      "commitChunk with a fused step records both ledger rows and moves the unit past that step, or neither",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        const second = { step: "second", idempotencyKey: "second-0" }
        const lastChunk = (from: StateStore.Position, fencingToken: number) =>
          commit({ ...lease, fencingToken }, from, `chunk-${from.chunkSeq}`, true, second)
        yield* commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0")
        // Refused by the fencing token or the checkpoint: neither row is recorded.
        expect(yield* Effect.flip(lastChunk({ stepIndex: 0, chunkSeq: 1 }, lease.fencingToken + 1))).toBeInstanceOf(
          Errors.LeaseLost
        )
        expect(yield* Effect.flip(lastChunk({ stepIndex: 0, chunkSeq: 0 }, lease.fencingToken))).toBeInstanceOf(
          Errors.CheckpointMoved
        )
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0"])
        expect(yield* lastChunk({ stepIndex: 0, chunkSeq: 1 }, lease.fencingToken)).toEqual({
          runStatus: "finalizing"
        })
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0", "chunk-1", "second-0"])
        expect(yield* unitOf(runId, unitIds[0]!)).toMatchObject({
          status: "succeeded",
          stepIndex: 2,
          chunkSeq: 0,
          cursor: null,
          chunks: 3,
          items: 2
        })
      })
    )

    test(
      "commitChunk with a fused step is refused with RunStopped once the run stopped (D8); without one it commits",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1], () => 0)
        const messages = yield* messagesOf(runId)
        const { lease } = yield* claimed(messages.get(unitIds[0]!)!, "w1")
        const bad = yield* claimed(messages.get(unitIds[1]!)!, "w2")
        yield* failBadRecord(bad.lease, "k1", null)
        expect((yield* store.progress(runId)).run.status).toBe("failing")
        const second = { step: "second", idempotencyKey: "second-0" }
        const refused = yield* Effect.flip(store.transaction(Effect.zipRight(
          options.writes.write(`${runId}-fused`),
          commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0", true, second)
        )))
        expect(refused).toBeInstanceOf(Errors.RunStopped)
        expect(refused).toMatchObject({ runId, status: "failing" })
        // Nothing recorded, the user's writes rolled back, the unit still where it was, still leased.
        expect(yield* options.writes.read(`${runId}-fused`)).toBe(false)
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual([])
        expect(yield* unitOf(runId, unitIds[0]!)).toMatchObject({ status: "leased", stepIndex: 0, chunks: 0 })
        // The chunk alone still commits in a failing run, and says the run is failing.
        expect(yield* commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0")).toEqual({ runStatus: "failing" })
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0"])
      })
    )

    test(
      "a unit that turns pending after its run went failing (a release, a retry put off) does not keep the run from finalizing",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([3, 2, 1], () => 0)
        const messages = yield* messagesOf(runId)
        const [released, later, bad] = yield* Effect.forEach(
          unitIds,
          (unitId, i) => claimed(messages.get(unitId)!, `w${i}`)
        )
        yield* failBadRecord(bad!.lease, "k2", null)
        expect((yield* store.progress(runId)).run.status).toBe("failing")
        // After the failure cancelled what was pending, two units turn pending again: a draining worker
        // gives one back, another's retry is put off. Nothing claims a unit of a run that is not running.
        yield* store.release(released!.lease, { abandonedChunk: false })
        yield* store.failUnit(later!.lease, { _tag: "RetryLater", errorTag: "Transient", delayMs: 60_000 })
        // The sweeper (every worker runs it) finalizes the run, cancelling them.
        expect(yield* store.sweep()).toContain(runId)
        expect((yield* store.progress(runId)).run.status).toBe("finalizing")
        for (const unitId of [unitIds[0]!, unitIds[1]!]) {
          expect(yield* unitOf(runId, unitId)).toMatchObject({ status: "cancelled", leaseOwner: null })
        }
      })
    )

    test(
      "a unit given back or put off counts its attempts on from the worker's count, unless it moved past that chunk",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1, 1, 1, 1])
        const messages = yield* messagesOf(runId)
        const [cut, waited, later, plain, committed] = yield* Effect.forEach(
          unitIds,
          (unitId, i) => claimed(messages.get(unitId)!, `w${i}`)
        )
        const first = (attempt: number) => ({ stepIndex: 0, chunkSeq: 0, attempt })
        // A chunk cut short on its third attempt (two retried in-process): the next is the fourth.
        yield* store.release(cut!.lease, { abandonedChunk: true, at: first(3) })
        // Given back while waiting for a permit before its second attempt: nothing of it ran.
        yield* store.release(waited!.lease, { abandonedChunk: false, at: first(2) })
        // Its fifth attempt failed and the retry is put off: the next is the sixth.
        yield* store.failUnit(later!.lease, {
          _tag: "RetryLater",
          errorTag: "Transient",
          delayMs: 60_000,
          at: first(5)
        })
        // Without the worker's count, the store's own: attempt 1, cut short.
        yield* store.release(plain!.lease, { abandonedChunk: true })
        // Its third attempt committed as the worker stopped: the unit moved on, its next chunk on attempt 1.
        yield* commit(committed!.lease, { stepIndex: 0, chunkSeq: 0 }, "k4-0")
        yield* store.release(committed!.lease, { abandonedChunk: true, at: first(3) })
        const attempts = yield* Effect.forEach(unitIds, (unitId) => Effect.map(unitOf(runId, unitId), (u) => u.attempt))
        expect(attempts).toEqual([4, 2, 6, 2, 1])
        // A count behind the store's does not lower it.
        const again = yield* claimed(messages.get(unitIds[0]!)!, "w9")
        yield* store.release(again.lease, { abandonedChunk: false, at: first(1) })
        expect((yield* unitOf(runId, unitIds[0]!)).attempt).toBe(4)
      })
    )

    test(
      "a failed commit rolls the user's writes back with it; a good one commits them with the checkpoint",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        const refused = yield* Effect.either(store.transaction(Effect.zipRight(
          options.writes.write(`${runId}-refused`),
          commit({ ...lease, fencingToken: lease.fencingToken + 7 }, { stepIndex: 0, chunkSeq: 0 }, "refused")
        )))
        expect(Either.isLeft(refused)).toBe(true)
        expect(yield* options.writes.read(`${runId}-refused`)).toBe(false)
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual([])
        yield* store.transaction(Effect.zipRight(
          options.writes.write(`${runId}-applied`),
          commit(lease, { stepIndex: 0, chunkSeq: 0 }, "applied")
        ))
        expect(yield* options.writes.read(`${runId}-applied`)).toBe(true)
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["applied"])
      })
    )

    test(
      "an expired lease can be claimed by another worker, and the old holder (a zombie) cannot commit",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const message = yield* messageFor(runId, unitIds[0]!)
        const zombie = yield* claimed(message, "w1")
        yield* pass(leaseMs + 200)
        const taker = yield* claimed(message, "w2")
        expect(taker.lease.fencingToken).toBeGreaterThan(zombie.lease.fencingToken)
        expect(yield* store.renewLeases("w1", [zombie.lease], leaseMs)).toEqual([])
        expect(yield* store.renewLeases("w2", [taker.lease], leaseMs)).toEqual([unitIds[0]])
        const refused = yield* Effect.flip(commit(zombie.lease, { stepIndex: 0, chunkSeq: 0 }, "zombie"))
        expect(refused).toBeInstanceOf(Errors.LeaseLost)
        yield* commit(taker.lease, { stepIndex: 0, chunkSeq: 0 }, "taker")
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["taker"])
      })
    )

    test(
      "a claim repeated with its id (its reply was lost) gets the same lease back, extended, and counts nothing",
      Effect.gen(function*() {
        const { runId, unitIds } = yield* openRun([1])
        const message = yield* messageFor(runId, unitIds[0]!)
        const first = yield* claimed(message, "w1", "claim-a")
        yield* pass(leaseMs / 2)
        const again = yield* claimed(message, "w1", "claim-a")
        expect(again.lease).toEqual(first.lease)
        expect(again.unit.attempt).toBe(1)
        expect(again.unit.crashesSinceProgress).toBe(0)
        // Extended from the repeat: still held past the first claim's expiry.
        yield* pass(leaseMs / 2 + 100)
        expect((yield* claim(message, "w2", "claim-b"))._tag).toBe("Later")
        // Another claim of the same worker, or the same id from another worker, is not the same claim.
        expect((yield* claim(message, "w1", "claim-c"))._tag).toBe("Later")
        expect((yield* claim(message, "w2", "claim-a"))._tag).toBe("Later")
        yield* commit(again.lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0")
        expect((yield* unitOf(runId, unitIds[0]!)).chunkSeq).toBe(1)
      })
    )

    test(
      "a claim repeated with its id under a job-wide cap keeps its one slot",
      Effect.gen(function*() {
        const { runId, unitIds } = yield* openRun([1, 1])
        const messages = yield* messagesOf(runId)
        const [first, second] = [messages.get(unitIds[0]!)!, messages.get(unitIds[1]!)!]
        const lost = yield* claimed(first, "w1", "claim-a", 1)
        // Every slot is held (by this claim's lease): the repeat still gets its lease back...
        const again = yield* claimed(first, "w1", "claim-a", 1)
        expect(again.lease).toEqual(lost.lease)
        // ...without taking a second slot: the cap still holds the other unit back.
        expect(yield* claim(second, "w2", "claim-b", 1)).toMatchObject({ _tag: "Later", reason: "job-concurrency" })
      })
    )

    test(
      "a claim repeated with its id after its lease expired takes the unit without counting a crash",
      Effect.gen(function*() {
        const { runId, unitIds } = yield* openRun([1, 1])
        const messages = yield* messagesOf(runId)
        const [unsettled, crashed] = [messages.get(unitIds[0]!)!, messages.get(unitIds[1]!)!]
        const lost = yield* claimed(unsettled, "w1", "claim-a")
        yield* claimed(crashed, "w1", "claim-b")
        yield* pass(leaseMs + 200)
        const again = yield* claimed(unsettled, "w1", "claim-a")
        expect(again.lease.fencingToken).toBeGreaterThan(lost.lease.fencingToken)
        expect([again.unit.attempt, again.unit.crashesSinceProgress]).toEqual([1, 0])
        // The same expired lease taken by a new claim is a crash of its holder, as ever.
        const taken = yield* claimed(crashed, "w1", "claim-c")
        expect([taken.unit.attempt, taken.unit.crashesSinceProgress]).toEqual([2, 1])
      })
    )

    test(
      "a failure is recorded for operators and fails the unit; the run completes without it, failed",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* failBadRecord(lease, "k0", JSON.stringify({ next: 0 }))
        const [failure] = yield* store.listFailures(runId, { limit: 10 })
        expect(failure).toMatchObject({ errorTag: "BadRecord", partitionKey: "k0", runbookId: "bad-record" })
        expect((yield* unitOf(runId, unitIds[0]!)).status).toBe("failed")
        yield* store.tryFinalize(runId)
        expect(Option.getOrThrow(yield* store.getRun(runId)).status).toBe("finalizing")
      })
    )

    test(
      "the commit that ends the run's last open unit finalizes the run in its own transaction, and says so",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1])
        const messages = yield* messagesOf(runId)
        const first = yield* claimed(messages.get(unitIds[0]!)!, "w1")
        const second = yield* claimed(messages.get(unitIds[1]!)!, "w2")
        const end = (lease: StateStore.Lease, key: string) => commit(lease, { stepIndex: 0, chunkSeq: 0 }, key, true)
        // Another unit is still open: the run runs on.
        expect((yield* store.transaction(end(first.lease, "end-0"))).runStatus).toBe("running")
        // The last one: the run is finalizing with its finalize unit, the only message left to send.
        expect((yield* store.transaction(end(second.lease, "end-1"))).runStatus).toBe("finalizing")
        expect(Option.getOrThrow(yield* store.getRun(runId)).status).toBe("finalizing")
        expect([...(yield* messagesOf(runId)).keys()]).toEqual(["finalize-1"])
        expect(yield* store.tryFinalize(runId)).toBe(false)
      })
    )

    test(
      "completion is claimed once however many finishers race, and the run ends once",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1])
        const messages = yield* messagesOf(runId)
        for (const unitId of unitIds) {
          const { lease } = yield* claimed(messages.get(unitId)!, "w1")
          yield* commit(lease, { stepIndex: 0, chunkSeq: 0 }, `done-${unitId}`, true)
        }
        const wins = yield* Effect.all(Array.from({ length: 8 }, () => store.tryFinalize(runId)), {
          concurrency: "unbounded"
        })
        // The last commit may have finalized the run already; then no caller wins.
        expect(wins.filter((w) => w).length).toBeLessThanOrEqual(1)
        const run = Option.getOrThrow(yield* store.getRun(runId))
        expect(run.status).toBe("finalizing")
        const [finalize] = (yield* messagesOf(runId)).values()
        const a = yield* claimed(finalize!, "w1")
        yield* store.finishRun(a.lease, "succeeded", "complete-key")
        expect(Option.getOrThrow(yield* store.getRun(runId)).status).toBe("succeeded")
        const late = yield* Effect.flip(store.finishRun(a.lease, "succeeded", "complete-key"))
        expect(late).toBeInstanceOf(Errors.LeaseLost)
      })
    )

    test(
      "report and backlog aggregate the units: cells, chunks per step, failure classes, ready and running",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([3, 2, 1])
        const messages = yield* messagesOf(runId)
        const running = yield* claimed(messages.get(unitIds[0]!)!, "w1")
        yield* commit(running.lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0")
        const failing = yield* claimed(messages.get(unitIds[1]!)!, "w1")
        yield* failBadRecord(failing.lease, "k1", null)
        const report = yield* store.report(runId, { slowest: 5, windowMs: 3_600_000 })
        expect(report.progress.units).toMatchObject({ pending: 1, leased: 1, failed: 1 })
        expect(report.chunksByStep).toEqual({ first: 1 })
        expect(report.recentChunks).toBe(1)
        expect(report.failureGroups).toMatchObject([
          { errorTag: "BadRecord", runbookId: "bad-record", failures: 1, partitions: 1, failedPartitions: 1 }
        ])
        expect([...report.cells].sort((a, b) => a.status.localeCompare(b.status))).toEqual([
          { status: "failed", stepIndex: 0, units: 1 },
          { status: "leased", stepIndex: 0, units: 1 },
          { status: "pending", stepIndex: 0, units: 1 }
        ])
        expect(report.slowest.map((p) => p.partitionKey)).toContain("k0")
        const backlog = yield* store.backlog
        expect(backlog).toMatchObject({ ready: 1, running: 1, expiredLeases: 0 })
        yield* pass(leaseMs + 200)
        expect((yield* store.backlog).expiredLeases).toBe(1)
      })
    )

    /**
     * Claims the partition `unitId` (with `message`, or a fed one) and splits it at step 0 into `n`
     * ranges; returns their unit ids and the messages the feeder hands out next, by unit id.
     */
    const splitInto = (runId: string, unitId: string, n: number, message?: Message.WorkMessage) =>
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { lease } = yield* claimed(message ?? (yield* messageFor(runId, unitId)), "w1")
        const ranges = Array.from({ length: n }, (_, i) => ({
          unitId: `${unitId}~0.0.${i}`,
          weight: 1,
          range: { from: i === 0 ? null : i * 10, to: i === n - 1 ? null : (i + 1) * 10 }
        }))
        yield* store.splitUnit({ lease, stepIndex: 0, ranges })
        return { lease, rangeIds: ranges.map((r) => r.unitId), messages: yield* messagesOf(runId) }
      })

    /** Claims a range and commits its only chunk, which ends it (a range runs its split step only). */
    /** A run of one partition (`k0`), claimed and split into two ranges. */
    const splitRun = Effect.gen(function*() {
      const { runId, unitIds } = yield* openRun([4])
      const partition = unitIds[0]!
      return { runId, partition, ...(yield* splitInto(runId, partition, 2)) }
    })

    const finishRange = (message: Message.WorkMessage) =>
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const rangeId = message.unitId
        const { lease, unit } = yield* claimed(message, "w2")
        expect(unit).toMatchObject({ kind: "range", stepIndex: 0 })
        yield* store.commitChunk({
          lease,
          from: { stepIndex: 0, chunkSeq: 0 },
          to: { stepIndex: 1, chunkSeq: 0, cursor: null },
          unitDone: true,
          items: 5,
          idempotencyKey: `key-${rangeId}`,
          step: "first",
          leaseMs
        })
      })

    test(
      "split: the partition waits while its ranges run as units; the barrier moves it on once, after the last",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([4, 1])
        const partition = unitIds[0]!
        const stale = yield* messageFor(runId, partition)
        const { lease, messages, rangeIds } = yield* splitInto(runId, partition, 3, stale)
        const waiting = yield* unitOf(runId, partition)
        expect(waiting).toMatchObject({ status: "waiting", leaseOwner: null, stepIndex: 0 })
        expect(yield* claim(stale, "w9")).toEqual({ _tag: "Ack", reason: "waiting" })
        // The split was a compare-and-set: the same lease cannot split again.
        expect(yield* Effect.flip(store.splitUnit({ lease, stepIndex: 0, ranges: [] }))).toBeInstanceOf(
          Errors.LeaseLost
        )
        const ranges = (yield* store.listUnits(runId, { limit: 100 })).filter((u) => u.kind === "range")
        expect(ranges.map((u) => [u.unitId, u.parentUnitId, u.partitionKey, u.status])).toEqual(
          rangeIds.map((id) => [id, partition, "k0", "pending"])
        )
        expect(ranges[1]!.range).toEqual({ from: 10, to: 20 })
        yield* finishRange(messages.get(rangeIds[0]!)!)
        yield* finishRange(messages.get(rangeIds[1]!)!)
        expect(yield* store.joinRanges(runId, partition)).toBe("open")
        expect(yield* store.tryFinalize(runId)).toBe(false)
        yield* finishRange(messages.get(rangeIds[2]!)!)
        const joins = yield* Effect.all(Array.from({ length: 6 }, () => store.joinRanges(runId, partition)), {
          concurrency: "unbounded"
        })
        expect(joins.filter((j) => j === "advanced")).toHaveLength(1)
        expect(joins.filter((j) => j !== "advanced").every((j) => j === "none")).toBe(true)
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "pending", stepIndex: 1, chunkSeq: 0 })
        const progress = yield* store.progress(runId)
        expect(progress.ranges).toMatchObject({ succeeded: 3, pending: 0, leased: 0 })
        expect(progress.units).toMatchObject({ pending: 2, waiting: 0 })
        expect(progress.chunks).toBe(3)
        expect(progress.items).toBe(15)
      })
    )

    test(
      "split: a failed range fails its partition at once; retry reruns only that range and the partition waits again",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { messages, partition, rangeIds, runId } = yield* splitRun
        const bad = yield* claimed(messages.get(rangeIds[0]!)!, "w2")
        yield* store.failUnit(bad.lease, { _tag: "Failed", errorTag: "BadRecord" })
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "failed", lastErrorTag: "BadRecord" })
        yield* finishRange(messages.get(rangeIds[1]!)!)
        expect(yield* store.joinRanges(runId, partition)).toBe("none")
        const plan = yield* store.retry(runId, { dryRun: false }, operator)
        expect(plan.map((p) => p.partitionKey)).toEqual(["k0"])
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "waiting", stepIndex: 0 })
        expect(yield* unitOf(runId, rangeIds[0]!)).toMatchObject({ status: "pending", attempt: 1 })
        expect(yield* unitOf(runId, rangeIds[1]!)).toMatchObject({ status: "succeeded" })
        yield* finishRange(yield* messageFor(runId, rangeIds[0]!))
        expect(yield* store.joinRanges(runId, partition)).toBe("advanced")
        // The committed range was not redone: one ledger row each.
        expect(yield* store.ledger(runId, rangeIds[1]!)).toEqual([`key-${rangeIds[1]!}`])
      })
    )

    test(
      "split: retry from the step starts a new split generation; the old ranges are cancelled and keep their keys",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { messages, partition, rangeIds, runId } = yield* splitRun
        yield* finishRange(messages.get(rangeIds[0]!)!)
        const bad = yield* claimed(messages.get(rangeIds[1]!)!, "w2")
        yield* store.failUnit(bad.lease, { _tag: "Failed", errorTag: "BadRecord" })
        const plan = yield* store.retry(runId, { fromStep: 0, dryRun: false }, operator)
        expect(plan).toMatchObject([{ partitionKey: "k0", fromStepIndex: 0, generation: 1 }])
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "pending", stepIndex: 0, generation: 1 })
        // The old generation's ranges stay as they ended (terminal), and do not hold the partition back.
        expect((yield* unitOf(runId, rangeIds[0]!)).status).toBe("succeeded")
        expect((yield* unitOf(runId, rangeIds[1]!)).status).toBe("failed")
        const { lease } = yield* claimed(yield* messageFor(runId, partition), "w1")
        const fresh = [0, 1].map((i) => ({
          unitId: `${partition}~0.1.${i}`,
          weight: 2,
          range: { from: null, to: null }
        }))
        yield* store.splitUnit({ lease, stepIndex: 0, ranges: fresh })
        const next = yield* messagesOf(runId)
        for (const range of fresh) yield* finishRange(next.get(range.unitId)!)
        expect(yield* store.joinRanges(runId, partition)).toBe("advanced")
      })
    )

    test(
      "split: retry from the step restarts a partition still waiting for a live range (the range is fenced)",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { messages, partition, rangeIds, runId } = yield* splitRun
        const live = yield* claimed(messages.get(rangeIds[0]!)!, "w2")
        const plan = yield* store.retry(runId, { partitions: ["k0"], fromStep: 0, dryRun: false }, operator)
        expect(plan).toMatchObject([{ partitionKey: "k0", fromStepIndex: 0, generation: 1 }])
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "pending", stepIndex: 0, generation: 1 })
        expect((yield* unitOf(runId, rangeIds[0]!)).status).toBe("cancelled")
        // The range's holder is fenced: its commit is refused.
        expect(
          yield* Effect.flip(store.commitChunk({
            lease: live.lease,
            from: { stepIndex: 0, chunkSeq: 0 },
            to: { stepIndex: 1, chunkSeq: 0, cursor: null },
            unitDone: true,
            items: 1,
            idempotencyKey: "late",
            step: "first",
            leaseMs
          }))
        ).toBeInstanceOf(Errors.LeaseLost)
      })
    )

    test(
      "split: a retry (not from a step) leaves a partition waiting for its ranges alone; the sweeper joins it",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { messages, partition, rangeIds, runId } = yield* splitRun
        // Both ranges committed; the worker died before the barrier.
        for (const rangeId of rangeIds) yield* finishRange(messages.get(rangeId)!)
        expect(yield* store.retry(runId, { partitions: ["k0"], dryRun: false }, operator)).toEqual([])
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "waiting", stepIndex: 0, generation: 0 })
        yield* store.sweep()
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "pending", stepIndex: 1 })
      })
    )

    test(
      "a retry while the run is still enumerating leaves it enumerating: opening it sets its count and budget",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const runId = yield* createRun
        yield* store.insertUnits(runId, [{ unitId: `${runId}-u0`, partitionKey: "k0", weight: 1 }])
        yield* store.retry(runId, { partitions: ["k0"], dryRun: false }, operator)
        expect((yield* store.progress(runId)).run.status).toBe("enumerating")
        yield* store.insertUnits(runId, [{ unitId: `${runId}-u1`, partitionKey: "k1", weight: 1 }])
        const opened = yield* store.openRun(runId, () => 0)
        expect(opened).toMatchObject({ status: "running", partitionCount: 2, failureBudget: 0 })
      })
    )

    test(
      "a skip while the run is finalizing starts its finalize round again: the outcome counts the skip",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1])
        const messages = yield* messagesOf(runId)
        const good = yield* claimed(messages.get(unitIds[0]!)!, "w1")
        yield* commit(good.lease, { stepIndex: 0, chunkSeq: 0 }, "k0-done", true)
        const bad = yield* claimed(messages.get(unitIds[1]!)!, "w2")
        yield* failBadRecord(bad.lease, "k1", null)
        expect(yield* store.tryFinalize(runId)).toBe(true)
        const [finalize] = [...(yield* messagesOf(runId)).values()].filter((m) => m.unitId.startsWith("finalize-"))
        const finalizer = yield* claimed(finalize!, "w3")
        // The finalizer read one failed partition; the operator skips it before the run finishes.
        expect(yield* store.skip(runId, { partitions: ["k1"], dryRun: false }, operator)).toHaveLength(1)
        expect(yield* Effect.flip(store.finishRun(finalizer.lease, "failed", "complete-0"))).toBeInstanceOf(
          Errors.LeaseLost
        )
        const progress = yield* store.progress(runId)
        expect(progress.run.status).toBe("finalizing")
        expect(progress.units).toMatchObject({ succeeded: 1, skipped: 1, failed: 0 })
        // A new round: the old finalize unit cancelled, a new one pending.
        expect(yield* unitOf(runId, finalize!.unitId)).toMatchObject({ status: "cancelled" })
        const [again] = [...(yield* messagesOf(runId)).values()].filter((m) => m.unitId.startsWith("finalize-"))
        expect(again!.unitId).not.toBe(finalize!.unitId)
      })
    )

    test(
      "a skip that would re-open a failed run is refused beside its live re-run, and allowed once that ended",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const bad = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* failBadRecord(bad.lease, "k0", null)
        expect(yield* store.tryFinalize(runId)).toBe(true)
        const [finalize] = [...(yield* messagesOf(runId)).values()].filter((m) => m.unitId.startsWith("finalize-"))
        yield* store.finishRun((yield* claimed(finalize!, "w2")).lease, "failed", "complete-0")
        const rerun = `${runId}-rerun`
        expect((yield* newRun(rerun, runId)).created).toBe(true)
        // Skipping the failed partition would finalize the failed run again beside the re-run: refused,
        // its dry run too, and nothing changes.
        for (const dryRun of [true, false]) {
          expect(yield* Effect.flip(store.skip(runId, { partitions: ["k0"], dryRun }, operator))).toMatchObject({
            _tag: "RunAlreadyActive",
            activeRunId: rerun
          })
        }
        expect(yield* unitOf(runId, unitIds[0]!)).toMatchObject({ status: "failed" })
        expect((yield* store.getRun(runId)).pipe(Option.map((r) => r.status))).toEqual(Option.some("failed"))
        yield* store.cancelRun(rerun, operator)
        expect(yield* store.skip(runId, { partitions: ["k0"], dryRun: false }, operator)).toHaveLength(1)
        expect((yield* store.getRun(runId)).pipe(Option.map((r) => r.status))).toEqual(Option.some("finalizing"))
        // A skip does not re-open a cancelled run, so there it is not held back.
        const other = yield* openRun([1, 1])
        const lost = yield* claimed(yield* messageFor(other.runId, other.unitIds[0]!), "w3")
        yield* failBadRecord(lost.lease, "k0", null)
        yield* store.cancelRun(other.runId, operator)
        expect((yield* newRun(`${other.runId}-rerun`, other.runId)).created).toBe(true)
        expect(yield* store.skip(other.runId, { partitions: ["k0"], dryRun: false }, operator)).toHaveLength(1)
        expect((yield* store.getRun(other.runId)).pipe(Option.map((r) => r.status))).toEqual(Option.some("cancelled"))
      })
    )

    test(
      "split: the sweeper joins a partition whose last range committed but crashed before the barrier",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { messages, partition, rangeIds, runId } = yield* splitRun
        for (const id of rangeIds) yield* finishRange(messages.get(id)!)
        expect((yield* unitOf(runId, partition)).status).toBe("waiting")
        yield* store.sweep()
        expect(yield* unitOf(runId, partition)).toMatchObject({ status: "pending", stepIndex: 1 })
      })
    )

    test(
      "split: skipping or cancelling a waiting partition cancels its unfinished ranges",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([4, 3])
        const fed = yield* messagesOf(runId)
        const first = yield* splitInto(runId, unitIds[0]!, 2, fed.get(unitIds[0]!))
        const running = yield* claimed(first.messages.get(first.rangeIds[0]!)!, "w2")
        yield* store.skip(runId, { partitions: ["k0"], dryRun: false }, operator)
        expect((yield* unitOf(runId, unitIds[0]!)).status).toBe("skipped")
        expect((yield* unitOf(runId, first.rangeIds[0]!)).status).toBe("cancelled")
        expect((yield* unitOf(runId, first.rangeIds[1]!)).status).toBe("cancelled")
        // The range's worker is fenced: its next commit is refused.
        const refused = yield* Effect.flip(store.commitChunk({
          lease: running.lease,
          from: { stepIndex: 0, chunkSeq: 0 },
          to: { stepIndex: 1, chunkSeq: 0, cursor: null },
          unitDone: true,
          items: 1,
          idempotencyKey: "late",
          step: "first",
          leaseMs
        }))
        expect(refused).toBeInstanceOf(Errors.LeaseLost)
        const second = yield* splitInto(runId, unitIds[1]!, 2, fed.get(unitIds[1]!))
        yield* store.cancelRun(runId, operator)
        expect((yield* unitOf(runId, unitIds[1]!)).status).toBe("cancelled")
        expect((yield* unitOf(runId, second.rangeIds[0]!)).status).toBe("cancelled")
      })
    )

    test(
      "operator actions: a dry run changes nothing, the real action does the same, and is audited with who and why",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* store.failUnit(lease, { _tag: "Failed", errorTag: "BadRecord" })
        const plan = yield* store.retry(runId, { dryRun: true }, operator)
        expect(plan.map((p) => p.partitionKey)).toEqual(["k0"])
        expect((yield* unitOf(runId, unitIds[0]!)).status).toBe("failed")
        const done = yield* store.retry(runId, { dryRun: false }, operator)
        expect(done).toEqual(plan)
        expect((yield* unitOf(runId, unitIds[0]!)).status).toBe("pending")
        const skipped = yield* store.skip(runId, { partitions: ["k1"], dryRun: false }, operator)
        expect(skipped.map((p) => p.partitionKey)).toEqual(["k1"])
        expect((yield* unitOf(runId, unitIds[1]!)).status).toBe("skipped")
        const cancelled = yield* store.cancelRun(runId, operator)
        expect(cancelled.status).not.toBe("running")
        const audit = yield* store.auditLog(runId)
        expect(audit.map((a) => a.action)).toEqual(["retry", "skip", "cancel"])
        expect(audit.every((a) => a.actor === operator.actor && a.reason === operator.reason)).toBe(true)
      })
    )

    /** An item set aside with `BadRecord`, as a worker records it. */
    const badItem = (id: number): Quarantine.Item => ({
      itemId: String(id),
      item: { id },
      errorTag: "BadRecord",
      message: `record ${id} is invalid`,
      runbookId: "bad-record"
    })
    /** Commits one chunk of `items` items of step "first" that sets `bad` aside under the budgets. */
    const commitSkipping = (
      lease: StateStore.Lease,
      chunkSeq: number,
      items: number,
      bad: ReadonlyArray<number>,
      budgets: { readonly partition: Quarantine.Budget; readonly run?: Quarantine.Budget | undefined }
    ) =>
      Effect.flatMap(StateStore.StateStore, (store) =>
        store.transaction(store.commitChunk({
          lease,
          from: { stepIndex: 0, chunkSeq },
          to: { stepIndex: 0, chunkSeq: chunkSeq + 1, cursor: { next: chunkSeq + 1 } },
          unitDone: false,
          items,
          idempotencyKey: `chunk-${chunkSeq}`,
          step: "first",
          leaseMs,
          quarantine: {
            items: bad.map(badItem),
            cursor: chunkSeq === 0 ? null : { next: chunkSeq },
            range: null,
            budgets: {
              partition: Quarantine.limitOf("partition budget", budgets.partition),
              run: budgets.run === undefined ? undefined : Quarantine.limitOf("run budget", budgets.run)
            }
          }
        })))

    test(
      "a chunk's last commit (last: true, in a session) that is refused records none of its items set aside",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const session = yield* StateStore.sessionOf(store)
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        // The chunk sends nothing of its own: its items set aside are the transaction's first writes.
        const refused = yield* Effect.flip(session.transaction(store.commitChunk({
          lease: { ...lease, fencingToken: lease.fencingToken + 7 },
          from: { stepIndex: 0, chunkSeq: 0 },
          to: { stepIndex: 0, chunkSeq: 1, cursor: { next: 1 } },
          unitDone: false,
          items: 10,
          idempotencyKey: "chunk-0",
          step: "first",
          leaseMs,
          last: true,
          quarantine: {
            items: [badItem(3)],
            cursor: null,
            range: null,
            budgets: { partition: Quarantine.limitOf("partition budget", 5), run: undefined }
          }
        })))
        expect(refused).toBeInstanceOf(Errors.LeaseLost)
        expect(yield* store.listQuarantine(runId, { limit: 10 })).toEqual([])
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual([])
      }).pipe(Effect.scoped)
    )

    test(
      "items set aside commit with their chunk: listed with error, runbook and origin, counted in progress",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* commitSkipping(lease, 0, 10, [3, 7], { partition: 5 })
        const listed = yield* store.listQuarantine(runId, { limit: 10 })
        expect(listed.map((e) => [e.partitionKey, e.step, e.itemId, e.status, e.attempts])).toEqual([
          ["k0", "first", "3", "quarantined", 1],
          ["k0", "first", "7", "quarantined", 1]
        ])
        expect(listed[0]).toMatchObject({
          runId,
          unitId: unitIds[0],
          item: { id: 3 },
          errorTag: "BadRecord",
          message: "record 3 is invalid",
          runbookId: "bad-record",
          cursor: null,
          range: null
        })
        expect((yield* store.progress(runId)).quarantine).toEqual({ quarantined: 2, retry: 0, resolved: 0 })
        // A commit refused by its compare-and-set records nothing.
        const refused = yield* Effect.flip(commitSkipping(lease, 0, 10, [4], { partition: 5 }))
        expect(refused).toBeInstanceOf(Errors.CheckpointMoved)
        expect(yield* store.listQuarantine(runId, { limit: 10, status: ["quarantined"] })).toHaveLength(2)
        expect(yield* store.listQuarantine(runId, { limit: 10, partitions: ["k9"] })).toEqual([])
      })
    )

    test(
      "skip budgets: a chunk over the partition's count or the run's percentage fails and commits nothing",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1])
        const fed = yield* messagesOf(runId)
        const first = yield* claimed(fed.get(unitIds[0]!)!, "w1")
        const second = yield* claimed(fed.get(unitIds[1]!)!, "w1")
        yield* commitSkipping(first.lease, 0, 100, [1], { partition: 2 })
        const over = yield* Effect.flip(commitSkipping(first.lease, 1, 10, [20, 21], { partition: 2 }))
        expect(over).toBeInstanceOf(Errors.SkipBudgetExceeded)
        expect(over).toMatchObject({ scope: "partition", skipped: 3, allowed: 2, budget: "2", items: ["20", "21"] })
        expect((yield* unitOf(runId, unitIds[0]!)).chunkSeq).toBe(1)
        expect((yield* store.listQuarantine(runId, { limit: 10 })).map((e) => e.itemId)).toEqual(["1"])
        // The run may set aside 2% of what it handled: 100 + 10 handled, 1 + 1 set aside fits...
        yield* commitSkipping(second.lease, 0, 10, [5], { partition: 5, run: "2%" })
        // ...and 1 + 1 + 1 of 100 + 10 + 10 does not (2% of 120 is 2).
        const runOver = yield* Effect.flip(commitSkipping(second.lease, 1, 10, [6], { partition: 5, run: "2%" }))
        expect(runOver).toMatchObject({ _tag: "SkipBudgetExceeded", scope: "run", skipped: 3, allowed: 2 })
        expect((yield* store.progress(runId)).quarantine.quarantined).toBe(2)
      })
    )

    test(
      "quarantine retry: items go to retry, one items unit per partition and step runs them, the run re-opens",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* commitSkipping(lease, 0, 10, [3, 7], { partition: 5 })
        yield* commit(lease, { stepIndex: 0, chunkSeq: 1 }, "last", true)
        // The commit that ended the last unit finalized the run.
        expect((yield* store.getRun(runId)).pipe(Option.getOrThrow).status).toBe("finalizing")
        const fin = yield* claimed(yield* messageFor(runId, "finalize-1"), "w1")
        yield* store.finishRun(fin.lease, "succeeded", "fin-1")
        const plan = yield* store.retryQuarantine(runId, { dryRun: true }, operator)
        expect(plan).toEqual([{ partitionKey: "k0", step: "first", items: 2, unitId: `${unitIds[0]}~items.first` }])
        expect((yield* store.getRun(runId)).pipe(Option.getOrThrow).status).toBe("succeeded")
        expect(yield* store.retryQuarantine(runId, { dryRun: false }, operator)).toEqual(plan)
        expect((yield* store.getRun(runId)).pipe(Option.getOrThrow).status).toBe("running")
        expect((yield* store.progress(runId)).quarantine).toEqual({ quarantined: 0, retry: 2, resolved: 0 })
        // Asked again while its unit is pending: the same unit, not a second one.
        expect(yield* store.retryQuarantine(runId, { dryRun: false }, operator)).toEqual(plan)
        const items = (yield* store.listUnits(runId, { limit: 10 })).filter((u) => u.kind === "items")
        expect(items.map((u) => [u.unitId, u.status, u.stepIndex, u.partitionKey])).toEqual([
          [plan[0]!.unitId, "pending", 0, "k0"]
        ])
        expect(yield* store.tryFinalize(runId)).toBe(false)
        // The items unit's chunk: 3 writes now, 7 fails again.
        const rerun = yield* claimed(yield* messageFor(runId, plan[0]!.unitId), "w2")
        yield* store.transaction(store.commitChunk({
          lease: rerun.lease,
          from: { stepIndex: 0, chunkSeq: 0 },
          to: { stepIndex: 1, chunkSeq: 0, cursor: null },
          unitDone: true,
          items: 2,
          idempotencyKey: "rerun-0",
          step: "first",
          leaseMs,
          quarantine: { items: [badItem(7)], resolved: ["3"], cursor: null, range: null }
        }))
        const after = yield* store.listQuarantine(runId, { limit: 10 })
        expect(after.map((e) => [e.itemId, e.status, e.attempts])).toEqual([["3", "resolved", 1], [
          "7",
          "quarantined",
          2
        ]])
        const progress = yield* store.progress(runId)
        expect(progress.units).toMatchObject({ succeeded: 1, pending: 0 })
        expect((yield* store.getRun(runId)).pipe(Option.getOrThrow).status).toBe("finalizing")
        expect(yield* store.tryFinalize(runId)).toBe(false)
        expect((yield* store.auditLog(runId)).map((a) => a.action)).toEqual(["quarantine-retry", "quarantine-retry"])
      })
    )

    // A worker runs a unit's chunk transactions through the store's session (`sessionOf`: the store's own,
    // or transactions alone): each of them keeps the contract of `transaction`, one after another.
    test(
      "a session's transactions commit the user's writes with each chunk; a failed one rolls back its own alone",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const session = yield* StateStore.sessionOf(store)
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        yield* session.transaction(Effect.zipRight(
          options.writes.write(`${runId}-0`),
          commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0")
        ))
        // The step fails after its write: the step's own error, and neither its write nor a chunk.
        const failed = yield* Effect.flip(session.transaction(Effect.zipRight(
          options.writes.write(`${runId}-failed`),
          Effect.fail("step failed" as const)
        )))
        expect(failed).toBe("step failed")
        // A fenced commit (a stale token) is refused, and takes the user's write back with it.
        const fenced = yield* Effect.flip(session.transaction(Effect.zipRight(
          options.writes.write(`${runId}-fenced`),
          commit({ ...lease, fencingToken: lease.fencingToken + 7 }, { stepIndex: 0, chunkSeq: 1 }, "fenced")
        )))
        expect(fenced).toBeInstanceOf(Errors.LeaseLost)
        // The session goes on: the next chunk commits.
        yield* session.transaction(Effect.zipRight(
          options.writes.write(`${runId}-1`),
          commit(lease, { stepIndex: 0, chunkSeq: 1 }, "chunk-1")
        ))
        const written = yield* Effect.forEach(
          ["0", "failed", "fenced", "1"],
          (k) => options.writes.read(`${runId}-${k}`)
        )
        expect(written).toEqual([true, false, false, true])
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0", "chunk-1"])
        expect(yield* unitOf(runId, unitIds[0]!)).toMatchObject({ status: "leased", chunkSeq: 2, chunks: 2 })
      }).pipe(Effect.scoped)
    )

    // A worker's chunk commit is the last call of its transaction (`last`): a store may send the
    // transaction's COMMIT with it. Its outcomes are those of any commit: the chunk and the user's writes
    // commit together, or a refusal (fenced, moved, a stopped run's fused step) rolls both back.
    test(
      "a session transaction's last commit (last: true) commits the writes with the chunk, or a refusal rolls both back",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const session = yield* StateStore.sessionOf(store)
        const { runId, unitIds } = yield* openRun([1, 1], () => 0)
        const messages = yield* messagesOf(runId)
        const { lease } = yield* claimed(messages.get(unitIds[0]!)!, "w1")
        const chunk = (name: string, commitIt: Effect.Effect<unknown, unknown, StateStore.StateStore>) =>
          session.transaction(Effect.zipRight(options.writes.write(`${runId}-${name}`), commitIt))
        yield* chunk("0", commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0", false, undefined, true))
        const fenced = yield* Effect.flip(chunk(
          "fenced",
          commit(
            { ...lease, fencingToken: lease.fencingToken + 7 },
            { stepIndex: 0, chunkSeq: 1 },
            "x",
            false,
            undefined,
            true
          )
        ))
        expect(fenced).toBeInstanceOf(Errors.LeaseLost)
        const moved = yield* Effect.flip(
          chunk("moved", commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0-again", false, undefined, true))
        )
        expect(moved).toBeInstanceOf(Errors.CheckpointMoved)
        // The run stops (another unit fails it): the fused step's commit is refused, both roll back.
        const bad = yield* claimed(messages.get(unitIds[1]!)!, "w2")
        yield* failBadRecord(bad.lease, "k1", null)
        const second = { step: "second", idempotencyKey: "second-0" }
        const refused = yield* Effect.flip(
          chunk("fused", commit(lease, { stepIndex: 0, chunkSeq: 1 }, "chunk-1", true, second, true))
        )
        expect(refused).toMatchObject({ _tag: "RunStopped", runId, status: "failing" })
        // The session goes on: the next chunk commits, and says the run is failing.
        expect(yield* chunk("1", commit(lease, { stepIndex: 0, chunkSeq: 1 }, "chunk-1", false, undefined, true)))
          .toEqual({ runStatus: "failing" })
        const written = yield* Effect.forEach(
          ["0", "fenced", "moved", "fused", "1"],
          (k) => options.writes.read(`${runId}-${k}`)
        )
        expect(written).toEqual([true, false, false, false, true])
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0", "chunk-1"])
        expect(yield* unitOf(runId, unitIds[0]!)).toMatchObject({ status: "leased", chunkSeq: 2, chunks: 2 })
      }).pipe(Effect.scoped)
    )

    test(
      "a session's transaction interrupted before its commit rolls back, and the session's next one commits",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const session = yield* StateStore.sessionOf(store)
        const { runId, unitIds } = yield* openRun([1])
        const { lease } = yield* claimed(yield* messageFor(runId, unitIds[0]!), "w1")
        const written = yield* Deferred.make<void>()
        const interrupted = yield* Effect.fork(session.transaction(Effect.gen(function*() {
          yield* options.writes.write(`${runId}-interrupted`)
          yield* Deferred.succeed(written, undefined)
          return yield* Effect.never
        })))
        yield* Deferred.await(written)
        expect(Exit.isInterrupted(yield* Fiber.interrupt(interrupted))).toBe(true)
        yield* session.transaction(Effect.zipRight(
          options.writes.write(`${runId}-next`),
          commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0")
        ))
        expect(yield* options.writes.read(`${runId}-interrupted`)).toBe(false)
        expect(yield* options.writes.read(`${runId}-next`)).toBe(true)
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0"])
      }).pipe(Effect.scoped)
    )

    test(
      "a session's idle, between transactions or inside one, changes no outcome; work outside it goes on meanwhile",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const session = yield* StateStore.sessionOf(store)
        const { runId, unitIds } = yield* openRun([1, 1])
        const messages = yield* messagesOf(runId)
        const { lease } = yield* claimed(messages.get(unitIds[0]!)!, "w1")
        yield* session.transaction(commit(lease, { stepIndex: 0, chunkSeq: 0 }, "chunk-0"))
        yield* session.idle
        // Between the session's transactions, the store's own calls (another unit's claim and commit).
        const other = yield* claimed(messages.get(unitIds[1]!)!, "w2")
        yield* store.transaction(commit(other.lease, { stepIndex: 0, chunkSeq: 0 }, "other-0"))
        // Idle inside a transaction: it still commits as one, the user's write with its chunk.
        yield* session.transaction(Effect.gen(function*() {
          yield* options.writes.write(`${runId}-1`)
          yield* session.idle
          yield* commit(lease, { stepIndex: 0, chunkSeq: 1 }, "chunk-1")
        }))
        const refused = yield* Effect.flip(session.transaction(Effect.gen(function*() {
          yield* options.writes.write(`${runId}-2`)
          yield* session.idle
          return yield* Effect.fail("step failed" as const)
        })))
        expect(refused).toBe("step failed")
        yield* session.idle
        yield* session.idle
        yield* session.transaction(commit(lease, { stepIndex: 0, chunkSeq: 2 }, "chunk-2"))
        expect([yield* options.writes.read(`${runId}-1`), yield* options.writes.read(`${runId}-2`)]).toEqual([
          true,
          false
        ])
        expect(yield* store.ledger(runId, unitIds[0]!)).toEqual(["chunk-0", "chunk-1", "chunk-2"])
        expect(yield* store.ledger(runId, unitIds[1]!)).toEqual(["other-0"])
      }).pipe(Effect.scoped)
    )

    test(
      "sessions side by side (a worker's units at once) each commit their own unit's chunks, and none of the others'",
      Effect.gen(function*() {
        const store = yield* StateStore.StateStore
        const { runId, unitIds } = yield* openRun([1, 1, 1, 1])
        const messages = yield* messagesOf(runId)
        yield* Effect.forEach(unitIds, (unitId, u) =>
          Effect.gen(function*() {
            const session = yield* StateStore.sessionOf(store)
            const { lease } = yield* claimed(messages.get(unitId)!, `w${u}`)
            for (let chunkSeq = 0; chunkSeq < 3; chunkSeq++) {
              yield* session.transaction(Effect.zipRight(
                options.writes.write(`${runId}-${u}-${chunkSeq}`),
                commit(lease, { stepIndex: 0, chunkSeq }, `u${u}-${chunkSeq}`)
              ))
              yield* Effect.yieldNow()
            }
          }).pipe(Effect.scoped), { concurrency: "unbounded", discard: true })
        for (const [u, unitId] of unitIds.entries()) {
          expect(yield* store.ledger(runId, unitId)).toEqual([`u${u}-0`, `u${u}-1`, `u${u}-2`])
          for (let chunkSeq = 0; chunkSeq < 3; chunkSeq++) {
            expect(yield* options.writes.read(`${runId}-${u}-${chunkSeq}`)).toBe(true)
          }
        }
      })
    )
  })
}
