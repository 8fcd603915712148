/**
 * The faults the harness injects, as data: where (a named point in a unit's life, a partition, a step,
 * a chunk) and what (a crash, a pause, a slow chunk, duplicated or reordered deliveries, broker and
 * store errors). A fault prints as a sentence (`describe`), so a report says exactly what was done.
 *
 * @since 0.1.0
 */
import type { Probe } from "@chunkwise/core"
import { Duration } from "effect"

/** A named point in a unit's life (see core's `Probe`). */
export type Point = Probe.Point

/** Every point, in the order a unit meets them. */
export const points: ReadonlyArray<Point> = [
  "before-effect",
  "after-effect",
  "after-commit",
  "before-ack",
  "heartbeat",
  "before-complete",
  "after-complete"
]

/**
 * Which hits of a point a fault applies to; an absent field matches anything. The run's completion
 * hook has partition `""` and step `"onComplete"`; `before-ack` and `heartbeat` have step `""`.
 */
export interface Match {
  readonly partition?: string | undefined
  readonly step?: string | undefined
  readonly chunkSeq?: number | undefined
  /** Which matching hit: 1 (the default) is the first; 0 means every one. */
  readonly occurrence?: number | undefined
}

/**
 * How a crash happens:
 * - `kill`: the worker process dies at that instant (SIGKILL, out of memory): nothing it would do next
 *   reaches the store or the queue, its leases and messages are left to expire, and a new worker starts
 *   in its place.
 * - `interrupt`: the fiber running the unit is interrupted there; the rest of the worker goes on.
 * - `defect`: the code throws there, as a bug in the step would. The partition fails `Unclassified`
 *   (bugs are never retried blindly), so this one is expected to change the run's outcome.
 */
export type CrashKind = "kill" | "interrupt" | "defect"

/** A crash at a point. */
export interface Crash {
  readonly _tag: "Crash"
  readonly point: Point
  readonly kind: CrashKind
  readonly match: Match
}

/** A pause at a point (a slow chunk, a long GC, a slow network). */
export interface Slow {
  readonly _tag: "Slow"
  readonly point: Point
  readonly duration: Duration.Duration
  readonly match: Match
}

/**
 * A zombie: after the chunk's effect and before its commit, the worker freezes (no heartbeat) until its
 * lease has expired and the message has become visible again, then carries on and tries to commit.
 */
export interface Zombie {
  readonly _tag: "Zombie"
  readonly match: Match
}

/** Every message the feeder sends is sent twice, with the given probability. */
export interface DuplicateDelivery {
  readonly _tag: "DuplicateDelivery"
  readonly rate: number
}

/** Messages are sent in a shuffled order, each delayed by up to `maxDelay`. */
export interface ReorderDelivery {
  readonly _tag: "ReorderDelivery"
  readonly maxDelay: Duration.Duration
}

/**
 * With the given probability a received message is hidden for only a moment instead of the lease, so
 * it is delivered again while its unit is still running.
 */
export interface VisibilityExpiry {
  readonly _tag: "VisibilityExpiry"
  readonly rate: number
}

/**
 * Store calls from workers fail with `StoreUnavailable`, with the given probability. With `replyLost`
 * the call is applied first and only its reply is lost (a transaction then ends `CommitOutcomeUnknown`).
 */
export interface StoreErrors {
  readonly _tag: "StoreErrors"
  readonly rate: number
  readonly replyLost: boolean
  /** Only these operations (e.g. `["commitChunk", "renewLeases"]`); all when absent. */
  readonly operations?: ReadonlyArray<string> | undefined
}

/** Queue calls from workers fail with `QueueUnavailable`, with the given probability. */
export interface QueueErrors {
  readonly _tag: "QueueErrors"
  readonly rate: number
  readonly operations?: ReadonlyArray<string> | undefined
}

/**
 * At each point reached (heartbeats aside), with probability `rate`, one fault of a kind drawn from
 * `kinds`, at most `max` in a trial. Drawn from the trial's seed, so a seed reproduces the schedule.
 */
export interface Random {
  readonly _tag: "Random"
  readonly rate: number
  readonly kinds: ReadonlyArray<"kill" | "interrupt" | "slow" | "zombie">
  readonly max: number
}

/** A fault. */
export type Fault =
  | Crash
  | Slow
  | Zombie
  | DuplicateDelivery
  | ReorderDelivery
  | VisibilityExpiry
  | StoreErrors
  | QueueErrors
  | Random

const rateOf = (name: string, rate: number): number => {
  if (!(rate >= 0 && rate <= 1)) {
    throw new RangeError(`Fault.${name}: rate must be between 0 and 1 (got ${rate})`)
  }
  return rate
}

/** A crash at `point` (a `kill` unless `kind` says otherwise). */
export const crash = (point: Point, options: Match & { readonly kind?: CrashKind | undefined } = {}): Crash => {
  const { kind, ...match } = options
  return { _tag: "Crash", point, kind: kind ?? "kill", match }
}

