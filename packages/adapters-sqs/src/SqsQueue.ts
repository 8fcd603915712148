/**
 * The queue on Amazon SQS, standard or FIFO, on `@aws-sdk/client-sqs` v3. It keeps the
 * `QueueAdapter` contract (see that module in `@chunkwise/core`):
 *
 * - **send**: SendMessageBatch, 10 entries and at most `maxMessageBytes` per call; every body is checked
 *   (size, characters, FIFO group and deduplication ids) before anything is sent; failed entries of a
 *   batch are retried alone (server faults) or reported (`MessageRejected`, sender faults).
 * - **receive**: ReceiveMessage with long polling (`waitMs` rounded up to whole seconds, at most 20 per
 *   call) and up to 10 messages per call; a receive for more runs several calls at once. Visibility is
 *   whole seconds, rounded up, at most 12 h.
 * - **ack**: DeleteMessageBatch, coalescing the acks of concurrent handlers.
 * - **release / extend**: ChangeMessageVisibility(Batch), clamped to SQS's 12 h per delivery; a delivery
 *   extended 11.5 h after its receive is deleted instead (D11: the lease and the feeder carry on).
 * - **dead-lettering**: the queue's RedrivePolicy moves a message received more than `maxReceiveCount`
 *   times; `deadLetter` sends the message to the dead-letter queue with the reason as a message
 *   attribute, then deletes it. `deadLetters` and `redrive` read the dead-letter queue.
 * - **depth**: ApproximateNumberOf* of both queues (approximate and up to a minute stale on AWS;
 *   `oldestReadyAgeMs` is `null`: SQS reports it only as a CloudWatch metric).
 * - **receipts**: SQS may act on a stale receipt handle; this adapter never sends one (see
 *   `internal/receipts.ts`), so a stale ack, release or extend is a no-op.
 *
 * Outside it: FIFO's per-message delay (SQS has none: `send` with `delayMs` on a FIFO queue is rejected),
 * receipts across adapter instances (a receipt is valid on the instance that received it).
 *
 * @since 0.1.0
 */
