/**
 * New work, told to the workers of this process at once. `Runner.start` and `Runner.retry` only write
 * rows (D1); a worker's feeder finds them on its next tick (`feedInterval`). When the runner and a
 * worker share a process (an embedded service, a CLI's `start --wait` beside its workers, tests), the
 * runner wakes that worker's feeder instead, so the first chunk starts without waiting for a tick.
 * Workers in other processes still find the rows on their next tick.
 */
import { Effect } from "effect"

const feeders = new Set<() => void>()

/** Registers a feeder's wake-up for the life of the current scope. */
export const onLocalWork = (wake: () => void) =>
  Effect.acquireRelease(Effect.sync(() => feeders.add(wake)), () => Effect.sync(() => feeders.delete(wake)))

/** Wakes every feeder of this process. */
export const signalLocalWork = Effect.sync(() => feeders.forEach((wake) => wake()))
