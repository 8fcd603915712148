/**
 * @chunkwise/testing: conformance suites for chunkwise's ports, and (next) the fault-injection
 * harness that proves a job idempotent under crashes.
 *
 * @since 0.1.0
 */
export * as QueueAdapterConformance from "./QueueAdapterConformance.js"