import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  type MessageAttributeValue,
  type QueueAttributeName,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SendMessageBatchRequestEntry,
  SetQueueAttributesCommand,
  SQSClient
} from "@aws-sdk/client-sqs"
import { Errors, QueueAdapter } from "@chunkwise/core"
import { Config, ConfigError, Duration, Effect, Either, Fiber, Layer, Option, Redacted, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as http from "node:http"
import * as https from "node:https"
import {
  type AwsFailure,
  defaultRetry,
  describe,
  partialFailure,
  request,
  retrying,
  type RetryOptions
} from "./internal/aws.js"
import { bodyProblem, MAX_BATCH_ENTRIES, sizeOf, split, tens } from "./internal/batches.js"
import * as Coalesce from "./internal/coalesce.js"
import { type Held, marginFor, now, Receipts } from "./internal/receipts.js"

// ---- options

/** How throttled, 5xx and network failures are retried (`retry` option). */
export type { RetryOptions } from "./internal/aws.js"

/** Static AWS credentials. Without them the SDK's default chain applies (env, profile, SSO, container or instance role). */
export interface Credentials {
  readonly accessKeyId: string
  readonly secretAccessKey: Redacted.Redacted
  readonly sessionToken?: Redacted.Redacted | undefined
}

/** How to reach SQS. */
export interface ConnectionOptions {
  /** The AWS region (default: the SDK's chain, `AWS_REGION` or the profile; inferred from an AWS queue URL). */
  readonly region?: string | undefined
  /** A custom endpoint, e.g. `http://127.0.0.1:4566` for an emulator or a VPC endpoint. */
  readonly endpoint?: string | undefined
  readonly credentials?: Credentials | undefined
  /** Sockets per host in the keep-alive agent (default 50). */
  readonly maxSockets?: number | undefined
  /** Timeout of one request, on top of a receive's long-poll wait (default 10 s). */
  readonly requestTimeout?: Duration.DurationInput | undefined
}

/** Which queue, and how to use it. */
export interface QueueOptions {
  /** The queue's URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`) or its name. */
  readonly queue: string
  /**
   * The `maxReceiveCount` the queue's RedrivePolicy must have; start-up fails when it differs. Unset:
   * the queue's value is used as is. With `ensureQueue`, the value to create the queue with (default 50, D11).
   */
  readonly maxReceives?: number | undefined
  /**
   * Create the queue and its dead-letter queue `<name>-dlq` with the redrive policy when missing
   * (default false; for development and tests: production queues belong in infrastructure code).
   */
  readonly ensureQueue?: boolean | undefined
  /** Largest message in bytes, body plus attributes (default 262,144; at most the queue's MaximumMessageSize). */
  readonly maxMessageBytes?: number | undefined
  /** Retries of throttled, 5xx and network failures before `QueueUnavailable` (default 6, from 50 ms up to 2 s). */
  readonly retry?: Partial<RetryOptions> | undefined
  /** ReceiveMessage calls one receive may run at once, 10 messages each (default 4). */
  readonly receiveConcurrency?: number | undefined
  /** DeleteMessageBatch calls in flight at once for coalesced acks (default 4). */
  readonly deleteConcurrency?: number | undefined
  /**
   * Prefetch (default true): when receives come in quick succession for a few messages each (a worker
   * draining a backlog), ask SQS for full batches of 10 and hand the rest to the next receives. A
   * prefetched message nobody takes within 10 % of its visibility (at most 1 s) goes back to SQS.
   */
  readonly prefetch?: boolean | undefined
}

/** Options of `layer`. */
export interface Options extends ConnectionOptions, QueueOptions {}

/** What `ensureQueue` creates. */
export interface EnsureOptions {
  /** The queue's name; ends in `.fifo` for a FIFO queue. */
  readonly name: string
  /** The redrive policy's `maxReceiveCount` (default 50, D11). */
  readonly maxReceives?: number | undefined
  /** The dead-letter queue's name (default `<name>-dlq`, before `.fifo`). */
  readonly deadLetterQueueName?: string | undefined
}

/** The queue and dead-letter queue URLs `ensureQueue` made sure of. */
export interface EnsuredQueue {
  readonly queueUrl: string
  readonly deadLetterQueueUrl: string
}

// ---- limits

const MAX_VISIBILITY_S = 43_200
const MAX_DELAY_S = 900
const MAX_WAIT_S = 20
/** D11: a delivery is extended up to 11.5 h after its receive, then deleted. */
const EXTEND_LIMIT_MS = 11.5 * 3_600_000
/** Headroom under SQS's 12 h per delivery for the clock read before the receive. */
const VISIBILITY_HEADROOM_S = 60
const DEFAULT_MAX_BYTES = 262_144
const DLQ_RETENTION_S = 1_209_600
const REASON_MAX_BYTES = 4_096

/** The message attributes `deadLetter` adds; their names are reserved. */
const ATTR_REASON = "chunkwise.reason"
const ATTR_RECEIVES = "chunkwise.receive-count"
const ATTR_AT = "chunkwise.dead-at"

const toSeconds = (ms: number): number => Math.ceil(Math.max(0, ms) / 1000)
const NAME = /^[A-Za-z0-9_-]{1,80}$/
const FIFO_NAME = /^[A-Za-z0-9_-]{1,75}\.fifo$/
/** SQS's MessageGroupId / MessageDeduplicationId: 1-128 ASCII letters, digits and punctuation. */
const FIFO_ID = /^[\x21-\x7E]{1,128}$/

const configError = (message: string) => new Errors.ConfigurationError({ message })

// ---- the client

/** The queue named by `queue`: a URL to use, or a name to look up. */
interface QueueRef {
  readonly url: string | undefined
  readonly name: string
  readonly region: string | undefined
}

const parseQueue = (queue: string): Either.Either<QueueRef, Errors.ConfigurationError> => {
  const fix = `Set the queue option (CHUNKWISE_SQS_QUEUE_URL) to the queue's URL, as \`aws sqs get-queue-url\` ` +
    `prints it (https://sqs.<region>.amazonaws.com/<account>/<name>), or to its name.`
  const trimmed = queue.trim()
  if (/^[a-z]+:\/\//i.test(trimmed)) {
    let url: URL
    try {
      url = new URL(trimmed)
    } catch {
      return Either.left(configError(`SqsQueue: queue "${queue}" is not a valid URL. ${fix}`))
    }
    const segments = url.pathname.split("/").filter((s) => s !== "")
    const name = segments[segments.length - 1] ?? ""
    if (!/^https?:$/.test(url.protocol) || segments.length !== 2 || !(NAME.test(name) || FIFO_NAME.test(name))) {
      return Either.left(
        configError(`SqsQueue: queue "${queue}" is not an SQS queue URL (http(s)://host/<account>/<name>). ${fix}`)
      )
    }
    const region = /^sqs\.([a-z0-9-]+)\.amazonaws\.com/.exec(url.hostname)?.[1]
    return Either.right({ url: url.toString().replace(/\/$/, ""), name, region })
  }
  if (NAME.test(trimmed) || FIFO_NAME.test(trimmed)) {
    return Either.right({ url: undefined, name: trimmed, region: undefined })
  }
  return Either.left(
    configError(
      `SqsQueue: queue "${queue}" is neither a URL nor a queue name (1-80 letters, digits, "-" and "_"; ` +
        `FIFO names end in ".fifo"). ${fix}`
    )
  )
}

/** Creates an `SQSClient` with a keep-alive agent and no SDK retries (the adapter retries); destroyed with the scope. */
export const makeClient = (
  options: ConnectionOptions & { readonly queue?: string | undefined } = {}
): Effect.Effect<SQSClient, Errors.ConfigurationError, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.endpoint !== undefined) {
      const ok = Either.try(() => new URL(options.endpoint!)).pipe(
        Either.map((url) => /^https?:$/.test(url.protocol)),
        Either.getOrElse(() => false)
      )
      if (!ok) {
        return yield* configError(
          `SqsQueue: endpoint "${options.endpoint}" is not an http(s) URL. Set endpoint (AWS_ENDPOINT_URL_SQS) to ` +
            `e.g. http://127.0.0.1:4566 for an emulator, or leave it unset for AWS.`
        )
      }
    }
    const inferred = options.queue === undefined
      ? undefined
      : Either.getOrUndefined(parseQueue(options.queue))?.region
    yield* validateCount("maxSockets", options.maxSockets, 1, 10_000)
    yield* validateRequestTimeout(options)
    const maxSockets = options.maxSockets ?? 50
    const agentOptions = { keepAlive: true, maxSockets }
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const httpAgent = new http.Agent(agentOptions)
        const httpsAgent = new https.Agent(agentOptions)
        const region = options.region ?? inferred
        const client = new SQSClient({
          ...(region === undefined ? {} : { region }),
          ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
          ...(options.credentials === undefined ? {} : {
            credentials: {
              accessKeyId: options.credentials.accessKeyId,
              secretAccessKey: Redacted.value(options.credentials.secretAccessKey),
              ...(options.credentials.sessionToken === undefined
                ? {}
                : { sessionToken: Redacted.value(options.credentials.sessionToken) })
            }
          }),
          maxAttempts: 1,
          requestHandler: { httpAgent, httpsAgent, connectionTimeout: 5_000 }
        })
        return { client, httpAgent, httpsAgent }
      }),
      ({ client, httpAgent, httpsAgent }) =>
        Effect.sync(() => {
          client.destroy()
          httpAgent.destroy()
          httpsAgent.destroy()
        })
    )
    yield* Effect.tryPromise(() => client.client.config.region()).pipe(
      Effect.mapError(() =>
        configError(
          `SqsQueue: no AWS region. Set region (AWS_REGION), or give the queue's full AWS URL, which names it.`
        )
      )
    )
    return client.client
  })

// ---- start-up

const CREDENTIAL_CODES = new Set([
  "InvalidClientTokenId",
  "UnrecognizedClientException",
  "SignatureDoesNotMatch",
  "InvalidSignatureException",
  "IncompleteSignature",
  "MissingAuthenticationToken",
  "ExpiredToken",
  "ExpiredTokenException",
  "CredentialsProviderError",
  "AccessDenied",
  "AccessDeniedException",
  "KMS.AccessDeniedException"
])
const MISSING_QUEUE_CODES = new Set(["QueueDoesNotExist", "NonExistentQueue"])

/** Start-up calls: a missing queue or refused credentials are configuration errors, with the fix. */
const startup = <A>(
  operation: string,
  queue: string,
  retry: RetryOptions,
  attempt: Effect.Effect<A, AwsFailure>
): Effect.Effect<A, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  retrying(
    operation,
    queue,
    retry,
    attempt.pipe(Effect.mapError((failure) => {
      if (MISSING_QUEUE_CODES.has(failure.code)) {
        return configError(
          `SqsQueue: queue ${queue} does not exist (${failure.code}). Create it with its dead-letter queue ` +
            `(infrastructure code, or SqsQueue.ensureQueue / ensureQueue: true in development), or fix the ` +
            `queue option (CHUNKWISE_SQS_QUEUE_URL) and the region (AWS_REGION).`
        )
      }
      if (CREDENTIAL_CODES.has(failure.code)) {
        return configError(
          `SqsQueue: SQS refused the credentials for ${queue}: ${describe(failure, 1)}. Set credentials ` +
            `(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile or role), and allow sqs:SendMessage, ` +
            `ReceiveMessage, DeleteMessage, ChangeMessageVisibility, GetQueueAttributes and GetQueueUrl on the ` +
            `queue and its dead-letter queue.`
        )
      }
      return failure
    }))
  )

