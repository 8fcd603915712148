/**
 * A small job on the in-memory engine whose observable state proves the guarantees: every item's row
 * counts how many times a chunk applying it committed (must be exactly 1), and `effects` logs every
 * execution of a step's effect (which may repeat, always with the same key).
 */
import { type Duration, Effect, Exit, Layer, Logger, LogLevel, Option, Schema, Scope, TestClock } from "effect"
import {
  Job,
  MemoryDatabase,
  type Message,
  Probe,
  QueueAdapter,
  RetryPolicy,
  Runbook,
  Runner,
  StateStore,
  Step
} from "../src/index.js"

export class BadRecord extends Schema.TaggedError<BadRecord>()("BadRecord", { item: Schema.Number }) {}
export class FlakyUpstream extends Schema.TaggedError<FlakyUpstream>()("FlakyUpstream", { message: Schema.String }) {}

export interface Execution {
  readonly partition: string
  readonly step: string
  readonly chunkSeq: number
  readonly key: string
  readonly attempt: number
}

export interface Recorder {
  readonly effects: Array<Execution>
  readonly running: Map<string, number>
  maxConcurrentPerPartition: number
  completions: number
}

export const recorder = (): Recorder => ({
  effects: [],
  running: new Map(),
  maxConcurrentPerPartition: 0,
  completions: 0
})

export interface TestJobOptions {
  readonly name?: string
  readonly partitions: number
  readonly itemsPerPartition: number
  readonly chunkSize?: number
  readonly mode?: "chunk" | "none"
  /** Fails the item's chunk with `BadRecord` (never retried); read live, so a test can "fix" the data. */
  readonly badItems?: ReadonlyArray<number>
  /** Items whose chunk fails with `FlakyUpstream` this many times, then passes. */
  readonly flaky?: { readonly item: number; readonly failures: number } | undefined
  readonly failureBudget?: Job.FailureBudget | undefined
  readonly perWorker?: number
  /** Each chunk sleeps this long (TestClock time), to widen race windows. */
  readonly chunkDelay?: Duration.DurationInput | undefined
}

/** Partition `pN` holds items N*1000 .. N*1000+itemsPerPartition-1. */
export const testJob = (recorder: Recorder, options: TestJobOptions) => {
  const flakyLeft = { n: options.flaky?.failures ?? 0 }
  const size = options.itemsPerPartition
  return Job.make({
    name: options.name ?? "test-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => Array.from({ length: options.partitions }, (_, i) => ({ key: `p${i}`, weight: (i % 3) + 1 })),
    steps: (step) => [
      step.chunked("apply", {
        cursor: Schema.Struct({ next: Schema.Number }),
        start: { next: 0 },
        chunkSize: options.chunkSize ?? 3,
        transaction: options.mode ?? "chunk",
        process: (ctx) =>
          Effect.gen(function*() {
            const db = yield* MemoryDatabase.MemoryDatabase
            const partition = ctx.partition.key
            const now = (recorder.running.get(partition) ?? 0) + 1
            recorder.running.set(partition, now)
            recorder.maxConcurrentPerPartition = Math.max(recorder.maxConcurrentPerPartition, now)
            recorder.effects.push({
              partition,
              step: ctx.step,
              chunkSeq: ctx.chunkSeq,
              key: ctx.idempotencyKey,
              attempt: ctx.attempt
            })
            try {
              if (options.chunkDelay !== undefined) yield* Effect.sleep(options.chunkDelay)
              const base = Number(partition.slice(1)) * 1000
              const end = Math.min(ctx.cursor.next + ctx.chunkSize, size)
              for (let i = ctx.cursor.next; i < end; i++) {
                const item = base + i
                if (options.badItems?.includes(item)) return yield* new BadRecord({ item })
                if (options.flaky?.item === item && flakyLeft.n > 0) {
                  flakyLeft.n -= 1
                  return yield* new FlakyUpstream({ message: `upstream timed out on ${item}` })
                }
                const seen = yield* db.get("applied", String(item))
                yield* db.put("applied", String(item), Option.getOrElse(seen, () => 0) as number + 1)
              }
              return Step.advance(end >= size ? Step.done : { next: end }, end - ctx.cursor.next)
            } finally {
              recorder.running.set(partition, (recorder.running.get(partition) ?? 1) - 1)
            }
          })
      }),
      step.single("summarise", {
        transaction: options.mode ?? "chunk",
        run: (ctx) =>
          Effect.gen(function*() {
            const db = yield* MemoryDatabase.MemoryDatabase
            recorder.effects.push({
              partition: ctx.partition.key,
              step: ctx.step,
              chunkSeq: ctx.chunkSeq,
              key: ctx.idempotencyKey,
              attempt: ctx.attempt
            })
            const seen = yield* db.get("summaries", ctx.partition.key)
            yield* db.put("summaries", ctx.partition.key, Option.getOrElse(seen, () => 0) as number + 1)
          })
      })
    ],
    errors: [
      Runbook.make(BadRecord, {
        id: "test-bad-record",
        title: "A record cannot be applied",
        severity: "ticket",
        meaning: "The record is invalid.",
        steps: ["Fix the record, then retry the partition."]
      }),
      Runbook.make(FlakyUpstream, {
        id: "test-flaky-upstream",
        title: "The upstream timed out",
        severity: "info",
        meaning: "A transient upstream failure.",
        steps: ["Nothing; it retries."],
        retry: RetryPolicy.exponential({ base: "1 second", times: 3, jitter: false })
      })
    ],
    concurrency: { perWorker: options.perWorker ?? 4 },
    failureBudget: options.failureBudget,
    onComplete: (ctx) =>
      Effect.gen(function*() {
        const db = yield* MemoryDatabase.MemoryDatabase
        recorder.completions += 1
        const seen = yield* db.get("completions", ctx.runId)
        yield* db.put("completions", ctx.runId, Option.getOrElse(seen, () => 0) as number + 1)
      })
  })
}

