import { Effect, Redacted } from "effect"
import { Redis } from "ioredis"
import { RedisQueue } from "../src/index.js"
const admin = new Redis("redis://127.0.0.1:6379")
const stat = async () =>
  (await admin.info("commandstats")).split("\n").filter((l) => l.startsWith("cmdstat_evalsha"))[0]
const main = Effect.gen(function*() {
  const q = yield* RedisQueue.make({
    url: Redacted.make("redis://127.0.0.1:6379"),
    prefix: "cwprobe:",
    queue: `q${Date.now()}`
  })
  yield* q.send(Array.from({ length: 2000 }, (_, i) => ({ body: `{"n":${i}}` })))
  const all = []
  yield* Effect.promise(() => admin.config("RESETSTAT"))
  const t0 = performance.now()
  for (let i = 0; i < 500; i++) all.push(...(yield* q.receive({ max: 1, visibilityMs: 60000, waitMs: 1000 })))
  console.log("receive wall", (performance.now() - t0) / 500, yield* Effect.promise(stat))
  yield* Effect.promise(() => admin.config("RESETSTAT"))
  const t1 = performance.now()
  for (const d of all) yield* q.ack([d.receipt])
  console.log("ack wall", (performance.now() - t1) / 500, yield* Effect.promise(stat))
}).pipe(Effect.scoped)
Effect.runPromise(main).then(() => admin.disconnect())
