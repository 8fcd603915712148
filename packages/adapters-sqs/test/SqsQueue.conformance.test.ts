import { SqsQueue } from "@chunkwise/adapters-sqs"
import { QueueAdapterConformance } from "@chunkwise/testing"
import { Layer } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Emulator from "./emulator.js"

// One fauxqs per file on a loopback port; the suite's queue names (and a dead-letter queue each).
let emulator: Emulator.Emulator
beforeAll(async () => {
  emulator = await Emulator.start()
})
afterAll(() => emulator.stop())

QueueAdapterConformance.suite("SqsQueue", {
  make: ({ maxReceives, queue }) =>
    Layer.suspend(() =>
      SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), queue, ensureQueue: true, maxReceives })
    ),
  time: "live",
  sharedBetweenInstances: true,
  // SQS visibility is whole seconds; the adapter rounds up.
  visibilityMs: 1000,
  maxMessageBytes: 262_144,
  reportsOldestReadyAge: false
})
