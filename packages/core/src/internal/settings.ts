/**
 * Checks of option values that name the option and the fix: durations (a typo such as "10 secs" must
 * not surface later as a bare "Invalid DurationInput") and counts.
 */
import { Duration, Option } from "effect"

/**
 * `input` in milliseconds, or the reason it is not a duration of at least `minMs` (default: more than
 * zero), naming `name`. `undefined` takes `fallback`.
 */
export const durationMs = (
  name: string,
  input: unknown,
  fallback: Duration.DurationInput,
  minMs?: number
): { readonly ms: number } | { readonly problem: string } => {
  // Effect reads a negative or NaN duration as zero: refuse it here, where its sign is still visible.
  const negative = (typeof input === "number" && !(input >= 0)) || (typeof input === "string" && /^\s*-/.test(input))
  const decoded = negative ? Option.none() : Duration.decodeUnknown(input ?? fallback)
  if (Option.isNone(decoded)) {
    return {
      problem: `${name} must be ${negative ? "a positive" : "a"} duration such as "30 seconds", "500 millis" or a ` +
        `number of milliseconds (got ${shown(input)})`
    }
  }
  const ms = Duration.toMillis(decoded.value)
  if (Number.isNaN(ms) || (minMs === undefined ? ms <= 0 : ms < minMs)) {
    return {
      problem: `${name} must be ${minMs === undefined ? "a positive duration" : `at least ${minMs} ms`} (got ${
        Duration.format(decoded.value)
      })`
    }
  }
  return { ms }
}

/** The reason `value` is not a positive integer, naming `name`; `undefined` when it is (or absent). */
export const positiveIntProblem = (name: string, value: unknown): string | undefined =>
  value === undefined || (typeof value === "number" && Number.isInteger(value) && value >= 1)
    ? undefined
    : `${name} must be a positive integer (got ${shown(value)})`

/** A value as the user wrote it (strings quoted; bigints and others as text). */
const shown = (value: unknown): string => typeof value === "string" ? JSON.stringify(value) : String(value)
