/**
 * @chunkwise/adapters-sqs (being built).
 *
 * @since 0.1.0
 */
export {}
