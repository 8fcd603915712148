/**
 * Test fixtures: the real Redis at 127.0.0.1:6379. Each test file takes a key prefix of its own and
 * deletes every key under it afterwards; a missing Redis fails the tests (never skips them).
 */
import { Redacted } from "effect"
import { Redis } from "ioredis"

export const url = Redacted.make("redis://127.0.0.1:6379")

/** A key prefix no other test file (or run) shares. */
export const uniquePrefix = (file: string) => `cwtest:${file}:${process.pid}:${Date.now().toString(36)}:`

/** A plain client for the test's own checks; quit it when done. */
export const admin = () => new Redis(Redacted.value(url), { lazyConnect: true, maxRetriesPerRequest: 1 })

/** Deletes every key under `prefix` through `client` (the benchmark cleans up with it too). */
export const deleteKeys = async (client: Redis, prefix: string) => {
  let cursor = "0"
  do {
    const [next, found] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
    cursor = next
    if (found.length > 0) await client.del(...found)
  } while (cursor !== "0")
}

/** Deletes every key under `prefix`. */
export const cleanUp = async (prefix: string) => {
  const client = admin()
  try {
    await client.connect()
    await deleteKeys(client, prefix)
  } finally {
    client.disconnect()
  }
}
