/**
 * What SQS accepts in one SendMessageBatch: at most 10 entries, and a total size (bodies plus message
 * attributes, counted as SQS counts them) within the payload limit. Checked before anything is sent.
 */
import type { MessageAttributeValue } from "@aws-sdk/client-sqs"

/** Entries per batch call (SendMessageBatch, DeleteMessageBatch, ChangeMessageVisibilityBatch). */
export const MAX_BATCH_ENTRIES = 10

/** Characters SQS accepts in a body or a string attribute: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF. */
const INVALID_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u

/** The size SQS charges a message: its body plus each attribute's name, data type and value, in UTF-8 bytes. */
export const sizeOf = (body: string, attributes?: Record<string, MessageAttributeValue>): number => {
  let size = Buffer.byteLength(body, "utf8")
  for (const [name, value] of Object.entries(attributes ?? {})) {
    size += Buffer.byteLength(name, "utf8") + Buffer.byteLength(value.DataType ?? "", "utf8")
    if (value.StringValue !== undefined) size += Buffer.byteLength(value.StringValue, "utf8")
    if (value.BinaryValue !== undefined) size += value.BinaryValue.byteLength
  }
  return size
}

/** Why SQS would refuse this body, or `undefined` when it accepts it. */
export const bodyProblem = (body: string, size: number, maxBytes: number): string | undefined => {
  if (body.length === 0) return "the body is empty; SQS needs at least one character"
  if (size > maxBytes) return `it is ${size} bytes; the queue accepts at most ${maxBytes} bytes`
  const bad = INVALID_CHAR.exec(body)
  if (bad !== null) {
    const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")
    return `it holds U+${code} at index ${bad.index}, a character SQS refuses; encode the body (e.g. base64 or JSON escapes)`
  }
  return undefined
}

/**
 * Splits sized items into batches of at most 10 whose sizes add up to at most `maxBatchBytes`, in order
 * (FIFO groups keep their order). Every item must be within `maxBatchBytes` on its own.
 */
export const split = <A>(
  items: ReadonlyArray<A>,
  sizeOfItem: (item: A) => number,
  maxBatchBytes: number
): Array<Array<A>> => {
  const batches: Array<Array<A>> = []
  let current: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const size = sizeOfItem(item)
    if (current.length === MAX_BATCH_ENTRIES || (current.length > 0 && bytes + size > maxBatchBytes)) {
      batches.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += size
  }
  if (current.length > 0) batches.push(current)
  return batches
}

/** Splits into chunks of at most 10, for the batch calls that have no size limit. */
export const tens = <A>(items: ReadonlyArray<A>): Array<Array<A>> => split(items, () => 0, 0)
