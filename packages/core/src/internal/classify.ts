import { Cause, Option } from "effect"
import * as Errors from "../Errors.js"
import * as Job from "../Job.js"
import type * as Runbook from "../Runbook.js"

/** A failure, classified (D12): which error class it is, with that class's runbook. */
export interface Classified {
  readonly tag: string
  readonly message: string
  readonly cause: string
  readonly runbook: Runbook.Runbook
  readonly error: unknown
}

const tagOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && typeof (error as { _tag?: unknown })._tag === "string"
    ? (error as { _tag: string })._tag
    : undefined

const messageOf = (error: unknown): string => {
  if (error instanceof Error && error.message !== "") return error.message
  if (typeof error === "object" && error !== null) {
    try {
      return JSON.stringify(error)
    } catch {
      return String(error)
    }
  }
  return String(error)
}

/**
 * Classifies a failed cause in the fixed order: registered tags of the job; chunkwise built-ins;
 * Effect's `TimeoutException` as `StepTimeout`; anything else (including defects) as `Unclassified`.
 */
export const classify = (job: Job.Any, cause: Cause.Cause<unknown>, step: string): Classified => {
  const pretty = Cause.pretty(cause)
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    const tag = tagOf(error)
    if (tag !== undefined && job.runbooks.has(tag)) {
      return { tag, message: messageOf(error), cause: pretty, runbook: job.runbooks.get(tag)!, error }
    }
    const sqlState = tag === "SqlError" ? sqlStateOf(error) : undefined
    if (sqlState !== undefined) {
      const mapped = fromSqlState(sqlState, messageOf(error))
      if (mapped !== undefined) {
        return {
          tag: mapped._tag,
          message: mapped.message,
          cause: pretty,
          runbook: Job.runbookFor(job, mapped._tag),
          error
        }
      }
    }
    if (Cause.isTimeoutException(error)) {
      const timeout = new Errors.StepTimeout({ step, timeoutMs: 0 })
      return {
        tag: timeout._tag,
        message: messageOf(error),
        cause: pretty,
        runbook: Job.runbookFor(job, timeout._tag),
        error
      }
    }
    const unclassified = new Errors.Unclassified({
      message: messageOf(error),
      originalTag: tag,
      defect: false
    })
    return {
      tag: unclassified._tag,
      message: unclassified.message,
      cause: pretty,
      runbook: Job.runbookFor(job, "Unclassified"),
      error
    }
  }
  const defect = Cause.dieOption(cause)
  const message = Option.isSome(defect) ? messageOf(defect.value) : "interrupted"
  return {
    tag: "Unclassified",
    message: `defect: ${message}`,
    cause: pretty,
    runbook: Job.runbookFor(job, "Unclassified"),
    error: Option.getOrUndefined(defect)
  }
}

/** What `pick` finds first on the causes behind `error` (an `SqlError`'s, up to four deep), if anything. */
export const fromCauses = <A>(error: unknown, pick: (cause: object) => A | undefined): A | undefined => {
  let current: unknown = (error as { cause?: unknown }).cause
  for (let depth = 0; depth < 4 && current !== null && typeof current === "object"; depth++) {
    const found = pick(current)
    if (found !== undefined) return found
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/** The SQLSTATE (or the Node system error code) behind an `SqlError`, if any. */
export const sqlStateOf = (error: unknown): string | undefined =>
  fromCauses(error, (cause) => {
    const code = (cause as { code?: unknown }).code
    return typeof code === "string" ? code : undefined
  })

/** D12: SQLSTATE classes that say what a database error means for a retry. */
const fromSqlState = (code: string, message: string) => {
  if (
    code.startsWith("08") || code.startsWith("53") ||
    ["57P01", "57P02", "57P03", "40001", "40P01", "55P03"].includes(code) ||
    /^E[A-Z]+$/.test(code) // a Node system error on the connection: ECONNREFUSED, ECONNRESET, ...
  ) {
    return new Errors.DatabaseTransient({ sqlState: code, message })
  }
  if (code === "57014") return new Errors.StepTimeout({ step: "", timeoutMs: 0 })
  if (code.startsWith("22") || code.startsWith("23")) return new Errors.DatabaseRejected({ sqlState: code, message })
  if (code === "25P02") return new Errors.TransactionAborted({ message })
  return undefined
}
