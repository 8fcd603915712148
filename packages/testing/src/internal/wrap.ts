/**
 * The store and queue one harness worker sees: the real ones, with the trial's faults on the way, and a
 * switch that cuts the worker off as a killed process would be (nothing it does afterwards arrives).
 */
import { Errors, type QueueAdapter, type StateStore } from "@chunkwise/core"
import { Duration, Effect, FiberRef } from "effect"
import type * as Fault from "../Fault.js"

/** A worker's connection to the store and the queue, and the messages it holds. */
export interface Severable {
  severed: boolean
  readonly receipts: Set<string>
}

const cutOff = Effect.interrupt

const drawn = (rng: () => number, rate: number) => rate > 0 && rng() < rate

interface StoreOptions {
  readonly cut: Severable
  readonly faults: ReadonlyArray<Fault.Fault>
  readonly rng: () => number
  readonly onClaim: (unit: StateStore.UnitRecord) => void
  /** Set inside a store transaction, so a completion that commits is counted once. */
  readonly finishing: FiberRef.FiberRef<{ finished: boolean } | undefined>
  readonly onCompleted: () => void
  readonly onInjected: (fault: string) => void
}

type AnyOperation = (...args: ReadonlyArray<unknown>) => Effect.Effect<unknown, unknown, unknown>

/** The store as one harness worker sees it. */
export const makeStore = (real: StateStore.StateStoreShape, options: StoreOptions): StateStore.StateStoreShape => {
  const errors = options.faults.filter((f): f is Fault.StoreErrors => f._tag === "StoreErrors")
  const failing = (operation: string) =>
    errors.find((f) => (f.operations === undefined || f.operations.includes(operation)) && drawn(options.rng, f.rate))
  /**
   * The injected error. A reply lost after a COMMIT is `CommitOutcomeUnknown`: a transaction's, and a
   * commit marked `last` (a store may end its transaction with it, its COMMIT in the same round trip).
   */
  const unavailable = (operation: string, fault: Fault.StoreErrors, endsTransaction: boolean) => {
    options.onInjected(`store ${operation} failed${fault.replyLost ? " after applying (reply lost)" : ""}`)
    return endsTransaction && fault.replyLost
      ? new Errors.CommitOutcomeUnknown({ message: "chunkwise harness: connection lost after COMMIT" })
      : new Errors.StoreUnavailable({ operation, message: "chunkwise harness: injected store error" })
  }
  const guard = (operation: string, call: Effect.Effect<unknown, unknown, unknown>, endsTransaction = false) =>
    Effect.suspend(() => {
      if (options.cut.severed) return cutOff
      const fault = failing(operation)
      if (fault === undefined) return call
      if (!fault.replyLost) return Effect.fail(unavailable(operation, fault, endsTransaction))
      return Effect.zipRight(call, Effect.fail(unavailable(operation, fault, endsTransaction)))
    })

  const wrapped: Record<string, unknown> = { ...real }
  for (const [name, value] of Object.entries(real)) {
    if (typeof value !== "function" || name === "transaction") continue // `session` is an effect: wrapped below
    const operation = value as AnyOperation
    wrapped[name] = (...args: ReadonlyArray<unknown>) =>
      guard(
        name,
        Effect.suspend(() => operation(...args)),
        name === "commitChunk" && (args[0] as StateStore.ChunkCommit).last === true
      )
  }
  /** A store transaction with the trial's faults, counting a completion that commits in it once. */
  const guardedTransaction =
    (transaction: StateStore.StateStoreShape["transaction"]): StateStore.StateStoreShape["transaction"] => (effect) =>
      Effect.suspend(() => {
        const cell = { finished: false }
        const call = Effect.tap(
          transaction(Effect.locally(effect, options.finishing, cell)),
          () => Effect.sync(() => cell.finished && options.onCompleted())
        )
        return guard("transaction", call, true) as typeof call
      })
  const claim = wrapped["claim"] as StateStore.StateStoreShape["claim"]
  const finishRun = wrapped["finishRun"] as StateStore.StateStoreShape["finishRun"]
  const shape: StateStore.StateStoreShape = {
    ...(wrapped as unknown as StateStore.StateStoreShape),
    claim: (request) =>
      Effect.tap(claim(request), (result) => {
        if (result._tag === "Claimed") options.onClaim(result.unit)
      }),
    finishRun: (lease, outcome, key) =>
      Effect.tap(
        finishRun(lease, outcome, key),
        () => Effect.map(FiberRef.get(options.finishing), (cell) => cell !== undefined && (cell.finished = true))
      ),
    transaction: guardedTransaction(real.transaction),
    // A worker's chunks run through a session where the store has one: the same faults on its transactions.
    session: real.session === undefined ? undefined : Effect.map(real.session, (session) => ({
      transaction: guardedTransaction(session.transaction),
      idle: session.idle
    }))
  }
  return shape
}

