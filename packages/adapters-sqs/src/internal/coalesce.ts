/**
 * Natural batching for one kind of batch call (DeleteMessageBatch): callers submit items and wait for
 * them; a flusher sends what has accumulated, up to `maxBatch` items per call. When no call is in
 * flight it sends at once (an idle queue acks in one round trip); while calls are in flight it sends
 * only full batches, up to `concurrency` at once, and the rest waits for a call to finish. So under
 * load every call carries `maxBatch` items, and SQS requests per message drop tenfold.
 *
 * This runs once per acked message, so it is plain callbacks around one forked fiber per call: no
 * Deferred or Queue per item (each costs an allocation-heavy Effect object).
 */
import { Effect, Exit, Fiber, FiberId, Runtime, type Scope } from "effect"

/** Submits items to the batcher; completes when all of them are done. */
export type Submit<A, E> = (items: ReadonlyArray<A>) => Effect.Effect<void, E>

interface Pending<A, E> {
  readonly item: A
  readonly done: (exit: Exit.Exit<void, E>) => void
}

/** Starts the batcher in the current scope; closing the scope interrupts calls in flight and fails what waits. */
export const make = <A, E>(options: {
  readonly maxBatch: number
  readonly concurrency: number
  readonly run: (batch: ReadonlyArray<A>) => Effect.Effect<void, E>
}): Effect.Effect<Submit<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const running = new Set<Fiber.RuntimeFiber<void, E>>()
    let waiting: Array<Pending<A, E>> = []
    let closed = false
    let scheduled = false

    const flush = () => {
      scheduled = false
      while (
        !closed && waiting.length > 0 && running.size < options.concurrency &&
        (running.size === 0 || waiting.length >= options.maxBatch)
      ) {
        const batch = waiting.slice(0, options.maxBatch)
        waiting = waiting.slice(options.maxBatch)
        const fiber = runFork(options.run(batch.map((p) => p.item)))
        running.add(fiber)
        fiber.addObserver((exit) => {
          running.delete(fiber)
          for (const p of batch) p.done(exit)
          schedule()
        })
      }
    }
    // The flush waits for the current round of fibers, so acks of handlers that finish together share a call.
    const schedule = () => {
      if (scheduled) return
      scheduled = true
      setImmediate(flush)
    }

    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        const left = waiting
        waiting = []
        for (const p of left) p.done(Exit.interrupt(FiberId.none))
        return Fiber.interruptAll([...running])
      })
    )

    return (items) =>
      items.length === 0 ? Effect.void : Effect.async<void, E>((resume) => {
        let remaining = items.length
        let settled = false
        const done = (exit: Exit.Exit<void, E>) => {
          if (settled) return
          if (Exit.isFailure(exit) || --remaining === 0) {
            settled = true
            resume(exit)
          }
        }
        for (const item of items) waiting.push({ item, done })
        schedule()
      })
  })
