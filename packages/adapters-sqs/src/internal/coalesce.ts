/**
 * Natural batching for one kind of batch call (DeleteMessageBatch): callers submit items and wait for
 * them; a flusher sends what has accumulated, up to `maxBatch` items per call. When no call is in
 * flight it sends at once (an idle queue acks in one round trip); while calls are in flight it sends
 * only full batches, up to `concurrency` at once, and the rest waits for a call to finish. So under
 * load every call carries `maxBatch` items, and SQS requests per message drop tenfold.
 */
import { Deferred, Effect, Exit, FiberId, Queue, type Scope } from "effect"

/** Submits items to the batcher; completes when all of them are done. */
export type Submit<A, E> = (items: ReadonlyArray<A>) => Effect.Effect<void, E>

interface Pending<A, E> {
  readonly item: A
  readonly done: (exit: Exit.Exit<void, E>) => void
}

/** Starts the flusher in the current scope; closing the scope fails what is still waiting. */
export const make = <A, E>(options: {
  readonly maxBatch: number
  readonly concurrency: number
  readonly run: (batch: ReadonlyArray<A>) => Effect.Effect<void, E>
}): Effect.Effect<Submit<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const wake = yield* Queue.sliding<void>(1)
    let waiting: Array<Pending<A, E>> = []
    let inFlight = 0
    const settle = (batch: ReadonlyArray<Pending<A, E>>) => (exit: Exit.Exit<void, E>) =>
      Effect.sync(() => {
        for (const p of batch) p.done(exit)
      })
    const flush = Effect.gen(function*() {
      yield* Queue.take(wake)
      // Let the fibers woken in the same round submit too, so they share the call.
      yield* Effect.yieldNow()
      while (
        waiting.length > 0 && inFlight < options.concurrency && (inFlight === 0 || waiting.length >= options.maxBatch)
      ) {
        const batch = waiting.slice(0, options.maxBatch)
        waiting = waiting.slice(options.maxBatch)
        inFlight += 1
        yield* Effect.forkIn(
          options.run(batch.map((p) => p.item)).pipe(
            Effect.onExit(settle(batch)),
            Effect.ensuring(Effect.suspend(() => {
              inFlight -= 1
              return Queue.offer(wake, undefined)
            }))
          ),
          scope
        )
      }
    })
    yield* Effect.forkScoped(Effect.forever(flush))
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        const left = waiting
        waiting = []
        return settle(left)(Exit.interrupt(FiberId.none))
      })
    )

    return (items) =>
      Effect.suspend(() => {
        if (items.length === 0) return Effect.void
        const deferred = Deferred.unsafeMake<void, E>(FiberId.none)
        let remaining = items.length
        const done = (exit: Exit.Exit<void, E>) => {
          if (Exit.isFailure(exit)) Deferred.unsafeDone(deferred, exit)
          else if (--remaining === 0) Deferred.unsafeDone(deferred, Exit.void)
        }
        for (const item of items) waiting.push({ item, done })
        return Effect.zipRight(Queue.offer(wake, undefined), Deferred.await(deferred))
      })
  })
