/**
 * Named points in a worker's life where a test harness can inject faults: a crash (interruption or
 * defect), a delay, a lost reply. In production the default probe does nothing.
 *
 * @since 0.1.0
 */
import { Context, Effect } from "effect"

/** Where in a unit's life the worker is. */
export type Point =
  /** Before a chunk's (or single step's) effect runs. */
  | "before-effect"
  /** After the effect, before the checkpoint commits (inside the chunk transaction in `chunk` mode). */
  | "after-effect"
  /** After the checkpoint committed, before anything else. */
  | "after-commit"
  /** Before the queue message is acknowledged. */
  | "before-ack"
  /** In the heartbeat, before leases are renewed. */
  | "heartbeat"
  /** Before the completion hook runs. */
  | "before-complete"
  /** After the completion hook, before the run's terminal status commits. */
  | "after-complete"

/** What the worker knows at a point. */
export interface Info {
  readonly workerId: string
  readonly job: string
  readonly runId: string
  readonly unitId: string
  readonly step: string
  readonly chunkSeq: number
  readonly attempt: number
}

/** What a probe does. */
export interface ProbeShape {
  /** Runs at each point; a harness returns an interruption, a defect or a delay here. */
  readonly at: (point: Point, info: Info) => Effect.Effect<void>
  /**
   * Wraps the user's effect of one chunk (or single step), from its start to its end however it ends:
   * a harness records when each execution ran, to prove that no two overlapped.
   */
  readonly around: <A, E, R>(info: Info, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

/** The probe service; a `Context.Reference`, so it needs no layer. */
export class Probe extends Context.Reference<Probe>()("@chunkwise/core/Probe", {
  defaultValue: (): ProbeShape => ({ at: () => Effect.void, around: (_, effect) => effect })
}) {}

/** A probe from the hooks given; the others do nothing. */
export const make = (hooks: Partial<ProbeShape>): ProbeShape => ({
  at: hooks.at ?? (() => Effect.void),
  around: hooks.around ?? ((_, effect) => effect)
})
