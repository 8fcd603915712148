/**
 * One SQS call: sent with an abort signal and a request timeout, retried with backoff while the failure
 * is transient (throttling, 5xx, network), then translated into chunkwise's errors.
 *
 * The SDK's own retries are off (`maxAttempts: 1`): a retry here re-runs the whole effect, so a call
 * built from receipts re-checks them before each attempt (a stale receipt must never reach SQS late).
 */
import { Errors } from "@chunkwise/core"
import { Duration, Effect } from "effect"

/** A failed SQS call, classified. */
export interface AwsFailure {
  readonly _tag: "AwsFailure"
  /** The vendor code (`RequestThrottled`, `QueueDoesNotExist`, `ECONNRESET`, ...). */
  readonly code: string
  readonly status: number | undefined
  readonly message: string
  /** Throttling, a server fault or a network error: worth another attempt. */
  readonly transient: boolean
  readonly throttled: boolean
  readonly cause: unknown
}

// The SDK's own lists (@smithy/service-error-classification), plus the SQS query-protocol spellings.
const THROTTLING = new Set([
  "ThrottlingException",
  "Throttling",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "TooManyRequestsException",
  "ProvisionedThroughputExceededException",
  "TransactionInProgressException",
  "RequestLimitExceeded",
  "BandwidthLimitExceeded",
  "LimitExceededException",
  "SlowDown",
  "PriorRequestNotComplete",
  "EC2ThrottledException",
  "KmsThrottled",
  "KMS.ThrottlingException"
])
const TRANSIENT_CODES = new Set([
  "InternalError",
  "InternalFailure",
  "ServiceUnavailable",
  "RequestTimeout",
  "RequestTimeoutException",
  "TimeoutError",
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND"
])

/** `AWS.SimpleQueueService.NonExistentQueue` and `com.amazonaws.sqs#QueueDoesNotExist` name one error. */
const bareCode = (code: string): string => code.replace(/^.*[#]/, "").replace(/^AWS\.SimpleQueueService\./, "")

/** Classifies anything an SDK call rejected with. */
export const classify = (error: unknown): AwsFailure => {
  const e = (typeof error === "object" && error !== null ? error : {}) as {
    readonly name?: unknown
    readonly code?: unknown
    readonly Code?: unknown
    readonly message?: unknown
    readonly $fault?: unknown
    readonly $metadata?: { readonly httpStatusCode?: unknown }
    readonly $retryable?: { readonly throttling?: unknown }
  }
  const status = typeof e.$metadata?.httpStatusCode === "number" ? e.$metadata.httpStatusCode : undefined
  // Network errors carry a Node `code`; service errors a `name` (and `Code` in the query-compatible form).
  const raw = typeof e.code === "string"
    ? e.code
    : typeof e.Code === "string"
    ? e.Code
    : typeof e.name === "string" && e.name !== "Error"
    ? e.name
    : status !== undefined
    ? `HTTP${status}`
    : "Unknown"
  const code = bareCode(raw)
  const message = typeof e.message === "string" && e.message !== "" ? e.message : String(error)
  const throttled = THROTTLING.has(code) || status === 429 || e.$retryable?.throttling === true
  const serverFault = e.$fault === "server" || (status !== undefined && status >= 500)
  const network = status === undefined && (TRANSIENT_CODES.has(code) || /socket hang up|ECONNRESET/i.test(message))
  return {
    _tag: "AwsFailure",
    code,
    status,
    message,
    transient: throttled || serverFault || network || TRANSIENT_CODES.has(code),
    throttled,
    cause: error
  }
}

/** How a transient failure is retried. */
export interface RetryOptions {
  /** Attempts after the first (default 6). */
  readonly times: number
  /** The first backoff's ceiling (default 50 ms); doubles per attempt up to `max`; each wait is random below it. */
  readonly base: Duration.DurationInput
  /** The longest single backoff (default 2 s). */
  readonly max: Duration.DurationInput
}

export const defaultRetry: RetryOptions = { times: 6, base: "50 millis", max: "2 seconds" }

/** Describes a failure for a person: the vendor code, the status and the attempts. */
export const describe = (failure: AwsFailure, attempts: number): string =>
  `${failure.code}${failure.status === undefined ? "" : ` (HTTP ${failure.status})`}` +
  `${attempts > 1 ? ` after ${attempts} attempts` : ""}: ${failure.message}`

const isAwsFailure = (error: unknown): error is AwsFailure =>
  typeof error === "object" && error !== null && (error as { readonly _tag?: unknown })._tag === "AwsFailure"

/**
 * Runs `attempt` (a fresh effect per try), retrying transient failures; a final `AwsFailure` becomes
 * a `QueueUnavailable` naming the operation, the queue and the vendor code. Other errors pass through.
 */
export const retrying = <A, E = never>(
  operation: string,
  queue: string,
  retry: RetryOptions,
  attempt: Effect.Effect<A, AwsFailure | E>
): Effect.Effect<A, Errors.QueueUnavailable | Exclude<E, AwsFailure>> => {
  // A plain loop rather than Effect.retry: this runs for every SQS call, and the first try almost
  // always succeeds, so the success path must cost nothing beyond the call itself.
  const base = Duration.toMillis(retry.base)
  const max = Duration.toMillis(retry.max)
  const after = (tries: number): Effect.Effect<A, Errors.QueueUnavailable | Exclude<E, AwsFailure>> =>
    Effect.catchAll(attempt, (error) => {
      if (!isAwsFailure(error)) return Effect.fail(error as Exclude<E, AwsFailure>)
      if (error.transient && tries <= retry.times) {
        // Full jitter on an exponential backoff, as the AWS SDKs do.
        const backoff = Math.random() * Math.min(max, base * 2 ** (tries - 1))
        return Effect.zipRight(Effect.sleep(backoff), after(tries + 1))
      }
      return Effect.fail(
        new Errors.QueueUnavailable({
          operation,
          message: `SQS ${operation} on ${queue} failed: ${describe(error, tries)}`,
          cause: error.cause
        })
      )
    })
  return after(1)
}

/** A batch call's failed entries that are worth another attempt, as one transient failure. */
export const partialFailure = (
  entries: ReadonlyArray<{ readonly Code?: string | undefined; readonly Message?: string | undefined }>,
  of: number
): AwsFailure => ({
  _tag: "AwsFailure",
  code: [...new Set(entries.map((e) => e.Code ?? "Unknown"))].join(","),
  status: undefined,
  message: `${entries.length} of ${of} entries failed on the server side (${entries[0]?.Message ?? "no message"})`,
  transient: true,
  throttled: false,
  cause: entries
})

/** Sends one SDK request as an interruptible effect; a rejection is classified. */
export const request = <A>(
  send: (options: { readonly abortSignal: AbortSignal; readonly requestTimeout: number }) => Promise<A>,
  requestTimeoutMs: number
): Effect.Effect<A, AwsFailure> =>
  Effect.tryPromise({
    try: (abortSignal) => send({ abortSignal, requestTimeout: requestTimeoutMs }),
    catch: classify
  })
