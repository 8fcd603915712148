import { Redis } from "ioredis"
const c = new Redis("redis://127.0.0.1:6379")
const main = async () => {
  for (let round = 0; round < 3; round++) {
    let t0 = performance.now()
    for (let i = 0; i < 500; i++) await c.ping()
    console.log("ping", (performance.now() - t0) / 500)
    t0 = performance.now()
    for (let i = 0; i < 500; i++) await c.eval("return redis.call('TIME')", 0)
    console.log("eval", (performance.now() - t0) / 500)
  }
  c.disconnect()
}
main()