const validateCount = (name: string, value: number | undefined, min: number, max: number) =>
  value === undefined || (Number.isInteger(value) && value >= min && value <= max)
    ? Effect.void
    : Effect.fail(configError(`SqsQueue: ${name} must be an integer from ${min} to ${max} (got ${value})`))

const resolveRetry = (retry: Partial<RetryOptions> | undefined): RetryOptions => ({
  times: retry?.times ?? defaultRetry.times,
  base: retry?.base ?? defaultRetry.base,
  max: retry?.max ?? defaultRetry.max
})

const requestTimeoutMs = (options: ConnectionOptions) => Duration.toMillis(options.requestTimeout ?? "10 seconds")

/** A request timeout must be a positive duration: zero or a typo would fail or hang every request. */
const validateRequestTimeout = (options: ConnectionOptions) => {
  const decoded = Duration.decodeUnknown(options.requestTimeout ?? "10 seconds")
  return Option.isSome(decoded) && Duration.toMillis(decoded.value) > 0
    ? Effect.void
    : Effect.fail(configError(
      `SqsQueue: requestTimeout must be a positive duration such as "10 seconds" (got ${
        JSON.stringify(options.requestTimeout)
      })`
    ))
}

const dlqNameFor = (name: string) => name.endsWith(".fifo") ? `${name.slice(0, -5)}-dlq.fifo` : `${name}-dlq`

/**
 * Creates the queue and its dead-letter queue, and sets the queue's RedrivePolicy; idempotent (an
 * existing queue keeps its other attributes and gets the policy). For development and tests.
 */
export const ensureQueue = (
  client: SQSClient,
  options: EnsureOptions & { readonly retry?: Partial<RetryOptions> | undefined }
): Effect.Effect<EnsuredQueue, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  Effect.gen(function*() {
    const fifo = options.name.endsWith(".fifo")
    const dlqName = options.deadLetterQueueName ?? dlqNameFor(options.name)
    for (const name of [options.name, dlqName]) {
      if (!(fifo ? FIFO_NAME : NAME).test(name)) {
        return yield* configError(
          `SqsQueue.ensureQueue: "${name}" is not a valid ${fifo ? "FIFO " : ""}queue name ` +
            `(1-80 letters, digits, "-" and "_"${fifo ? `, ending in ".fifo"` : ""})`
        )
      }
    }
    const maxReceives = options.maxReceives ?? 50
    yield* validateCount("maxReceives", maxReceives, 1, 1000)
    const retry = resolveRetry(options.retry)
    const timeout = 10_000
    const fifoAttributes: Record<string, string> = fifo ? { FifoQueue: "true" } : {}
    const create = (name: string, attributes: Record<string, string>) =>
      startup(
        "ensureQueue",
        name,
        retry,
        request((o) => client.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }), o), timeout)
      ).pipe(Effect.map((out) => out.QueueUrl!))
    const deadLetterQueueUrl = yield* create(dlqName, {
      ...fifoAttributes,
      MessageRetentionPeriod: String(DLQ_RETENTION_S)
    })
    const dlqArn = yield* startup(
      "ensureQueue",
      dlqName,
      retry,
      request(
        (o) =>
          client.send(new GetQueueAttributesCommand({ QueueUrl: deadLetterQueueUrl, AttributeNames: ["QueueArn"] }), o),
        timeout
      )
    ).pipe(Effect.map((out) => out.Attributes?.["QueueArn"] ?? ""))
    const queueUrl = yield* create(options.name, fifoAttributes)
    const RedrivePolicy = JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: maxReceives })
    yield* startup(
      "ensureQueue",
      options.name,
      retry,
      request(
        (o) => client.send(new SetQueueAttributesCommand({ QueueUrl: queueUrl, Attributes: { RedrivePolicy } }), o),
        timeout
      )
    )
    return { queueUrl, deadLetterQueueUrl }
  })

// ---- the adapter

interface Resolved {
  readonly url: string
  readonly name: string
  readonly deadLetterUrl: string
  readonly fifo: boolean
  readonly contentDeduplication: boolean
  readonly maxReceiveCount: number
  readonly maxBytes: number
}

const resolve = (
  client: SQSClient,
  options: QueueOptions,
  retry: RetryOptions,
  timeout: number
): Effect.Effect<Resolved, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  Effect.gen(function*() {
    const ref = yield* parseQueue(options.queue)
    const url = options.ensureQueue === true
      ? (yield* ensureQueue(client, { name: ref.name, maxReceives: options.maxReceives, retry })).queueUrl
      : ref.url ?? (yield* startup(
        "getQueueUrl",
        ref.name,
        retry,
        request((o) => client.send(new GetQueueUrlCommand({ QueueName: ref.name }), o), timeout)
      )).QueueUrl!
    const attributes = (yield* startup(
      "getQueueAttributes",
      url,
      retry,
      request((o) => client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ["All"] }), o), timeout)
    )).Attributes ?? {}
    const policy = Option.fromNullable(attributes["RedrivePolicy"]).pipe(
      Option.flatMap((json) => Option.liftThrowable(() => JSON.parse(json) as Record<string, unknown>)()),
      Option.getOrUndefined
    )
    const target = typeof policy?.["deadLetterTargetArn"] === "string" ? policy["deadLetterTargetArn"] : undefined
    const maxReceiveCount = Number(policy?.["maxReceiveCount"])
    if (target === undefined || !Number.isInteger(maxReceiveCount) || maxReceiveCount < 1) {
      return yield* configError(
        `SqsQueue: queue ${url} has no RedrivePolicy, so a message received too often is never dead-lettered and ` +
          `deadLetter has nowhere to go. Give it a dead-letter queue with maxReceiveCount about 50 (D11) in your ` +
          `infrastructure code, or use SqsQueue.ensureQueue / ensureQueue: true in development.`
      )
    }
    if (options.maxReceives !== undefined && options.maxReceives !== maxReceiveCount) {
      return yield* configError(
        `SqsQueue: maxReceives is ${options.maxReceives} but the RedrivePolicy of ${url} has maxReceiveCount ` +
          `${maxReceiveCount}. Change one of them (the queue's policy is what SQS applies), or leave maxReceives unset.`
      )
    }
    // arn:aws:sqs:<region>:<account>:<name>
    const [, , , , account, dlqName] = target.split(":")
    const deadLetterUrl = (yield* startup(
      "getQueueUrl",
      target,
      retry,
      request(
        (o) =>
          client.send(
            new GetQueueUrlCommand({
              QueueName: dlqName ?? "",
              ...(account === undefined || account === "" ? {} : { QueueOwnerAWSAccountId: account })
            }),
            o
          ),
        timeout
      )
    )).QueueUrl!
    const queueMax = Number(attributes["MaximumMessageSize"] ?? DEFAULT_MAX_BYTES)
    const maxBytes = options.maxMessageBytes ?? Math.min(DEFAULT_MAX_BYTES, queueMax)
    if (!Number.isInteger(maxBytes) || maxBytes < 1024 || maxBytes > queueMax) {
      return yield* configError(
        `SqsQueue: maxMessageBytes must be an integer from 1024 to the queue's MaximumMessageSize (${queueMax}); ` +
          `got ${options.maxMessageBytes}. Lower it, or raise the queue's MaximumMessageSize (up to 1 MiB).`
      )
    }
    return {
      url,
      name: ref.name,
      deadLetterUrl,
      fifo: attributes["FifoQueue"] === "true",
      contentDeduplication: attributes["ContentBasedDeduplication"] === "true",
      maxReceiveCount,
      maxBytes
    }
  })

