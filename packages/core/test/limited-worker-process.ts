/**
 * A worker process for the two-process limit test: the Postgres store, queue and (observed) limiter,
 * the limited job with its default limits, until SIGTERM (graceful drain) or SIGKILL. Configured by
 * CW_STORE, CW_APP, CW_WORKER, CW_PARTITIONS, CW_CHUNKS, CW_DELAY_MS, CW_IN_FLIGHT, CW_RATE, CW_BURST.
 */
import { Effect, Fiber, Layer } from "effect"
import { Worker } from "../src/index.js"
import { limitedJob, workerStack } from "./limitsFixtures.js"
import { liveWorker } from "./pg.js"

const env = (name: string) => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`limited-worker-process: set ${name}`)
  return value
}
const store = env("CW_STORE")
const app = env("CW_APP")
const job = limitedJob(app, {
  partitions: Number(env("CW_PARTITIONS")),
  chunks: Number(env("CW_CHUNKS")),
  delayMs: Number(env("CW_DELAY_MS"))
})

const main = Layer.launch(
  Worker.layer({
    jobs: [job],
    ...liveWorker,
    workerId: env("CW_WORKER"),
    limits: {
      "primary-db": {
        inFlight: Number(env("CW_IN_FLIGHT")),
        chunksPerSecond: Number(env("CW_RATE")),
        burst: Number(env("CW_BURST"))
      }
    }
  })
).pipe(Effect.provide(workerStack(store, app, env("CW_WORKER"))))

const fiber = Effect.runFork(main)
process.on("SIGTERM", () => {
  Effect.runPromise(Fiber.interrupt(fiber)).then(() => process.exit(0))
})
console.log("ready")
