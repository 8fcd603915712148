/**
 * The queue port. A queue only wakes workers: the state store decides what runs (D1), so a driver
 * needs at-least-once delivery and nothing stronger.
 *
 * Contract, for every driver (memory here; Postgres, Redis and SQS in their modules and packages):
 *
 * - **At-least-once delivery.** A sent message is delivered until it is acknowledged or dead-lettered.
 * - **Visibility timeout.** A received message is hidden for `visibilityMs`; if it is neither acked,
 *   released nor extended in that time, it is delivered again (with `receiveCount + 1`).
 * - **Release with delay.** `release` makes an in-flight message visible again after `delayMs`.
 * - **Extend.** `extend` pushes the visibility of in-flight messages to `visibilityMs` from now; it is
 *   not a delivery and does not count as one.
 * - **Batches.** `send`, `ack` and `extend` take many messages; drivers split them to broker limits.
 * - **Dead-lettering.** A message received more than `maxReceives` times is moved to the dead-letter
 *   store with the reason; `deadLetter` does the same on demand (a malformed body). `redrive` moves
 *   dead letters back.
 * - **Depth.** Ready, in flight, delayed and dead counts, for autoscaling and alerts.
 * - **Receipts.** An ack, release or extend with a receipt that is no longer current (the message was
 *   delivered again since) is a no-op: it never affects the newer delivery.
 * - **Size.** A body over the driver's limit is rejected by `send` with `MessageRejected`, nothing sent.
 * - **Interrupted receives.** A receive interrupted after the broker handed messages out gives them
 *   back (visible at once) rather than leaving them hidden until their visibility ends (`receiveOrGiveBack`).
 *
 * Outside the contract: ordering (even FIFO drivers only order within a group), exactly-once
 * delivery, and message contents (the worker validates bodies; drivers pass them through).
 *
 * @since 0.1.0
 */
import { Clock, Context, Deferred, Effect, Exit, Fiber, Layer } from "effect"
import * as Errors from "./Errors.js"

/** A message to send. */
export interface OutgoingMessage {
  readonly body: string
  /** FIFO drivers: messages of one group are delivered in order (chunkwise uses the unit id). */
  readonly groupId?: string | undefined
  /** FIFO drivers: sends with the same id within the broker's window are deduplicated. */
  readonly deduplicationId?: string | undefined
}

/** A received message. */
export interface Delivery {
  readonly messageId: string
  /** Identifies this delivery for ack, release and extend. */
  readonly receipt: string
  readonly body: string
  /** 1 on the first delivery. */
  readonly receiveCount: number
}

/** A dead-lettered message and why. */
export interface DeadLetter {
  readonly messageId: string
  readonly body: string
  readonly reason: string
  readonly receiveCount: number
  /** Epoch milliseconds. */
  readonly at: number
}

/** Message counts. */
export interface Depth {
  readonly ready: number
  readonly inFlight: number
  readonly delayed: number
  readonly dead: number
  /**
   * How long the oldest ready message has been waiting to be received, in ms: the signal to scale
   * workers on. `null` when nothing is ready, or when the broker cannot tell cheaply (SQS reports it
   * only as a CloudWatch metric).
   */
  readonly oldestReadyAgeMs: number | null
}

/** What a receive asks for. */
export interface ReceiveOptions {
  /** At most this many messages. */
  readonly max: number
  /** Hide each received message for this long. */
  readonly visibilityMs: number
  /** Wait up to this long for a first message (long polling); 0 returns at once. */
  readonly waitMs: number
}

/** The queue service. See the module doc for its contract. */
export interface QueueAdapterShape {
  /** `"memory"`, `"postgres"`, `"redis"`, `"sqs"`. */
  readonly kind: string
  readonly send: (
    messages: ReadonlyArray<OutgoingMessage>,
    options?: { readonly delayMs?: number | undefined }
  ) => Effect.Effect<void, Errors.QueueUnavailable | Errors.MessageRejected>
  readonly receive: (options: ReceiveOptions) => Effect.Effect<ReadonlyArray<Delivery>, Errors.QueueUnavailable>
  readonly ack: (receipts: ReadonlyArray<string>) => Effect.Effect<void, Errors.QueueUnavailable>
  readonly release: (receipt: string, delayMs: number) => Effect.Effect<void, Errors.QueueUnavailable>
  readonly extend: (
    receipts: ReadonlyArray<string>,
    visibilityMs: number
  ) => Effect.Effect<void, Errors.QueueUnavailable>
  readonly deadLetter: (receipt: string, reason: string) => Effect.Effect<void, Errors.QueueUnavailable>
  readonly depth: Effect.Effect<Depth, Errors.QueueUnavailable>
  readonly deadLetters: (
    options: { readonly limit: number }
  ) => Effect.Effect<ReadonlyArray<DeadLetter>, Errors.QueueUnavailable>
  /** Moves dead letters (all, or the given ids) back to the queue; returns how many moved. */
  readonly redrive: (
    options: { readonly messageIds?: ReadonlyArray<string> | undefined }
  ) => Effect.Effect<number, Errors.QueueUnavailable>
}

