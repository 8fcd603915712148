/**
 * The fauxqs SQS emulator, started in-process on a free loopback port (never 0.0.0.0: `startFauxqs`
 * binds every interface, so tests use `buildApp` and listen on 127.0.0.1 themselves).
 */
import { Redacted } from "effect"
import { buildApp } from "fauxqs"
import type { AddressInfo } from "node:net"
import type { SqsQueue } from "../src/index.js"

// The SDK warns once per process that its 2027 releases need Node 22; it says nothing about these tests.
process.env["AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED"] = "true"

/** A running emulator. */
export interface Emulator {
  readonly endpoint: string
  readonly port: number
  readonly stop: () => Promise<void>
}

export const start = async (): Promise<Emulator> => {
  const app = buildApp({ logger: false })
  await app.listen({ port: 0, host: "127.0.0.1" })
  const port = (app.server.address() as AddressInfo).port
  return { endpoint: `http://127.0.0.1:${port}`, port, stop: () => app.close() }
}

/** Connection options for a test: the emulator accepts any credentials. */
export const connection = (endpoint: string): SqsQueue.ConnectionOptions => ({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: Redacted.make("test-secret") }
})

let counter = 0
/** A queue name no other test uses. */
export const freshName = (prefix: string): string => `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter++}`
