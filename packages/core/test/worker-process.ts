/**
 * A worker process for the multi-process tests: the Postgres store and queue, the pg test job, until
 * SIGTERM (graceful drain) or SIGKILL. Configured by CW_STORE, CW_APP, CW_WORKER (or CHUNKWISE_WORKER_ID),
 * CW_PARTITIONS, CW_SIZE, and CW_SPLIT (split each partition into this many ranges, with a summary step).
 */
import { Effect, Fiber, Layer, Logger, LogLevel } from "effect"
import { PgQueue, PgStateStore, Worker } from "../src/index.js"
import { liveWorker, pgClient, pgJob } from "./pg.js"

const store = process.env["CW_STORE"]!
const app = process.env["CW_APP"]!
const job = pgJob(app, {
  partitions: Number(process.env["CW_PARTITIONS"] ?? 12),
  size: Number(process.env["CW_SIZE"] ?? 20),
  chunkSize: 2,
  chunkDelay: 20,
  summarise: process.env["CW_SPLIT"] !== undefined,
  split: process.env["CW_SPLIT"] === undefined ? undefined : Number(process.env["CW_SPLIT"])
})

const main = Layer.launch(
  Worker.layer({ jobs: [job], ...liveWorker, workerId: process.env["CHUNKWISE_WORKER_ID"] ?? process.env["CW_WORKER"] })
).pipe(
  Effect.provide(Layer.mergeAll(PgStateStore.layer({ schema: store }), PgQueue.layer({ schema: store }))),
  Effect.provide(pgClient()),
  Logger.withMinimumLogLevel(LogLevel.Warning)
)

const fiber = Effect.runFork(main)
process.on("SIGTERM", () => {
  Effect.runPromise(Fiber.interrupt(fiber)).then(() => process.exit(0))
})
console.log("ready")