/**
 * For drivers: runs `call`, a broker call that hands messages out. If the caller is interrupted (a
 * worker draining) while the call is in flight, the caller is released at once and the call goes on
 * in the background; what it received is then given back with `giveBack` (visible again at once)
 * instead of dropped, which would leave it hidden for its visibility timeout. Interrupting the request
 * itself could not undo a delivery the broker already made.
 */
export const receiveOrGiveBack = <A, E, R, R2>(
  call: Effect.Effect<A, E, R>,
  giveBack: (received: A) => Effect.Effect<void, never, R2>
): Effect.Effect<A, E, R | R2> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.forkDaemon(call), (inFlight) =>
      restore(Fiber.join(inFlight)).pipe(
        Effect.onInterrupt(() =>
          Effect.forkDaemon(
            Effect.flatMap(Fiber.await(inFlight), (exit) => Exit.isSuccess(exit) ? giveBack(exit.value) : Effect.void)
          )
        )
      ))
  )

/** The queue service. */
export class QueueAdapter extends Context.Tag("@chunkwise/core/QueueAdapter")<QueueAdapter, QueueAdapterShape>() {}

/** Options of the in-memory queue. */
export interface MemoryOptions {
  /** Dead-letter a message on its next receive after this many (default 50, D11). */
  readonly maxReceives?: number | undefined
  /** Largest body in bytes (default 262,144, as SQS). */
  readonly maxMessageBytes?: number | undefined
}

interface Entry {
  readonly messageId: string
  readonly body: string
  readonly seq: number
  visibleAt: number
  receiveCount: number
  receipt: string | null
}

