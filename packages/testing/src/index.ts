/**
 * @chunkwise/testing: prove a chunkwise job idempotent before it runs in production. The harness runs a
 * job under simulated failures (crashes at every point of a chunk's life, zombies, duplicated and
 * reordered deliveries, broker and store errors) and compares its final state with a fault-free run;
 * the conformance suites hold every queue and store driver to one contract.
 *
 * @since 0.1.0
 */
export * as Chaos from "./Chaos.js"
export * as Engine from "./Engine.js"
export * as Fault from "./Fault.js"
export * as Guarantees from "./Guarantees.js"
export * as Harness from "./Harness.js"
export * as QueueAdapterConformance from "./QueueAdapterConformance.js"
export * as ResourceLimiterConformance from "./ResourceLimiterConformance.js"
export * as StateStoreConformance from "./StateStoreConformance.js"
