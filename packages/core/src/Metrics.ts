/**
 * The metrics chunkwise records, as Effect `Metric`s. Export them with any Effect metrics exporter
 * (e.g. `@effect/opentelemetry`). Tags: `job`, `step`, `error_tag`.
 *
 * @since 0.1.0
 */
import { Metric, MetricBoundaries } from "effect"

/** Chunks committed (single steps count as one chunk). */
export const chunks = Metric.counter("chunkwise_chunks_total", { description: "Chunks committed", incremental: true })

/** Items handled by committed chunks. */
export const items = Metric.counter("chunkwise_items_total", {
  description: "Items handled by committed chunks",
  incremental: true
})

/** Items set aside (quarantined) by chunks and by re-runs, by job, step and error tag. */
export const itemsQuarantined = Metric.counter("chunkwise_items_quarantined_total", {
  description: "Items set aside into the quarantine",
  incremental: true
})

/** Failures, by error tag. */
export const failures = Metric.counter("chunkwise_failures_total", {
  description: "Step failures by error tag",
  incremental: true
})

/** Seconds from a unit's claim to its end (success, failure or release), per execution. */
export const unitDuration = Metric.histogram(
  "chunkwise_unit_duration_seconds",
  MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 16 }),
  "Seconds a worker spent on one unit execution"
)

/** Units this process is running now. */
export const inFlight = Metric.gauge("chunkwise_units_in_flight", { description: "Units this worker is running" })

/** Leases this process lost (expired, or fenced by an operator). */
export const leasesLost = Metric.counter("chunkwise_leases_lost_total", {
  description: "Leases lost",
  incremental: true
})

/** Messages this process dead-lettered, by reason tag. */
export const deadLettered = Metric.counter("chunkwise_dead_lettered_total", {
  description: "Messages dead-lettered",
  incremental: true
})

/** Messages released because of a definition mismatch (rolling deploy). */
export const definitionMismatches = Metric.counter("chunkwise_definition_mismatch_total", {
  description: "Messages released because the run's definition differs from this worker's",
  incremental: true
})

/**
 * Seconds from a partition's first claim (store clock) to its terminal end (success or failure), across
 * every execution and retry in between. Tags: `job`, `outcome` (`succeeded` | `failed`).
 */
export const partitionDuration = Metric.histogram(
  "chunkwise_partition_duration_seconds",
  MetricBoundaries.exponential({ start: 0.1, factor: 2, count: 20 }),
  "Seconds from a partition's first claim to its end"
)

/** Queue messages by state (`ready`, `in_flight`, `delayed`, `dead`), sampled by every worker on its sweep. */
export const queueMessages = Metric.gauge("chunkwise_queue_messages", {
  description: "Queue messages by state, sampled by the workers"
})

/** Age in seconds of the oldest ready queue message (0 when none, or when the broker cannot tell). */
export const queueOldestReadyAge = Metric.gauge("chunkwise_queue_oldest_ready_age_seconds", {
  description: "Age of the oldest message waiting to be received"
})

/**
 * Units in the store by state (`ready`, `delayed`, `running`, `expired_lease`) across active runs,
 * sampled on the sweep. `ready` is the autoscaling signal the feeder does not cap (D16); a non-zero
 * `expired_lease` means a worker died or stalled holding units (they are re-sent and resume).
 */
export const units = Metric.gauge("chunkwise_units", { description: "Units in the store by state, active runs" })

/**
 * Seconds units waited for a resource permit (`ResourceLimiter`), by `resource` and `kind` (`rate`: a
 * chunks-per-second limit; `in_flight`: a cap on chunks at once). Its rate over a minute is the average
 * number of units throttled by that resource; non-zero means the limit, not the workers, sets the pace.
 */
export const throttledSeconds = Metric.counter("chunkwise_throttled_seconds", {
  description: "Seconds waited for a resource permit, by resource and kind",
  incremental: true
})

/** Waits for a resource permit (a permit granted at once is not a wait), by `resource` and `kind`. */
export const throttledWaits = Metric.counter("chunkwise_throttled_waits_total", {
  description: "Waits for a resource permit, by resource and kind",
  incremental: true
})
