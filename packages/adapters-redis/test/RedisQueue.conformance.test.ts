import { RedisQueue } from "@chunkwise/adapters-redis"
import { QueueAdapterConformance } from "@chunkwise/testing"
import { afterAll } from "vitest"
import { cleanUp, uniquePrefix, url } from "./redis.js"

// Real Redis at 127.0.0.1:6379: one key prefix for this file, one queue name per test.
const prefix = uniquePrefix("conformance")
let n = 0

afterAll(() => cleanUp(prefix))

QueueAdapterConformance.suite("RedisQueue", {
  make: ({ maxReceives }) => RedisQueue.layer({ url, prefix, queue: `q${n++}`, maxReceives }),
  time: "live",
  visibilityMs: 400,
  maxMessageBytes: RedisQueue.defaults.maxMessageBytes
})