/** A received message with what the adapter keeps of it. */
interface Fetched {
  readonly delivery: QueueAdapter.Delivery
  readonly held: Held
  /** The visibility it was received with, in seconds. */
  readonly visibility: number
}

/** A receive this soon after the previous one returned means the caller is draining a backlog: prefetch. */
const HOT_MS = 50

/** A failed entry of a batch call that names a receipt SQS no longer honours: the receipt is stale. */
const staleEntry = (entry: { readonly SenderFault?: boolean | undefined }) => entry.SenderFault === true
const STALE_CODES = new Set(["ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue"])

/**
 * Makes the adapter over an `SQSClient` (which the caller owns); checks the queue, its redrive policy
 * and the dead-letter queue first. Its ack batcher lives in the scope.
 */
export const make = (
  client: SQSClient,
  options: QueueOptions & { readonly requestTimeout?: Duration.DurationInput | undefined }
): Effect.Effect<QueueAdapter.QueueAdapterShape, Errors.ConfigurationError | Errors.QueueUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    yield* validateCount("maxReceives", options.maxReceives, 1, 1000)
    yield* validateCount("receiveConcurrency", options.receiveConcurrency, 1, 100)
    yield* validateCount("deleteConcurrency", options.deleteConcurrency, 1, 100)
    const retry = resolveRetry(options.retry)
    const timeout = requestTimeoutMs(options)
    const queue = yield* resolve(client, options, retry, timeout)
    const receipts = new Receipts()
    const scope = yield* Effect.scope
    const receiveConcurrency = options.receiveConcurrency ?? 4
    const call = <A, E = never>(operation: string, attempt: Effect.Effect<A, AwsFailure | E>) =>
      retrying<A, E>(operation, queue.name, retry, attempt)
    const systemAttributes = queue.fifo ? ["ApproximateReceiveCount", "MessageGroupId"] as const : [
      "ApproximateReceiveCount"
    ] as const

    // ---- ack: coalesced DeleteMessageBatch; each attempt sends only receipts that are still current.
    const deleteBatch = (batch: ReadonlyArray<Held>) =>
      Effect.suspend(() => {
        let pending = batch
        return call(
          "ack",
          Effect.suspend(() => {
            const at = now()
            const live = pending.filter((held) => receipts.isLive(held, at))
            if (live.length === 0) return Effect.void
            return Effect.flatMap(
              request((o) =>
                client.send(
                  new DeleteMessageBatchCommand({
                    QueueUrl: queue.url,
                    Entries: live.map((held, i) => ({ Id: String(i), ReceiptHandle: held.handle }))
                  }),
                  o
                ), timeout),
              (out) => {
                // A sender fault names a receipt SQS no longer honours: nothing left to delete.
                const retryable = (out.Failed ?? []).filter((f) => !staleEntry(f))
                if (retryable.length === 0) return Effect.void
                pending = retryable.map((f) => live[Number(f.Id)]!)
                return Effect.fail(partialFailure(retryable, live.length))
              }
            )
          })
        )
      })
    const deletes = yield* Coalesce.make<Held, Errors.QueueUnavailable>({
      maxBatch: MAX_BATCH_ENTRIES,
      concurrency: options.deleteConcurrency ?? 4,
      run: deleteBatch
    })

    /** Seconds a delivery may still be hidden: SQS allows 12 h per delivery, counted from its receive. */
    const secondsLeft = (held: Held, at: number) =>
      Math.max(0, Math.floor(MAX_VISIBILITY_S - (at - held.receivedAt) / 1000) - VISIBILITY_HEADROOM_S)

    const receiveCall = (max: number, visibility: number, waitSeconds: number) =>
      Effect.suspend(() => {
        // FIFO: a retried receive with the same attempt id returns the messages a lost reply carried.
        const attemptId = queue.fifo ? randomUUID() : undefined
        return call(
          "receive",
          Effect.suspend(() => {
            const sentAt = now()
            // A request interrupted in flight (a worker draining) runs to its end in the background, and
            // its messages go back at once, rather than stay hidden for the visibility.
            return QueueAdapter.receiveOrGiveBack(
              Effect.map(
                request((o) =>
                  client.send(
                    new ReceiveMessageCommand({
                      QueueUrl: queue.url,
                      MaxNumberOfMessages: max,
                      VisibilityTimeout: visibility,
                      WaitTimeSeconds: waitSeconds,
                      MessageSystemAttributeNames: [...systemAttributes],
                      ...(attemptId === undefined ? {} : { ReceiveRequestAttemptId: attemptId })
                    }),
                    o
                  ), timeout + waitSeconds * 1000),
                (out) =>
                  (out.Messages ?? []).map((m): Fetched => {
                    const receiveCount = Number(m.Attributes?.ApproximateReceiveCount ?? 1)
                    const held: Held = {
                      handle: m.ReceiptHandle!,
                      messageId: m.MessageId!,
                      body: m.Body ?? "",
                      groupId: m.Attributes?.MessageGroupId,
                      receiveCount,
                      receivedAt: sentAt,
                      deadline: sentAt + visibility * 1000,
                      margin: marginFor(visibility * 1000, timeout)
                    }
                    const receipt = receipts.issue(held)
                    return {
                      delivery: { messageId: held.messageId, receipt, body: held.body, receiveCount },
                      held,
                      visibility
                    }
                  })
              ),
              giveBack
            )
          })
        )
      })

    /** One round: the first call long-polls, the others (for more than 10) take what is there at once. */
    const receiveRound = (
      max: number,
      visibility: number,
      waitSeconds: number
    ): Effect.Effect<ReadonlyArray<Fetched>, Errors.QueueUnavailable> => {
      const calls = Math.min(receiveConcurrency, Math.ceil(max / MAX_BATCH_ENTRIES))
      const sizes = Array.from({ length: calls }, (_, i) => Math.min(MAX_BATCH_ENTRIES, max - i * MAX_BATCH_ENTRIES))
      if (calls === 1) return receiveCall(sizes[0]!, visibility, waitSeconds)
      // The round as a whole gives back what it got when its caller is interrupted: a call that finished
      // while another still polls holds messages that no call in flight would give back.
      return QueueAdapter.receiveOrGiveBack(
        Effect.flatMap(
          Effect.all(sizes.map((n, i) => Effect.either(receiveCall(n, visibility, i === 0 ? waitSeconds : 0))), {
            concurrency: "unbounded"
          }),
          (results) => {
            // Messages a call received are never dropped because another call failed.
            const got = results.flatMap((r) => Either.isRight(r) ? r.right : [])
            const failure = results.find(Either.isLeft)
            return got.length === 0 && failure !== undefined ? Effect.fail(failure.left) : Effect.succeed(got)
          }
        ),
        giveBack
      )
    }

    // ---- prefetch: a caller that receives often for a few free slots gets full batches of 10 from SQS;
    // what it did not ask for waits here for its next receive, briefly, and goes back to SQS otherwise.
    let buffered: Array<Fetched> = []
    let lastReceive = -Infinity
    let readAhead: Fiber.RuntimeFiber<void> | undefined
    /** A prefetched delivery is handed out only while most of its visibility is left: 10 %, at most 1 s. */
    const fresh = (f: Fetched, at: number) =>
      at - f.held.receivedAt < Math.min(1000, f.visibility * 100) && receipts.isLive(f.held, at)
    /** Gives prefetched deliveries back to SQS at once (visibility 0), e.g. when nobody took them in time. */
    const giveBack = (list: ReadonlyArray<Fetched>) =>
      list.length === 0 ? Effect.void : Effect.suspend(() => {
        for (const f of list) receipts.forget(f.delivery.receipt)
        return Effect.ignore(changeVisibility("receive", list.map((f) => ({ held: f.held, seconds: 0 }))))
      })
    const none: ReadonlyArray<Fetched> = []
    /** Takes the prefetched deliveries that may no longer be handed out (this runs on every receive). */
    const takeStale = (at: number, visibility?: number): ReadonlyArray<Fetched> => {
      let stale: Array<Fetched> | undefined
      for (const f of buffered) {
        if (!fresh(f, at) || (visibility !== undefined && f.visibility !== visibility)) (stale ??= []).push(f)
      }
      if (stale === undefined) return none
      const gone = new Set(stale)
      buffered = buffered.filter((f) => !gone.has(f))
      return stale
    }
    if (options.prefetch !== false) {
      yield* Effect.forkScoped(Effect.forever(Effect.zipRight(
        Effect.sleep("100 millis"),
        Effect.suspend(() => giveBack(takeStale(now())))
      )))
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          const all = buffered
          buffered = []
          return giveBack(all)
        })
      )
    }

    /** Sends entries to a queue in batches, retrying only the failed entries of each; sender faults are rejections. */
    const sendEntries = (
      operation: string,
      url: string,
      entries: ReadonlyArray<{ readonly entry: Omit<SendMessageBatchRequestEntry, "Id">; readonly size: number }>
    ) =>
      Effect.forEach(
        split(entries, (e) => e.size, queue.maxBytes),
        (batch) =>
          Effect.suspend(() => {
            let pending = batch.map((e, i) => ({ ...e.entry, Id: String(i) }))
            return call<void, Errors.MessageRejected>(
              operation,
              Effect.suspend(() =>
                Effect.flatMap(
                  request(
                    (o) => client.send(new SendMessageBatchCommand({ QueueUrl: url, Entries: pending }), o),
                    timeout
                  ),
                  (out): Effect.Effect<void, AwsFailure | Errors.MessageRejected> => {
                    const failed = out.Failed ?? []
                    if (failed.length === 0) return Effect.void
                    const refused = failed.filter((f) => f.SenderFault === true)
                    if (refused.length > 0) {
                      return Effect.fail(
                        new Errors.MessageRejected({
                          reason: `SQS refused ${refused.length} of ${pending.length} messages of a batch to ` +
                            `${queue.name} (the others were sent): ` +
                            refused.map((f) => `${f.Code}: ${f.Message}`).join("; ")
                        })
                      )
                    }
                    const ids = new Set(failed.map((f) => f.Id))
                    pending = pending.filter((entry) => ids.has(entry.Id))
                    return Effect.fail(partialFailure(failed, pending.length))
                  }
                )
              )
            )
          }),
        // Batches of one FIFO group must arrive in order.
        { concurrency: queue.fifo ? 1 : 8, discard: true }
      )

    /** Changes visibility of current deliveries in batches of 10; a refused entry's receipt is stale. */
    const changeVisibility = (
      operation: string,
      items: ReadonlyArray<{ readonly held: Held; readonly seconds: number }>
    ) =>
      Effect.forEach(
        tens(items),
        (batch) =>
          Effect.suspend(() => {
            let pending = batch
            return call(
              operation,
              Effect.suspend(() => {
                const sentAt = now()
                const live = pending.filter((item) => receipts.isLive(item.held, sentAt))
                if (live.length === 0) return Effect.void
                return Effect.flatMap(
                  request((o) =>
                    client.send(
                      new ChangeMessageVisibilityBatchCommand({
                        QueueUrl: queue.url,
                        Entries: live.map((item, i) => ({
                          Id: String(i),
                          ReceiptHandle: item.held.handle,
                          VisibilityTimeout: item.seconds
                        }))
                      }),
                      o
                    ), timeout),
                  (out) => {
                    const failedIds = new Set((out.Failed ?? []).map((f) => f.Id))
                    live.forEach((item, i) => {
                      if (failedIds.has(String(i))) return
                      // SQS set the deadline after `sentAt`: this one is conservative.
                      item.held.deadline = Math.max(item.held.deadline, sentAt + item.seconds * 1000)
                      item.held.margin = marginFor(item.seconds * 1000, timeout)
                    })
                    const retryable = (out.Failed ?? []).filter((f) => !staleEntry(f))
                    for (const f of out.Failed ?? []) if (staleEntry(f)) live[Number(f.Id)]!.held.deadline = 0
                    if (retryable.length === 0) return Effect.void
                    pending = retryable.map((f) => live[Number(f.Id)]!)
                    return Effect.fail(partialFailure(retryable, live.length))
                  }
                )
              })
            )
          }),
        { concurrency: 4, discard: true }
      )

    /** Receives from the dead-letter queue, holding what it got for `holdSeconds`. */
    const receiveDead = (max: number, holdSeconds: number) =>
      call(
        "deadLetters",
        request((o) =>
          client.send(
            new ReceiveMessageCommand({
              QueueUrl: queue.deadLetterUrl,
              MaxNumberOfMessages: max,
              VisibilityTimeout: holdSeconds,
              WaitTimeSeconds: 1,
              MessageSystemAttributeNames: ["SentTimestamp", "ApproximateReceiveCount", "MessageGroupId"],
              MessageAttributeNames: [ATTR_REASON, ATTR_RECEIVES, ATTR_AT]
            }),
            o
          ), timeout + 1000)
      ).pipe(Effect.map((out) => out.Messages ?? []))

    /** Makes dead letters read for listing visible again at once. */
    const releaseDead = (messages: ReadonlyArray<Message>) =>
      Effect.forEach(
        tens(messages),
        (batch) =>
          call(
            "deadLetters",
            request((o) =>
              client.send(
                new ChangeMessageVisibilityBatchCommand({
                  QueueUrl: queue.deadLetterUrl,
                  Entries: batch.map((m, i) => ({
                    Id: String(i),
                    ReceiptHandle: m.ReceiptHandle!,
                    VisibilityTimeout: 0
                  }))
                }),
                o
              ), timeout)
          ),
        { concurrency: 4, discard: true }
      )

    const deleteDead = (messages: ReadonlyArray<Message>) =>
      Effect.forEach(
        tens(messages),
        (batch) =>
          call(
            "redrive",
            request((o) =>
              client.send(
                new DeleteMessageBatchCommand({
                  QueueUrl: queue.deadLetterUrl,
                  Entries: batch.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! }))
                }),
                o
              ), timeout)
          ),
        { concurrency: 4, discard: true }
      )

    const attribute = (m: Message, name: string) => m.MessageAttributes?.[name]?.StringValue
    const deadAt = (m: Message) => Number(attribute(m, ATTR_AT) ?? m.Attributes?.SentTimestamp ?? 0)
    const toDeadLetter = (m: Message): QueueAdapter.DeadLetter => ({
      messageId: m.MessageId!,
      body: m.Body ?? "",
      reason: attribute(m, ATTR_REASON) ??
        `received more than ${queue.maxReceiveCount} times without being acknowledged ` +
          `(the queue's RedrivePolicy maxReceiveCount is ${queue.maxReceiveCount})`,
      receiveCount: Number(attribute(m, ATTR_RECEIVES) ?? queue.maxReceiveCount),
      at: deadAt(m)
    })

    const depthOf = (url: string) =>
      call(
        "depth",
        request((o) =>
          client.send(
            new GetQueueAttributesCommand({
              QueueUrl: url,
              AttributeNames: [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"
              ]
            }),
            o
          ), timeout)
      ).pipe(Effect.map((out) => {
        const count = (name: QueueAttributeName) => Number(out.Attributes?.[name] ?? 0)
        return {
          ready: count("ApproximateNumberOfMessages"),
          inFlight: count("ApproximateNumberOfMessagesNotVisible"),
          delayed: count("ApproximateNumberOfMessagesDelayed")
        }
      }))

    const shape: QueueAdapter.QueueAdapterShape = {
      kind: "sqs",

      send: (messages, sendOptions) =>
        Effect.suspend(() => {
          const delayMs = sendOptions?.delayMs ?? 0
          if (queue.fifo && delayMs > 0) {
            return Effect.fail(
              new Errors.MessageRejected({
                reason: `FIFO queue ${queue.name} takes no per-message delay (delayMs ${delayMs}); send without ` +
                  `a delay, or use a standard queue`
              })
            )
          }
          const delaySeconds = Math.min(MAX_DELAY_S, toSeconds(delayMs))
          const entries: Array<{ entry: Omit<SendMessageBatchRequestEntry, "Id">; size: number }> = []
          for (const [i, message] of messages.entries()) {
            const size = sizeOf(message.body)
            const problem = bodyProblem(message.body, size, queue.maxBytes)
            const which = `message ${i + 1} of ${messages.length} to SQS queue ${queue.name}`
            if (problem !== undefined) {
              return Effect.fail(new Errors.MessageRejected({ reason: `${which}: ${problem}; nothing was sent` }))
            }
            if (queue.fifo) {
              if (message.groupId === undefined || !FIFO_ID.test(message.groupId)) {
                return Effect.fail(
                  new Errors.MessageRejected({
                    reason: `${which}: a FIFO queue needs a groupId of 1-128 printable ASCII characters ` +
                      `(got ${JSON.stringify(message.groupId)}); nothing was sent`
                  })
                )
              }
              const dedup = message.deduplicationId
              if (dedup === undefined ? !queue.contentDeduplication : !FIFO_ID.test(dedup)) {
                return Effect.fail(
                  new Errors.MessageRejected({
                    reason: `${which}: a FIFO queue without ContentBasedDeduplication needs a deduplicationId of ` +
                      `1-128 printable ASCII characters (got ${JSON.stringify(dedup)}); nothing was sent`
                  })
                )
              }
            }
            entries.push({
              entry: {
                MessageBody: message.body,
                ...(queue.fifo
                  ? {
                    MessageGroupId: message.groupId,
                    ...(message.deduplicationId === undefined
                      ? {}
                      : { MessageDeduplicationId: message.deduplicationId })
                  }
                  : delaySeconds > 0
                  ? { DelaySeconds: delaySeconds }
                  : {})
              },
              size
            })
          }
          return sendEntries("send", queue.url, entries)
        }),

      receive: ({ max, visibilityMs, waitMs }) => {
        const want = Math.floor(max)
        const visibility = Math.min(MAX_VISIBILITY_S, toSeconds(visibilityMs))
        // The common case of a busy worker, without an Effect.gen: enough prefetched, all fresh.
        const served = Effect.suspend(() => {
          if (want <= 0) return Effect.succeed([])
          const at = now()
          if (buffered.length < 2 * want || !buffered.every((f) => fresh(f, at) && f.visibility === visibility)) {
            return slowReceive
          }
          const out = buffered.slice(0, want).map((f) => f.delivery)
          buffered = buffered.slice(want)
          lastReceive = now()
          return Effect.succeed(out)
        })
        const slowReceive = Effect.gen(function*() {
          const at = now()
          // "Hot": the previous receive returned moments ago, so the caller is draining a backlog.
          const hot = options.prefetch !== false && at - lastReceive < HOT_MS
          const batch = Math.max(want, Math.min(receiveConcurrency, Math.ceil(want / MAX_BATCH_ENTRIES)) * 10)
          if (buffered.length === 0 && readAhead !== undefined) yield* Fiber.await(readAhead)
          const stale = takeStale(now(), visibility)
          if (stale.length > 0) yield* Effect.forkIn(giveBack(stale), scope)
          let out: ReadonlyArray<QueueAdapter.Delivery>
          if (buffered.length > 0) {
            out = buffered.slice(0, want).map((f) => f.delivery)
            buffered = buffered.slice(want)
          } else {
            const fetch = hot ? batch : want
            const until = at + Math.max(0, waitMs)
            let got: ReadonlyArray<Fetched> = []
            do {
              got = yield* receiveRound(fetch, visibility, Math.min(MAX_WAIT_S, toSeconds(until - now())))
            } while (got.length === 0 && now() < until)
            buffered.push(...got.slice(want))
            out = got.slice(0, want).map((f) => f.delivery)
          }
          // Read ahead: fetch the next batch while the caller handles this one.
          if (hot && out.length === want && buffered.length < want && readAhead === undefined) {
            readAhead = yield* Effect.forkIn(
              receiveRound(batch, visibility, 0).pipe(
                Effect.tap((got) => Effect.sync(() => buffered.push(...got))),
                Effect.ignore,
                Effect.ensuring(Effect.sync(() => {
                  readAhead = undefined
                }))
              ),
              scope
            )
          }
          lastReceive = now()
          return out
        })
        return served
      },

      ack: (list) =>
        Effect.suspend(() => {
          const held: Array<Held> = []
          for (const receipt of list) {
            const entry = receipts.current(receipt)
            if (entry === undefined) continue
            receipts.forget(receipt)
            held.push(entry)
          }
          return deletes(held)
        }),

      release: (receipt, delayMs) =>
        Effect.suspend(() => {
          const at = now()
          const held = receipts.current(receipt, at)
          if (held === undefined) return Effect.void
          receipts.forget(receipt)
          const seconds = Math.min(toSeconds(delayMs), secondsLeft(held, at))
          return call(
            "release",
            Effect.suspend(() =>
              receipts.isLive(held)
                ? request((o) =>
                  client.send(
                    new ChangeMessageVisibilityCommand({
                      QueueUrl: queue.url,
                      ReceiptHandle: held.handle,
                      VisibilityTimeout: seconds
                    }),
                    o
                  ), timeout).pipe(
                    Effect.asVoid,
                    // SQS no longer honours the receipt: the message is visible again already.
                    Effect.catchIf((failure) => STALE_CODES.has(failure.code), () => Effect.void)
                  )
                : Effect.void
            )
          )
        }),

      extend: (list, visibilityMs) =>
        Effect.suspend(() => {
          const at = now()
          const expired: Array<Held> = []
          const items: Array<{ held: Held; seconds: number }> = []
          for (const receipt of list) {
            const held = receipts.current(receipt, at)
            if (held === undefined) continue
            if (at - held.receivedAt >= EXTEND_LIMIT_MS) {
              // D11: SQS cannot hide a delivery past 12 h; the lease and the feeder carry the unit on.
              receipts.forget(receipt)
              expired.push(held)
            } else {
              items.push({
                held,
                seconds: Math.min(MAX_VISIBILITY_S, toSeconds(visibilityMs), secondsLeft(held, at))
              })
            }
          }
          return Effect.zipRight(
            changeVisibility("extend", items),
            deletes(expired),
            { concurrent: true }
          )
        }),

      deadLetter: (receipt, reason) =>
        Effect.suspend(() => {
          const held = receipts.current(receipt)
          if (held === undefined) return Effect.void
          receipts.forget(receipt)
          const attributes = (text: string): Record<string, MessageAttributeValue> => ({
            [ATTR_REASON]: { DataType: "String", StringValue: text },
            [ATTR_RECEIVES]: { DataType: "Number", StringValue: String(held.receiveCount) },
            [ATTR_AT]: { DataType: "Number", StringValue: String(Date.now()) }
          })
          // The reason is cut to what fits next to the body.
          const room = Math.min(REASON_MAX_BYTES, queue.maxBytes - sizeOf(held.body, attributes("")))
          let text = reason.length === 0 ? "(no reason given)" : reason
          while (Buffer.byteLength(text, "utf8") > Math.max(0, room)) {
            text = text.slice(0, Math.floor(text.length * 0.9))
          }
          const MessageAttributes = attributes(text)
          const entry: Omit<SendMessageBatchRequestEntry, "Id"> = {
            MessageBody: held.body,
            MessageAttributes,
            ...(queue.fifo
              ? { MessageGroupId: held.groupId ?? "chunkwise", MessageDeduplicationId: `dead-${held.messageId}` }
              : {})
          }
          // Send to the dead-letter queue first, then delete: a failure in between leaves a copy, never nothing.
          return sendEntries("deadLetter", queue.deadLetterUrl, [{ entry, size: sizeOf(held.body, MessageAttributes) }])
            .pipe(
              Effect.catchTag("MessageRejected", (e) =>
                Effect.fail(
                  new Errors.QueueUnavailable({
                    operation: "deadLetter",
                    message: `the dead-letter queue of ${queue.name} refused the message: ${e.reason}`
                  })
                )),
              Effect.zipRight(deletes([held]))
            )
        }),

      depth: Effect.map(
        Effect.all([depthOf(queue.url), depthOf(queue.deadLetterUrl)], { concurrency: 2 }),
        ([main, dead]) => ({
          ...main,
          // Prefetched deliveries nobody took yet are in flight for SQS, but ready for the contract.
          ready: main.ready + buffered.length,
          inFlight: Math.max(0, main.inFlight - buffered.length),
          dead: dead.ready + dead.inFlight + dead.delayed,
          oldestReadyAgeMs: null
        })
      ),

      deadLetters: ({ limit }) =>
        Effect.suspend(() => {
          const seen = new Map<string, Message>()
          const read: Effect.Effect<void, Errors.QueueUnavailable> = Effect.suspend(() => {
            const want = Math.min(MAX_BATCH_ENTRIES, limit - seen.size)
            if (want <= 0) return Effect.void
            return Effect.flatMap(receiveDead(want, 30), (got) => {
              const fresh = got.filter((m) => !seen.has(m.MessageId!))
              for (const m of fresh) seen.set(m.MessageId!, m)
              return fresh.length === 0 ? Effect.void : read
            })
          })
          return read.pipe(
            Effect.ensuring(Effect.ignore(Effect.suspend(() => releaseDead([...seen.values()])))),
            Effect.map(() => [...seen.values()].map(toDeadLetter).sort((a, b) => a.at - b.at).slice(0, limit))
          )
        }),

      redrive: ({ messageIds }) =>
        Effect.suspend(() => {
          if (messageIds !== undefined && messageIds.length === 0) return Effect.succeed(0)
          const wanted = messageIds === undefined ? undefined : new Set(messageIds)
          const startedAt = Date.now()
          const seen = new Set<string>()
          const skipped: Array<Message> = []
          let moved = 0
          const round: Effect.Effect<void, Errors.QueueUnavailable> = Effect.suspend(() =>
            Effect.flatMap(receiveDead(MAX_BATCH_ENTRIES, 60), (got) => {
              const fresh = got.filter((m) => !seen.has(m.MessageId!))
              for (const m of fresh) seen.add(m.MessageId!)
              if (fresh.length === 0) return Effect.void
              // Dead-lettered again after this redrive began: leave it for the next one.
              const take = fresh.filter((m) => (wanted?.has(m.MessageId!) ?? true) && deadAt(m) <= startedAt)
              skipped.push(...fresh.filter((m) => !take.includes(m)))
              const entries = take.map((m) => ({
                entry: {
                  MessageBody: m.Body ?? "",
                  ...(queue.fifo
                    ? {
                      MessageGroupId: m.Attributes?.MessageGroupId ?? "chunkwise",
                      MessageDeduplicationId: `redrive-${m.MessageId}`
                    }
                    : {})
                },
                size: sizeOf(m.Body ?? "")
              }))
              return sendEntries("redrive", queue.url, entries).pipe(
                Effect.catchTag("MessageRejected", (e) =>
                  Effect.fail(
                    new Errors.QueueUnavailable({
                      operation: "redrive",
                      message: `redrive to ${queue.name}: ${e.reason}`
                    })
                  )),
                Effect.zipRight(deleteDead(take)),
                Effect.zipRight(Effect.sync(() => {
                  moved += take.length
                })),
                Effect.zipRight(
                  wanted !== undefined && [...wanted].every((id) => seen.has(id)) ? Effect.void : round
                )
              )
            })
          )
          return round.pipe(
            Effect.ensuring(Effect.ignore(Effect.suspend(() => releaseDead(skipped)))),
            Effect.map(() => moved)
          )
        })
    }
    return shape
  })