interface QueueOptions {
  readonly cut: Severable
  readonly faults: ReadonlyArray<Fault.Fault>
  readonly rng: () => number
  readonly onInjected: (fault: string) => void
}

/** The queue as one harness worker sees it. */
export const makeQueue = (
  real: QueueAdapter.QueueAdapterShape,
  options: QueueOptions
): QueueAdapter.QueueAdapterShape => {
  const { cut, rng } = options
  const errors = options.faults.filter((f): f is Fault.QueueErrors => f._tag === "QueueErrors")
  const duplicate = options.faults.find((f): f is Fault.DuplicateDelivery => f._tag === "DuplicateDelivery")
  const reorder = options.faults.find((f): f is Fault.ReorderDelivery => f._tag === "ReorderDelivery")
  const expiry = options.faults.find((f): f is Fault.VisibilityExpiry => f._tag === "VisibilityExpiry")
  const guard = <A, E>(operation: string, call: Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | Errors.QueueUnavailable> => {
      if (cut.severed) return cutOff
      const fault = errors.find((f) =>
        (f.operations === undefined || f.operations.includes(operation)) && drawn(rng, f.rate)
      )
      if (fault === undefined) return call
      options.onInjected(`queue ${operation} failed`)
      return Effect.fail(
        new Errors.QueueUnavailable({ operation, message: "chunkwise harness: injected queue error" })
      )
    })
  const forget = (receipts: ReadonlyArray<string>) => Effect.sync(() => receipts.forEach((r) => cut.receipts.delete(r)))

  return {
    ...real,
    send: (messages, sendOptions) =>
      guard(
        "send",
        Effect.suspend(() => {
          const out = messages.flatMap((m) => {
            if (duplicate !== undefined && drawn(rng, duplicate.rate)) {
              options.onInjected("message sent twice")
              return [m, m]
            }
            return [m]
          })
          if (reorder === undefined) return real.send(out, sendOptions)
          // Each message on its own, shuffled, with its own delay.
          const maxMs = Duration.toMillis(reorder.maxDelay)
          const shuffled = out.map((m) => ({ m, key: rng() })).sort((a, b) => a.key - b.key)
          if (out.length > 1) options.onInjected(`${out.length} messages reordered`)
          return Effect.forEach(
            shuffled,
            ({ m }) => real.send([m], { delayMs: (sendOptions?.delayMs ?? 0) + Math.floor(rng() * maxMs) }),
            { discard: true }
          )
        })
      ),
    receive: (receiveOptions) =>
      guard(
        "receive",
        Effect.suspend(() => {
          const shortVisibility = expiry !== undefined && drawn(rng, expiry.rate)
          if (shortVisibility) options.onInjected("message visible again while its unit runs")
          return Effect.tap(
            real.receive(shortVisibility ? { ...receiveOptions, visibilityMs: 1 } : receiveOptions),
            (deliveries) => Effect.sync(() => deliveries.forEach((d) => cut.receipts.add(d.receipt)))
          )
        })
      ),
    ack: (receipts) => guard("ack", Effect.zipRight(real.ack(receipts), forget(receipts))),
    release: (receipt, delayMs) => guard("release", Effect.zipRight(real.release(receipt, delayMs), forget([receipt]))),
    extend: (receipts, visibilityMs) => guard("extend", real.extend(receipts, visibilityMs)),
    deadLetter: (receipt, reason) =>
      guard("deadLetter", Effect.zipRight(real.deadLetter(receipt, reason), forget([receipt])))
  }
}
