import { QueueAdapter } from "@chunkwise/core"
import { QueueAdapterConformance } from "../src/index.js"

QueueAdapterConformance.suite("QueueAdapter.layerMemory", {
  make: ({ maxReceives }) => QueueAdapter.layerMemory({ maxReceives }),
  time: "test-clock",
  maxMessageBytes: 262_144
})
