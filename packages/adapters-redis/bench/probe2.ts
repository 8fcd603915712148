import { Effect, Redacted } from "effect"
import { RedisQueue } from "../src/index.js"
const main = Effect.gen(function*() {
  const q = yield* RedisQueue.make({
    url: Redacted.make("redis://127.0.0.1:6379"),
    prefix: "cwprobe:",
    queue: `q${Date.now()}`
  })
  yield* q.send(Array.from({ length: 20000 }, (_, i) => ({ body: `{"n":${i}}` })))
  for (const max of [1, 16, 64]) {
    let t = 0
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now()
      const got = yield* q.receive({ max, visibilityMs: 60000, waitMs: 1000 })
      t += performance.now() - t0
      const t1 = performance.now()
      yield* q.ack(got.map((d) => d.receipt))
      if (i === 199) console.log("ack", max, performance.now() - t1)
    }
    console.log("receive", max, t / 200)
  }
}).pipe(Effect.scoped)
Effect.runPromise(main)
