/**
 * @chunkwise/adapters-redis: the chunkwise `QueueAdapter` on Redis Streams with consumer groups.
 *
 * @since 0.1.0
 */
export * as RedisQueue from "./RedisQueue.js"
