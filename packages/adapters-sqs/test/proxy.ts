/**
 * A small HTTP proxy on a loopback port in front of the emulator that plays a troubled SQS endpoint:
 * it answers a share of requests with throttling (HTTP 400 in the AWS JSON 1.0 protocol that
 * client-sqs speaks: `ThrottlingException`, or `RequestThrottled` with its query-compatible header)
 * or a 5xx without forwarding them, loses the reply of others after SQS applied them, resets
 * connections, and fails single entries of batch calls. Every decision comes from a seeded generator,
 * so a failing run can be replayed.
 */
import * as http from "node:http"
import type { AddressInfo } from "node:net"

/** Shares (0..1) of requests that meet each fault. */
export interface Faults {
  /** Answered 400 ThrottlingException / RequestThrottled, not forwarded. */
  readonly throttle: number
  /** Answered 500 InternalError or 503 ServiceUnavailable, not forwarded. */
  readonly serverError: number
  /** Forwarded and applied, but the reply is replaced by a 500: the client cannot tell it happened. */
  readonly replyLost: number
  /** The connection is destroyed before any reply (a network error, ECONNRESET). */
  readonly reset: number
  /** Batch calls (send, delete, change visibility): the last entry is held back and reported failed (server fault). */
  readonly entryFailure: number
}

export const none: Faults = { throttle: 0, serverError: 0, replyLost: 0, reset: 0, entryFailure: 0 }

/** What the proxy did, by kind. */
export interface Counts {
  forwarded: number
  throttled: number
  serverErrors: number
  repliesLost: number
  resets: number
  entryFailures: number
}

/** A running proxy; `faults` can be changed at any time. */
export interface Proxy {
  readonly endpoint: string
  faults: Faults
  readonly counts: Counts
  /** Requests seen per SQS action (`SendMessageBatch`, ...), faulty or not. */
  readonly actions: Map<string, number>
  /** While true, every request's action and JSON body is appended to `requests`. */
  record: boolean
  readonly requests: Array<{ readonly action: string; readonly body: Record<string, unknown> }>
  /** Milliseconds a long-polling ReceiveMessage (WaitTimeSeconds > 0) waits here before it is forwarded. */
  holdLongPollsMs: number
  readonly stop: () => Promise<void>
}

/** mulberry32: a tiny seeded generator. */
const generator = (seed: number) => () => {
  seed = (seed + 0x6D2B79F5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const BATCH_ACTIONS = new Set(["SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"])

const awsError = (
  res: http.ServerResponse,
  status: number,
  code: string,
  message: string,
  queryCode: string = code
) => {
  const body = JSON.stringify({ __type: `com.amazonaws.sqs#${code}`, message })
  res.writeHead(status, {
    "content-type": "application/x-amz-json-1.0",
    "x-amzn-requestid": "proxy",
    "x-amzn-query-error": `${queryCode};${status >= 500 ? "Receiver" : "Sender"}`,
    "content-length": Buffer.byteLength(body)
  })
  res.end(body)
}

/** Starts the proxy in front of `target` (an http://127.0.0.1:port endpoint). */
export const start = async (target: string, options: { readonly seed: number }): Promise<Proxy> => {
  const random = generator(options.seed)
  const upstream = new URL(target)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
  const counts: Counts = { forwarded: 0, throttled: 0, serverErrors: 0, repliesLost: 0, resets: 0, entryFailures: 0 }
  const actions = new Map<string, number>()

  const forward = (
    req: http.IncomingMessage,
    body: Buffer
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const out = http.request({
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: upstream.host, "content-length": body.length },
        agent
      }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on(
          "end",
          () => resolve({ status: res.statusCode ?? 500, headers: res.headers, body: Buffer.concat(chunks) })
        )
        res.on("error", reject)
      })
      out.on("error", reject)
      out.end(body)
    })

  const proxy: Proxy = {
    endpoint: "",
    faults: none,
    counts,
    actions,
    record: false,
    requests: [],
    holdLongPollsMs: 0,
    stop: () =>
      new Promise<void>((resolve) => {
        agent.destroy()
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }

  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => {
      void (async () => {
        let body = Buffer.concat(chunks)
        const action = String(req.headers["x-amz-target"] ?? "").replace("AmazonSQS.", "")
        actions.set(action, (actions.get(action) ?? 0) + 1)
        if (proxy.record) proxy.requests.push({ action, body: JSON.parse(body.toString("utf8")) })
        if (proxy.holdLongPollsMs > 0 && action === "ReceiveMessage") {
          const wait = Number((JSON.parse(body.toString("utf8")) as { WaitTimeSeconds?: number }).WaitTimeSeconds ?? 0)
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, proxy.holdLongPollsMs))
        }
        const f = proxy.faults
        const roll = random()
        let edge = f.throttle
        if (roll < edge) {
          counts.throttled += 1
          return random() < 0.5
            ? awsError(res, 400, "ThrottlingException", "Rate exceeded")
            : awsError(res, 400, "RequestThrottled", "Request is throttled.", "AWS.SimpleQueueService.RequestThrottled")
        }
        if (roll < (edge += f.serverError)) {
          counts.serverErrors += 1
          return random() < 0.5
            ? awsError(res, 500, "InternalError", "We encountered an internal error. Please try again.")
            : awsError(
              res,
              503,
              "ServiceUnavailable",
              "The request has failed due to a temporary failure of the server."
            )
        }
        if (roll < (edge += f.reset)) {
          counts.resets += 1
          req.socket.destroy()
          return
        }
        const lose = roll < (edge += f.replyLost)
        // A batch entry held back: SQS never sees it, and the reply reports it failed on the server side.
        let heldBack: { Id: string } | undefined
        if (!lose && BATCH_ACTIONS.has(action) && random() < f.entryFailure) {
          const parsed = JSON.parse(body.toString("utf8")) as { Entries: Array<{ Id: string }> }
          if (parsed.Entries.length > 1) {
            heldBack = parsed.Entries.pop()
            body = Buffer.from(JSON.stringify(parsed))
          }
        }
        const reply = await forward(req, body)
        counts.forwarded += 1
        if (lose) {
          counts.repliesLost += 1
          return awsError(res, 500, "InternalError", "We encountered an internal error. Please try again.")
        }
        let replyBody = reply.body
        if (heldBack !== undefined && reply.status === 200) {
          counts.entryFailures += 1
          const parsed = JSON.parse(replyBody.toString("utf8")) as { Failed?: Array<unknown> }
          parsed.Failed = [
            ...(parsed.Failed ?? []),
            { Id: heldBack.Id, SenderFault: false, Code: "InternalError", Message: "Internal error (proxy)" }
          ]
          replyBody = Buffer.from(JSON.stringify(parsed))
        }
        const { "transfer-encoding": _chunked, ...headers } = reply.headers
        res.writeHead(reply.status, {
          ...headers,
          "content-length": replyBody.length,
          connection: "keep-alive"
        })
        res.end(replyBody)
      })().catch(() => {
        if (!res.headersSent) awsError(res, 502, "InternalError", "proxy: upstream failed")
      })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return Object.assign(proxy, { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })
}