/** Makes an in-memory queue. Time comes from Effect's `Clock`, so `TestClock` drives visibility. */
export const makeMemory = (options: MemoryOptions = {}): Effect.Effect<QueueAdapterShape> =>
  Effect.sync(() => {
    const maxReceives = options.maxReceives ?? 50
    const maxBytes = options.maxMessageBytes ?? 262_144
    const entries = new Map<string, Entry>()
    const byReceipt = new Map<string, Entry>()
    const dead: Array<DeadLetter> = []
    let counter = 0
    let deliveries = 0
    let waiters: Array<Deferred.Deferred<void>> = []
    const wake = () => {
      const woken = waiters
      waiters = []
      for (const waiter of woken) Deferred.unsafeDone(waiter, Effect.void)
    }
    const current = (receipt: string): Entry | undefined => {
      const entry = byReceipt.get(receipt)
      return entry !== undefined && entry.receipt === receipt && entries.has(entry.messageId) ? entry : undefined
    }
    const drop = (entry: Entry) => {
      entries.delete(entry.messageId)
      if (entry.receipt !== null) byReceipt.delete(entry.receipt)
    }
    const toDead = (entry: Entry, reason: string, at: number) => {
      drop(entry)
      dead.push({ messageId: entry.messageId, body: entry.body, reason, receiveCount: entry.receiveCount, at })
    }
    const invalidate = (entry: Entry) => {
      if (entry.receipt !== null) byReceipt.delete(entry.receipt)
      entry.receipt = null
    }

    const takeVisible = (max: number, visibilityMs: number, at: number): Array<Delivery> => {
      const visible = [...entries.values()].filter((e) => e.visibleAt <= at).sort((a, b) =>
        a.visibleAt - b.visibleAt || a.seq - b.seq
      )
      const out: Array<Delivery> = []
      for (const entry of visible) {
        if (out.length >= max) break
        if (entry.receiveCount >= maxReceives) {
          toDead(
            entry,
            `received ${entry.receiveCount} times without being acknowledged (maxReceives ${maxReceives})`,
            at
          )
          continue
        }
        invalidate(entry)
        entry.receiveCount += 1
        entry.visibleAt = at + visibilityMs
        // Unique per delivery, not per receive count: a redriven message starts its count again, and a
        // receipt from before the redrive must not reach the new delivery.
        deliveries += 1
        entry.receipt = `${entry.messageId}#${deliveries}`
        byReceipt.set(entry.receipt, entry)
        out.push({
          messageId: entry.messageId,
          receipt: entry.receipt,
          body: entry.body,
          receiveCount: entry.receiveCount
        })
      }
      return out
    }
    const nextVisibleIn = (at: number): number => {
      let next = Infinity
      for (const entry of entries.values()) next = Math.min(next, entry.visibleAt - at)
      return next
    }

    const shape: QueueAdapterShape = {
      kind: "memory",
      send: (messages, sendOptions) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) => {
          for (const message of messages) {
            const bytes = Buffer.byteLength(message.body, "utf8")
            if (bytes > maxBytes) {
              return Effect.fail(
                new Errors.MessageRejected({
                  reason: `message body is ${bytes} bytes; the in-memory queue accepts at most ${maxBytes}`
                })
              )
            }
          }
          for (const message of messages) {
            counter += 1
            const entry: Entry = {
              messageId: `m${counter}`,
              body: message.body,
              seq: counter,
              visibleAt: at + (sendOptions?.delayMs ?? 0),
              receiveCount: 0,
              receipt: null
            }
            entries.set(entry.messageId, entry)
          }
          wake()
          return Effect.void
        }),
      receive: ({ max, visibilityMs, waitMs }) =>
        Effect.gen(function*() {
          const start = yield* Clock.currentTimeMillis
          while (true) {
            const at = yield* Clock.currentTimeMillis
            const out = takeVisible(max, visibilityMs, at)
            const left = start + waitMs - at
            if (out.length > 0 || left <= 0) return out
            const waiter = Deferred.unsafeMake<void>(undefined as never)
            waiters.push(waiter)
            yield* Effect.raceFirst(
              Deferred.await(waiter),
              Effect.sleep(Math.max(1, Math.min(left, nextVisibleIn(at))))
            )
          }
        }),
      ack: (receipts) =>
        Effect.sync(() => {
          for (const receipt of receipts) {
            const entry = current(receipt)
            if (entry !== undefined) drop(entry)
          }
        }),
      release: (receipt, delayMs) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.sync(() => {
            const entry = current(receipt)
            if (entry === undefined) return
            invalidate(entry)
            entry.visibleAt = at + delayMs
            if (delayMs <= 0) wake()
          })),
      extend: (receipts, visibilityMs) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.sync(() => {
            for (const receipt of receipts) {
              const entry = current(receipt)
              if (entry !== undefined) entry.visibleAt = at + visibilityMs
            }
          })),
      deadLetter: (receipt, reason) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.sync(() => {
            const entry = current(receipt)
            if (entry !== undefined) toDead(entry, reason, at)
          })),
      depth: Effect.map(Clock.currentTimeMillis, (at) => {
        let ready = 0
        let inFlight = 0
        let delayed = 0
        let readySince = Infinity
        for (const entry of entries.values()) {
          if (entry.visibleAt <= at) {
            ready += 1
            readySince = Math.min(readySince, entry.visibleAt)
          } else if (entry.receipt !== null) inFlight += 1
          else delayed += 1
        }
        return {
          ready,
          inFlight,
          delayed,
          dead: dead.length,
          oldestReadyAgeMs: ready === 0 ? null : at - readySince
        }
      }),
      deadLetters: ({ limit }) => Effect.sync(() => dead.slice(0, limit)),
      redrive: ({ messageIds }) =>
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          Effect.sync(() => {
            const chosen = dead.filter((d) => messageIds === undefined || messageIds.includes(d.messageId))
            for (const letter of chosen) {
              dead.splice(dead.indexOf(letter), 1)
              counter += 1
              entries.set(letter.messageId, {
                messageId: letter.messageId,
                body: letter.body,
                seq: counter,
                visibleAt: at,
                receiveCount: 0,
                receipt: null
              })
            }
            if (chosen.length > 0) wake()
            return chosen.length
          }))
    }
    return shape
  })

/** The in-memory queue as a layer. */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<QueueAdapter> =>
  Layer.effect(QueueAdapter, makeMemory(options))
