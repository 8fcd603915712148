/**
 * The receipts one adapter instance handed out, with a conservative local deadline for each.
 *
 * SQS does not promise that a stale receipt handle is refused: AWS documents that a delete with an
 * old handle "succeeds, but the message might not be deleted", i.e. it may delete the newer delivery.
 * A delivery can only be redelivered once its visibility timeout has passed, and the instance that
 * received it knows (from a clock read before the ReceiveMessage request left) the earliest moment
 * that can happen. So an ack, release, extend or deadLetter after that moment, minus a margin for the
 * request's flight time, is a no-op here and never reaches SQS: the contract's "a stale receipt never
 * affects the newer delivery" holds without trusting the broker.
 */
import { randomUUID } from "node:crypto"

/** A delivery this instance holds. */
export interface Held {
  readonly handle: string
  readonly messageId: string
  readonly body: string
  readonly groupId: string | undefined
  readonly receiveCount: number
  /** Monotonic ms, read before the ReceiveMessage request was sent (SQS's 12 h limit counts from it). */
  readonly receivedAt: number
  /** Monotonic ms before which SQS cannot have made the message visible again. */
  deadline: number
  /** How long before `deadline` the receipt already counts as stale. */
  margin: number
}

/** The monotonic clock the deadlines use (wall-clock steps must not revive a receipt). */
export const now = (): number => performance.now()

/**
 * Leaves room for a request's flight time: a tenth of the visibility, at most the request timeout (the
 * longest a request the adapter still waits for can take to reach SQS).
 */
export const marginFor = (visibilityMs: number, requestTimeoutMs: number): number =>
  Math.min(requestTimeoutMs, visibilityMs / 10)

/** The receipts of one adapter instance. */
export class Receipts {
  private readonly prefix = `sqs-${randomUUID().slice(0, 8)}:`
  private readonly held = new Map<string, Held>()
  private counter = 0
  private lastSweep = now()

  /** Records a delivery and returns the receipt the caller gets. */
  issue(entry: Held): string {
    this.counter += 1
    const receipt = `${this.prefix}${this.counter}`
    this.held.set(receipt, entry)
    this.sweep()
    return receipt
  }

  /** The delivery behind a receipt while it is current; `undefined` when it is stale or unknown. */
  current(receipt: string, at: number = now()): Held | undefined {
    const entry = this.held.get(receipt)
    if (entry === undefined) return undefined
    if (at < entry.deadline - entry.margin) return entry
    this.held.delete(receipt)
    return undefined
  }

  /** Whether the receipt is still current (a retry re-checks before each attempt). */
  isLive(entry: Held, at: number = now()): boolean {
    return at < entry.deadline - entry.margin
  }

  /** Forgets a receipt: after ack, release or deadLetter it is stale by definition. */
  forget(receipt: string): void {
    this.held.delete(receipt)
  }

  /** How many deliveries are held (for tests and metrics). */
  get size(): number {
    return this.held.size
  }

  /** Drops expired receipts now and then, so a worker that never acks cannot grow the map. */
  private sweep(): void {
    const at = now()
    if (at - this.lastSweep < 5_000) return
    this.lastSweep = at
    for (const [receipt, entry] of this.held) {
      if (at >= entry.deadline) this.held.delete(receipt)
    }
  }
}
