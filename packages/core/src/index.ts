/**
 * chunkwise: idempotent chunked batch jobs on Effect.
 *
 * @since 0.1.0
 */
export * as Errors from "./Errors.js"
export * as Job from "./Job.js"
export * as JobDefinition from "./JobDefinition.js"
export * as MemoryDatabase from "./MemoryDatabase.js"
export * as Message from "./Message.js"
export * as Metrics from "./Metrics.js"
export * as PgQueue from "./PgQueue.js"
export * as PgResourceLimiter from "./PgResourceLimiter.js"
export * as PgStateStore from "./PgStateStore.js"
export * as Probe from "./Probe.js"
export * as Quarantine from "./Quarantine.js"
export * as QueueAdapter from "./QueueAdapter.js"
export * as Replica from "./Replica.js"
export * as ResourceLimiter from "./ResourceLimiter.js"
export * as RetryPolicy from "./RetryPolicy.js"
export * as Runbook from "./Runbook.js"
export * as Runner from "./Runner.js"
export * as StateStore from "./StateStore.js"
export * as Step from "./Step.js"
export * as Worker from "./Worker.js"
