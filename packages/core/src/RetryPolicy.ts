/**
 * Retry policies are data, not bare `Schedule`s, so they can be stored, rendered in runbooks and shown
 * to operators (DESIGN D12). A policy says how many further attempts a failure class gets and how long
 * to wait before each.
 *
 * @since 0.1.0
 */
import { Duration, Schema } from "effect"

/** Never retry: the unit fails and waits for an operator. The default for business errors. */
export const Never = Schema.TaggedStruct("Never", {})

/** Exponential backoff, bounded by `times` further attempts and `maxMs` per wait. */
export const Exponential = Schema.TaggedStruct("Exponential", {
  baseMs: Schema.Number,
  factor: Schema.Number,
  maxMs: Schema.Number,
  times: Schema.Number,
  jitter: Schema.Boolean
})

/** A retry policy: `never`, or bounded exponential backoff. */
export const RetryPolicy = Schema.Union(Never, Exponential)

/** @since 0.1.0 */
export type RetryPolicy = typeof RetryPolicy.Type

/** Never retry. */
export const never: RetryPolicy = Never.make({})

/**
 * Bounded exponential backoff: the n-th retry waits `base * factor^(n-1)`, capped at `max`, with up to
 * ±25 % jitter when `jitter` is on (the default). `times` is the number of retries after the first
 * attempt.
 */
export const exponential = (options: {
  readonly base: Duration.DurationInput
  readonly factor?: number | undefined
  readonly max?: Duration.DurationInput | undefined
  readonly times: number
  readonly jitter?: boolean | undefined
}): RetryPolicy => {
  const baseMs = Duration.toMillis(options.base)
  const factor = options.factor ?? 2
  const maxMs = options.max === undefined ? baseMs * 32 : Duration.toMillis(options.max)
  if (!(baseMs >= 0) || !(factor >= 1) || !(maxMs >= baseMs)) {
    throw new TypeError(
      `RetryPolicy.exponential: base must be >= 0, factor >= 1 and max >= base (got base ${baseMs} ms, ` +
        `factor ${factor}, max ${maxMs} ms)`
    )
  }
  if (!Number.isInteger(options.times) || options.times < 0 || options.times > 100) {
    throw new TypeError(`RetryPolicy.exponential: times must be an integer from 0 to 100 (got ${options.times})`)
  }
  return Exponential.make({ baseMs, factor, maxMs, times: options.times, jitter: options.jitter ?? true })
}

/** The default for infrastructure errors (lost connections, queue timeouts): 5 retries from 1 s to 30 s. */
export const infrastructure: RetryPolicy = exponential({ base: "1 second", factor: 2, max: "30 seconds", times: 5 })

/**
 * The wait before the retry that follows failed attempt number `attempt` (1-based), or `undefined` when
 * the policy allows no further attempt. `random` is a number in [0, 1) used for jitter.
 */
export const delayAfter = (policy: RetryPolicy, attempt: number, random: number): number | undefined => {
  if (policy._tag === "Never" || attempt > policy.times) return undefined
  const raw = Math.min(policy.maxMs, policy.baseMs * Math.pow(policy.factor, attempt - 1))
  return Math.round(policy.jitter ? raw * (0.75 + random * 0.5) : raw)
}

/** A one-line description for runbooks and status output. */
export const describe = (policy: RetryPolicy): string =>
  policy._tag === "Never"
    ? "never retried automatically"
    : `retried up to ${policy.times} times, waiting ${policy.baseMs} ms × ${policy.factor}^n (at most ` +
      `${policy.maxMs} ms${policy.jitter ? ", with jitter" : ""})`