/** The SQS queue as a layer; the client is created and destroyed with the layer. */
export const layer = (
  options: Options
): Layer.Layer<QueueAdapter.QueueAdapter, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  Layer.scoped(QueueAdapter.QueueAdapter, Effect.flatMap(makeClient(options), (client) => make(client, options)))

/** The SQS queue over a client the service already has (it stays the caller's: not destroyed here). */
export const layerFromClient = (
  client: SQSClient,
  options: QueueOptions & { readonly requestTimeout?: Duration.DurationInput | undefined }
): Layer.Layer<QueueAdapter.QueueAdapter, Errors.ConfigurationError | Errors.QueueUnavailable> =>
  Layer.scoped(QueueAdapter.QueueAdapter, make(client, options))

// ---- configuration

/**
 * The options from the environment: `CHUNKWISE_SQS_QUEUE_URL` (a URL or a name; required), `AWS_REGION`,
 * `AWS_ENDPOINT_URL_SQS` (or `AWS_ENDPOINT_URL`), `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+
 * `AWS_SESSION_TOKEN`; secrets are `Redacted`; unset: the SDK's default chain), `CHUNKWISE_SQS_MAX_RECEIVES`,
 * `CHUNKWISE_SQS_ENSURE_QUEUE` (default false), `CHUNKWISE_SQS_MAX_MESSAGE_BYTES`.
 */
