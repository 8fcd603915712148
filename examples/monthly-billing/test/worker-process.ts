/**
 * A billing worker process for the chaos test: the settings from the environment (DATABASE_URL,
 * BILLING_SCHEMA, CHUNKWISE_SCHEMA, CHUNKWISE_QUEUE, BILLING_CHUNK_SIZE), short leases, until SIGTERM
 * (graceful drain) or SIGKILL. Prints "ready" once its SIGTERM handler is installed.
 */
import { Worker } from "@chunkwise/core"
import { Effect, Fiber, Layer, Logger, LogLevel } from "effect"
import * as Environment from "../src/Environment.js"

const settings = Effect.runSync(Environment.load)
const db = Environment.database(settings)

const main = Layer.launch(
  Worker.layer({
    jobs: [Environment.job(settings)],
    workerId: process.env["CHUNKWISE_WORKER_ID"],
    leaseDuration: "2 seconds",
    pollInterval: "20 millis",
    feedInterval: "50 millis",
    sweepInterval: "500 millis",
    shutdownTimeout: "3 seconds"
  })
).pipe(
  Effect.provide(Layer.mergeAll(Environment.store(settings), Environment.queue(settings))),
  Effect.provide(db),
  Logger.withMinimumLogLevel(LogLevel.Error)
)

const fiber = Effect.runFork(main)
process.on("SIGTERM", () => {
  Effect.runPromise(Fiber.interrupt(fiber)).then(() => process.exit(0))
})
console.log("ready")
