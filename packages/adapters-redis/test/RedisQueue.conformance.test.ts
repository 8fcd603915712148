import { RedisQueue } from "@chunkwise/adapters-redis"
import { QueueAdapterConformance } from "@chunkwise/testing"
import { afterAll } from "vitest"
import { cleanUp, uniquePrefix, url } from "./redis.js"

// Real Redis at 127.0.0.1:6379: one key prefix for this file, the suite's queue names.
const prefix = uniquePrefix("conformance")

afterAll(() => cleanUp(prefix))

QueueAdapterConformance.suite("RedisQueue", {
  make: ({ maxReceives, queue }) => RedisQueue.layer({ url, prefix, queue, maxReceives }),
  time: "live",
  sharedBetweenInstances: true,
  visibilityMs: 400,
  maxMessageBytes: RedisQueue.defaults.maxMessageBytes
})