export const config: Config.Config<Options> = Config.all({
  queue: Config.string("CHUNKWISE_SQS_QUEUE_URL").pipe(
    Config.withDescription("The SQS queue's URL (or name) that chunkwise sends to and receives from")
  ),
  region: Config.option(Config.string("AWS_REGION")),
  endpoint: Config.option(
    Config.string("AWS_ENDPOINT_URL_SQS").pipe(Config.orElse(() => Config.string("AWS_ENDPOINT_URL")))
  ),
  accessKeyId: Config.option(Config.string("AWS_ACCESS_KEY_ID")),
  secretAccessKey: Config.option(Config.redacted("AWS_SECRET_ACCESS_KEY")),
  sessionToken: Config.option(Config.redacted("AWS_SESSION_TOKEN")),
  maxReceives: Config.option(Config.integer("CHUNKWISE_SQS_MAX_RECEIVES")),
  ensureQueue: Config.boolean("CHUNKWISE_SQS_ENSURE_QUEUE").pipe(Config.withDefault(false)),
  maxMessageBytes: Config.option(Config.integer("CHUNKWISE_SQS_MAX_MESSAGE_BYTES"))
}).pipe(
  Config.mapOrFail((c): Either.Either<Options, ConfigError.ConfigError> => {
    if (Option.isSome(c.accessKeyId) !== Option.isSome(c.secretAccessKey)) {
      const missing = Option.isSome(c.accessKeyId) ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID"
      return Either.left(
        ConfigError.InvalidData(
          [missing],
          `${missing} is not set while its pair is: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or ` +
            `neither to use the SDK's default credential chain (profile, SSO, container or instance role)`
        )
      )
    }
    const credentials = Option.isSome(c.accessKeyId) && Option.isSome(c.secretAccessKey)
      ? {
        accessKeyId: c.accessKeyId.value,
        secretAccessKey: c.secretAccessKey.value,
        sessionToken: Option.getOrUndefined(c.sessionToken)
      }
      : undefined
    return Either.right({
      queue: c.queue,
      region: Option.getOrUndefined(c.region),
      endpoint: Option.getOrUndefined(c.endpoint),
      credentials,
      maxReceives: Option.getOrUndefined(c.maxReceives),
      ensureQueue: c.ensureQueue,
      maxMessageBytes: Option.getOrUndefined(c.maxMessageBytes)
    })
  })
)

/** The SQS queue as a layer from `Config` (default: `config`, the environment). */
export const layerConfig = (
  options: Config.Config.Wrap<Options> = config
): Layer.Layer<
  QueueAdapter.QueueAdapter,
  ConfigError.ConfigError | Errors.ConfigurationError | Errors.QueueUnavailable
> =>
  Layer.scoped(
    QueueAdapter.QueueAdapter,
    Effect.flatMap(Config.unwrap(options), (resolved) =>
      Effect.flatMap(makeClient(resolved), (client) => make(client, resolved)))
  )
