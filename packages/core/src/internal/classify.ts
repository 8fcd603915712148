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
