import { CreateQueueCommand } from "@aws-sdk/client-sqs"
import { SqsQueue } from "@chunkwise/adapters-sqs"
import { QueueAdapter } from "@chunkwise/core"
import { describe, expect, it } from "@effect/vitest"
import { Config, ConfigProvider, Effect, Layer, Redacted } from "effect"
import { afterAll, beforeAll } from "vitest"
import * as Emulator from "./emulator.js"

let emulator: Emulator.Emulator
beforeAll(async () => {
  emulator = await Emulator.start()
})
afterAll(() => emulator.stop())

/** Builds the layer and returns the error it fails with. */
const failure = <E>(layer: Layer.Layer<QueueAdapter.QueueAdapter, E>) => Effect.flip(Effect.scoped(Layer.build(layer)))

const env = (entries: Record<string, string>) => ConfigProvider.fromMap(new Map(Object.entries(entries)))

describe("SqsQueue configuration", () => {
  it.live("a queue that is neither a URL nor a name is refused, naming the setting and the fix", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), queue: "billing queue!" })
      )
      expect(error._tag).toBe("ConfigurationError")
      expect(error.message).toMatch(/queue "billing queue!" is neither a URL nor a queue name/)
      expect(error.message).toMatch(/CHUNKWISE_SQS_QUEUE_URL/)
      const notSqs = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), queue: "https://example.com/billing" })
      )
      expect(notSqs.message).toMatch(/is not an SQS queue URL \(http\(s\):\/\/host\/<account>\/<name>\)/)
    }))

  it.live("an endpoint that is not an http(s) URL is refused", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), endpoint: "127.0.0.1:4566", queue: "q" })
      )
      expect(error.message).toMatch(/endpoint "127.0.0.1:4566" is not an http\(s\) URL.*AWS_ENDPOINT_URL_SQS/)
    }))

  it.live("a socket cap or a request timeout that could only hang or fail every request is refused", () =>
    Effect.gen(function*() {
      const connection = { ...Emulator.connection(emulator.endpoint), queue: "q" }
      // maxSockets -1 made every request wait for a socket forever, with no error.
      expect((yield* failure(SqsQueue.layer({ ...connection, maxSockets: -1 }))).message).toMatch(
        /SqsQueue: maxSockets must be an integer from 1 to 10000 \(got -1\)/
      )
      expect((yield* failure(SqsQueue.layer({ ...connection, requestTimeout: 0 }))).message).toMatch(
        /SqsQueue: requestTimeout must be a positive duration/
      )
    }))

  it.live("no region anywhere is refused, naming AWS_REGION", () =>
    Effect.gen(function*() {
      const saved = { region: process.env["AWS_REGION"], fallback: process.env["AWS_DEFAULT_REGION"] }
      delete process.env["AWS_REGION"]
      delete process.env["AWS_DEFAULT_REGION"]
      const error = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), region: undefined, queue: "q" })
      ).pipe(Effect.ensuring(Effect.sync(() => {
        if (saved.region !== undefined) process.env["AWS_REGION"] = saved.region
        if (saved.fallback !== undefined) process.env["AWS_DEFAULT_REGION"] = saved.fallback
      })))
      expect(error.message).toMatch(/no AWS region\. Set region \(AWS_REGION\)/)
    }))

  it.live("a queue that does not exist is a configuration error that says how to create it", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), queue: Emulator.freshName("missing") })
      )
      expect(error._tag).toBe("ConfigurationError")
      expect(error.message).toMatch(/does not exist \((QueueDoesNotExist|NonExistentQueue)\)/)
      expect(error.message).toMatch(/ensureQueue/)
    }))

  it.live("a queue without a RedrivePolicy is refused: dead-lettering would have nowhere to go", () =>
    Effect.gen(function*() {
      const name = Emulator.freshName("no-dlq")
      const client = yield* SqsQueue.makeClient(Emulator.connection(emulator.endpoint))
      const { QueueUrl } = yield* Effect.promise(() => client.send(new CreateQueueCommand({ QueueName: name })))
      const error = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(emulator.endpoint), queue: QueueUrl! })
      )
      expect(error.message).toMatch(/has no RedrivePolicy/)
    }).pipe(Effect.scoped))

  it.live("maxReceives that differs from the queue's maxReceiveCount is refused; ensureQueue is idempotent", () =>
    Effect.gen(function*() {
      const name = Emulator.freshName("receives")
      const connection = Emulator.connection(emulator.endpoint)
      yield* Effect.scoped(
        Layer.build(SqsQueue.layer({ ...connection, queue: name, ensureQueue: true, maxReceives: 7 }))
      )
      // Again, with the same policy: no error.
      yield* Effect.scoped(
        Layer.build(SqsQueue.layer({ ...connection, queue: name, ensureQueue: true, maxReceives: 7 }))
      )
      const error = yield* failure(SqsQueue.layer({ ...connection, queue: name, maxReceives: 50 }))
      expect(error.message).toMatch(/maxReceives is 50 but the RedrivePolicy of .* has maxReceiveCount 7/)
    }))

  it.live("maxMessageBytes above the queue's MaximumMessageSize is refused", () =>
    Effect.gen(function*() {
      const error = yield* failure(
        SqsQueue.layer({
          ...Emulator.connection(emulator.endpoint),
          queue: Emulator.freshName("size"),
          ensureQueue: true,
          maxMessageBytes: 2_000_000
        })
      )
      expect(error.message).toMatch(/maxMessageBytes must be an integer from 1024 to the queue's MaximumMessageSize/)
    }))

  it.live("an endpoint nobody listens on is QueueUnavailable with the network code", () =>
    Effect.gen(function*() {
      // A port that was just free: bind, read it, close.
      const closed = yield* Effect.promise(async () => {
        const probe = await Emulator.start()
        await probe.stop()
        return probe.endpoint
      })
      const error = yield* failure(
        SqsQueue.layer({ ...Emulator.connection(closed), queue: "somewhere", retry: { times: 1, base: "10 millis" } })
      )
      expect(error._tag).toBe("QueueUnavailable")
      expect(error.message).toMatch(/ECONNREFUSED after 2 attempts/)
    }))

  it.live("layerConfig reads the environment; the secret key stays redacted", () =>
    Effect.gen(function*() {
      const name = Emulator.freshName("env")
      const provider = env({
        CHUNKWISE_SQS_QUEUE_URL: name,
        CHUNKWISE_SQS_ENSURE_QUEUE: "true",
        CHUNKWISE_SQS_MAX_RECEIVES: "9",
        AWS_REGION: "us-east-1",
        AWS_ENDPOINT_URL_SQS: emulator.endpoint,
        AWS_ACCESS_KEY_ID: "AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY: "wJalrXUtnFEMI-secret"
      })
      const options = yield* Effect.withConfigProvider(SqsQueue.config, provider)
      expect(options).toMatchObject({ queue: name, region: "us-east-1", maxReceives: 9, ensureQueue: true })
      expect(Redacted.isRedacted(options.credentials?.secretAccessKey)).toBe(true)
      expect(`${String(options.credentials?.secretAccessKey)} ${JSON.stringify(options)}`).not.toMatch(/wJalr/)

      const bodies = yield* Effect.gen(function*() {
        const queue = yield* QueueAdapter.QueueAdapter
        yield* queue.send([{ body: "from env" }])
        const got = yield* queue.receive({ max: 1, visibilityMs: 5000, waitMs: 2000 })
        yield* queue.ack(got.map((d) => d.receipt))
        return got.map((d) => d.body)
      }).pipe(Effect.provide(SqsQueue.layerConfig()), Effect.withConfigProvider(provider))
      expect(bodies).toEqual(["from env"])
    }))

  it.live("layerConfig says which variable is missing", () =>
    Effect.gen(function*() {
      const noQueue = yield* Effect.flip(
        Effect.withConfigProvider(Config.unwrap(SqsQueue.config), env({ AWS_REGION: "eu-west-1" }))
      )
      expect(String(noQueue)).toMatch(/CHUNKWISE_SQS_QUEUE_URL/)
      const halfCredentials = yield* Effect.flip(
        Effect.withConfigProvider(
          SqsQueue.config,
          env({ CHUNKWISE_SQS_QUEUE_URL: "q", AWS_ACCESS_KEY_ID: "AKIDEXAMPLE" })
        )
      )
      expect(String(halfCredentials)).toMatch(/AWS_SECRET_ACCESS_KEY is not set while its pair is/)
    }))
})