/** The worker dies at `point` without shutting down: `crash(point, { kind: "kill" })`. */
export const kill = (point: Point, match: Match = {}): Crash => crash(point, { ...match, kind: "kill" })

/** A pause of `duration` at `point`. */
export const slow = (point: Point, duration: Duration.DurationInput, match: Match = {}): Slow => ({
  _tag: "Slow",
  point,
  duration: Duration.decode(duration),
  match
})

/** The worker freezes between a chunk's effect and its commit until its lease expired. */
export const zombie = (match: Match = {}): Zombie => ({ _tag: "Zombie", match })

/** Duplicated sends (every message with `rate` 1, the default). */
export const duplicateDelivery = (rate = 1): DuplicateDelivery => ({
  _tag: "DuplicateDelivery",
  rate: rateOf("duplicateDelivery", rate)
})

/** Shuffled, delayed sends. */
export const reorderDelivery = (maxDelay: Duration.DurationInput = "2 seconds"): ReorderDelivery => ({
  _tag: "ReorderDelivery",
  maxDelay: Duration.decode(maxDelay)
})

/** Messages delivered again while their unit runs. */
export const visibilityExpiry = (rate = 0.5): VisibilityExpiry => ({
  _tag: "VisibilityExpiry",
  rate: rateOf("visibilityExpiry", rate)
})

/** Transient store errors. */
export const storeErrors = (
  options: {
    readonly rate: number
    readonly replyLost?: boolean | undefined
    readonly operations?: ReadonlyArray<string> | undefined
  }
): StoreErrors => ({
  _tag: "StoreErrors",
  rate: rateOf("storeErrors", options.rate),
  replyLost: options.replyLost ?? false,
  operations: options.operations
})

/** Transient queue errors. */
export const queueErrors = (
  options: { readonly rate: number; readonly operations?: ReadonlyArray<string> | undefined }
): QueueErrors => ({
  _tag: "QueueErrors",
  rate: rateOf("queueErrors", options.rate),
  operations: options.operations
})

/** A seeded random schedule of crashes, pauses and zombies. */
export const random = (
  options: {
    readonly rate: number
    readonly kinds?: ReadonlyArray<"kill" | "interrupt" | "slow" | "zombie"> | undefined
    readonly max?: number | undefined
  }
): Random => ({
  _tag: "Random",
  rate: rateOf("random", options.rate),
  kinds: options.kinds ?? ["kill", "slow", "zombie"],
  max: options.max ?? 5
})

const where = (match: Match): string => {
  const parts: Array<string> = []
  if (match.partition !== undefined) parts.push(match.partition === "" ? "the run's completion" : match.partition)
  if (match.step !== undefined && match.step !== "") parts.push(`step ${match.step}`)
  if (match.chunkSeq !== undefined) parts.push(`chunk ${match.chunkSeq}`)
  const occurrence = match.occurrence ?? 1
  const which = occurrence === 0 ? "every time" : occurrence === 1 ? "" : `(hit ${occurrence})`
  return [parts.length > 0 ? `of ${parts.join(" / ")}` : "", which].filter((s) => s !== "").join(" ")
}

const percent = (rate: number) => `${Math.round(rate * 1000) / 10}%`

/** The fault as a sentence, e.g. "kill the worker at after-effect of p1 / step apply / chunk 2". */
export const describe = (fault: Fault): string => {
  switch (fault._tag) {
    case "Crash": {
      const what = fault.kind === "kill"
        ? "kill the worker"
        : fault.kind === "interrupt"
        ? "interrupt the unit"
        : "throw a defect"
      return `${what} at ${fault.point} ${where(fault.match)}`.trim()
    }
    case "Slow":
      return `pause ${Duration.format(fault.duration)} at ${fault.point} ${where(fault.match)}`.trim()
    case "Zombie":
      return `freeze the worker past its lease before the commit ${where(fault.match)}`.trim()
    case "DuplicateDelivery":
      return `send ${percent(fault.rate)} of messages twice`
    case "ReorderDelivery":
      return `shuffle sends and delay each by up to ${Duration.format(fault.maxDelay)}`
    case "VisibilityExpiry":
      return `redeliver ${percent(fault.rate)} of messages while their unit runs`
    case "StoreErrors":
      return `fail ${percent(fault.rate)} of store calls${fault.replyLost ? " after applying them (reply lost)" : ""}${
        fault.operations === undefined ? "" : ` (${fault.operations.join(", ")})`
      }`
    case "QueueErrors":
      return `fail ${percent(fault.rate)} of queue calls${
        fault.operations === undefined ? "" : ` (${fault.operations.join(", ")})`
      }`
    case "Random":
      return `at ${percent(fault.rate)} of points, one of ${fault.kinds.join("/")} (at most ${fault.max})`
  }
}
