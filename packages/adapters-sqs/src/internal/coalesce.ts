/**
 * Natural batching for one kind of batch call (DeleteMessageBatch): callers submit items and wait for
 * them; a loop sends whatever has accumulated, up to `maxBatch` per call and `concurrency` calls at
 * once. An idle queue sends at once; a busy one fills its batches while earlier calls are in flight.
 */
import { Deferred, Effect, Exit, FiberId, Queue, type Scope } from "effect"

/** Submits items to the batcher; completes when all of them are done. */
export type Submit<A, E> = (items: ReadonlyArray<A>) => Effect.Effect<void, E>

interface Pending<A, E> {
  readonly item: A
  readonly done: (exit: Exit.Exit<void, E>) => void
}

/** Starts the loop in the current scope; it stops (failing what is still waiting) when the scope closes. */
export const make = <A, E>(options: {
  readonly maxBatch: number
  readonly concurrency: number
  readonly run: (batch: ReadonlyArray<A>) => Effect.Effect<void, E>
}): Effect.Effect<Submit<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const pending = yield* Queue.unbounded<Pending<A, E>>()
    const permits = yield* Effect.makeSemaphore(options.concurrency)
    const settle = (batch: ReadonlyArray<Pending<A, E>>) => (exit: Exit.Exit<void, E>) =>
      Effect.sync(() => {
        for (const p of batch) p.done(exit)
      })
    // Waiting for a permit before taking is what lets items accumulate while every permit is busy.
    const loop = Effect.forever(
      Effect.zipRight(
        permits.take(1),
        Effect.flatMap(Queue.takeBetween(pending, 1, options.maxBatch), (chunk) => {
          const batch = [...chunk]
          return Effect.forkIn(
            options.run(batch.map((p) => p.item)).pipe(
              Effect.onExit(settle(batch)),
              Effect.ensuring(permits.release(1))
            ),
            scope
          )
        })
      )
    )
    yield* Effect.forkScoped(loop)
    yield* Effect.addFinalizer(() =>
      Effect.flatMap(Queue.takeAll(pending), (left) => settle([...left])(Exit.interrupt(FiberId.none)))
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
        return Effect.zipRight(
          Queue.offerAll(pending, items.map((item) => ({ item, done }))),
          Deferred.await(deferred)
        )
      })
  })
