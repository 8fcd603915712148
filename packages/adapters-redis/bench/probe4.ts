import { Effect } from "effect"
import { Redis } from "ioredis"
const c = new Redis("redis://127.0.0.1:6379")
const main = async () => {
  for (let round = 0; round < 3; round++) {
    let t0 = performance.now()
    for (let i = 0; i < 500; i++) await c.ping()
    console.log("ping", (performance.now() - t0) / 500)
    t0 = performance.now()
    for (let i = 0; i < 500; i++) await Effect.runPromise(Effect.tryPromise(() => c.ping()))
    console.log("effect ping (runPromise each)", (performance.now() - t0) / 500)
    t0 = performance.now()
    await Effect.runPromise(Effect.gen(function*() {
      for (let i = 0; i < 500; i++) yield* Effect.tryPromise(() => c.ping())
    }))
    console.log("effect ping in one fiber", (performance.now() - t0) / 500)
  }
  c.disconnect()
}
main()