/** The in-memory engine: store + database + queue; logs are kept quiet unless a test asks for them. */
export const memoryEngine = (queue: QueueAdapter.MemoryOptions = {}) =>
  Layer.mergeAll(StateStore.layerMemory, QueueAdapter.layerMemory(queue), Logger.minimumLogLevel(LogLevel.None))

/** Fast timers for tests driven by TestClock. */
export const fastWorker = {
  leaseDuration: "10 seconds",
  pollInterval: "100 millis",
  feedInterval: "100 millis",
  sweepInterval: "2 seconds",
  shutdownTimeout: "5 seconds"
} as const

/** Advances the TestClock in steps until `done` holds (or fails after `maxSteps`). */
export const driveUntil = <E, R>(
  done: Effect.Effect<boolean, E, R>,
  step: Duration.DurationInput = "100 millis",
  maxSteps = 5000
) =>
  Effect.gen(function*() {
    for (let i = 0; i < maxSteps; i++) {
      if (yield* done) return i
      yield* TestClock.adjust(step)
      for (let j = 0; j < 5; j++) yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`driveUntil: not done after ${maxSteps} steps`)
  })

/**
 * Closes a worker's scope (its drain) while advancing the TestClock, until the close is over; returns the
 * steps it took (as `driveUntil`).
 */
export const closeDriven = (scope: Scope.CloseableScope, step?: Duration.DurationInput) =>
  Effect.flatMap(
    Effect.fork(Scope.close(scope, Exit.void)),
    (closing) => driveUntil(Effect.sync(() => closing.unsafePoll() !== null), step)
  )

/** True once the run is terminal. */
export const runEnded = (runId: string) =>
  Effect.map(Runner.status(runId), (p) => StateStore.isTerminalRun(p.run.status))

/** Every row of a memory table as a plain object. */
export const table = (name: string) =>
  Effect.flatMap(
    MemoryDatabase.MemoryDatabase,
    (db) => Effect.map(db.rows(name), (rows) => Object.fromEntries(rows) as Record<string, number>)
  )

/** The keys `pN` items that a full run applies. */
export const expectedItems = (partitions: number, itemsPerPartition: number): Record<string, number> => {
  const out: Record<string, number> = {}
  for (let p = 0; p < partitions; p++) for (let i = 0; i < itemsPerPartition; i++) out[String(p * 1000 + i)] = 1
  return out
}

/** Claims the unit a message points to, commits one chunk by hand as a worker would, and lets go. */
export const commitManually = (
  message: Message.WorkMessage,
  to: StateStore.ChunkCommit["to"],
  unitDone: boolean
) =>
  Effect.gen(function*() {
    const store = yield* StateStore.StateStore
    const claim = yield* store.claim({ message, workerId: "manual", leaseMs: 60_000, jobConcurrency: undefined })
    if (claim._tag !== "Claimed") return yield* Effect.dieMessage(`expected a claim, got ${claim._tag}`)
    yield* store.commitChunk({
      lease: claim.lease,
      from: { stepIndex: claim.unit.stepIndex, chunkSeq: claim.unit.chunkSeq },
      to,
      unitDone,
      items: 0,
      idempotencyKey: `manual-${claim.unit.chunkSeq}`,
      step: "manual",
      leaseMs: 60_000
    })
    if (!unitDone) yield* store.release(claim.lease, { abandonedChunk: false })
  })

/**
 * A probe that kills the worker's fiber once, at the first point where `when` holds (the worker dies
 * there, as a process would); `crashed()` says whether it did.
 */
export const crashOnce = (when: (point: Probe.Point, info: Probe.Info) => boolean) => {
  let crashed = false
  return {
    probe: Probe.make({
      at: (point, info) =>
        !crashed && when(point, info)
          ? Effect.suspend(() => {
            crashed = true
            return Effect.interrupt
          })
          : Effect.void
    }),
    crashed: () => crashed
  }
}
