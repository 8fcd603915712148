/**
 * @chunkwise/adapters-redis (being built).
 *
 * @since 0.1.0
 */
export {}
