/**
 * @chunkwise/adapters-redis: the chunkwise `QueueAdapter` on Redis Streams with consumer groups, and
 * the resource limiter (per-resource rates and in-flight caps) on Redis.
 *
 * @since 0.1.0
 */
export * as RedisQueue from "./RedisQueue.js"
export * as RedisResourceLimiter from "./RedisResourceLimiter.js"
