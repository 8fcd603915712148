/**
 * The queue message: a small pointer to a unit, `{ v, job, runId, unitId, seq }` (DESIGN D1). The
 * store is the truth and the message only wakes a worker, so a lost or duplicated message is harmless.
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema } from "effect"

/** The message format version this code writes and reads. */
export const VERSION = 1

/** A queue message that points a worker at one unit of one run; its bounded fields keep it under 1 KiB. */
export const WorkMessage = Schema.Struct({
  v: Schema.Literal(VERSION),
  job: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)),
  runId: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)),
  unitId: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200)),
  /** The unit's `enqueue_seq` when this message was sent; older messages are acked unread. */
  seq: Schema.Int.pipe(Schema.nonNegative())
})

/** @since 0.1.0 */
export interface WorkMessage extends Schema.Schema.Type<typeof WorkMessage> {}

/** Serialises a message to its wire form (JSON). */
export const encode = (message: WorkMessage): string => JSON.stringify(message)

/** What the worker makes of a raw body. */
export type Decoded =
  | { readonly _tag: "Message"; readonly message: WorkMessage }
  /** Written by a newer chunkwise (rolling deploy): leave it for a newer worker. */
  | { readonly _tag: "NewerVersion"; readonly version: number }
  | { readonly _tag: "Malformed"; readonly reason: string }

const decodeMessage = Schema.decodeUnknownEither(WorkMessage)

/** Decodes a raw body, telling a newer message version apart from garbage. */
export const decode = (body: string): Decoded => {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch (e) {
    return { _tag: "Malformed", reason: `body is not JSON: ${(e as Error).message}` }
  }
  const version = typeof json === "object" && json !== null ? (json as { v?: unknown }).v : undefined
  if (typeof version === "number" && Number.isInteger(version) && version > VERSION) {
    return { _tag: "NewerVersion", version }
  }
  return Either.match(decodeMessage(json), {
    onLeft: (error) => ({
      _tag: "Malformed" as const,
      reason: `not a chunkwise message: ${ParseResult.TreeFormatter.formatErrorSync(error)}`
    }),
    onRight: (message) => ({ _tag: "Message" as const, message })
  })
}
