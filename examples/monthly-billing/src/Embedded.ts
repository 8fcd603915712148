/**
 * The embedded default: PGlite (Postgres compiled to WebAssembly, in this process) served on a free
 * loopback port over the Postgres wire protocol, so `@effect/sql-pg` connects to it as to any Postgres.
 *
 * PGlite is one backend session. Serving several clients on it is correct only if no client's
 * statements interleave with another's, so this server serialises whole exchanges:
 *
 * - a client's messages are grouped up to their `Sync` (an extended-protocol query: Parse, Bind,
 *   Describe, Execute, Sync) or a simple `Query`, and a group runs on PGlite in one call;
 * - after a group, a client that is inside a transaction block keeps the session until it commits or
 *   rolls back (a client that disconnects inside one is rolled back), so the other clients' statements
 *   wait, and every chunk transaction is isolated as on a real server.
 *
 * (`@electric-sql/pglite-socket` 0.2's `PGLiteSocketServer` queues single messages, so outside a
 * transaction block it interleaves two clients' Parse/Bind/Execute and they bind each other's unnamed
 * statements: with more than one pooled connection the job failed with "Failed to execute statement"
 * and then hung. A chunkwise worker needs `concurrency + 2` connections, hence this server.)
 *
 * What it cannot give is parallelism: one statement runs at a time, and lease heartbeats wait behind
 * chunk transactions, so the worker's lease must be far longer than any chunk.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { PGlite } from "@electric-sql/pglite"
import { Effect, Layer } from "effect"
import * as net from "node:net"
import { BillingError } from "./Errors.js"

/** Where the embedded database listens. */
export interface Embedded {
  readonly host: string
  readonly port: number
}

/** Options of the embedded database. */
export interface Options {
  /**
   * Set on the database's one session (every client shares it), so workers see a bound on idle
   * transactions (D6).
   */
  readonly idleInTransactionTimeoutMs: number
}

const SSL_REQUEST = 80877103
const CANCEL_REQUEST = 80877102
const [SYNC, QUERY, FLUSH, TERMINATE] = ["S", "Q", "H", "X"].map((c) => c.charCodeAt(0)) as [
  number,
  number,
  number,
  number
]

/** The session's owner: one client at a time, queued in arrival order. */
const makeSession = () => {
  let owner: object | undefined
  const waiting: Array<() => void> = []
  return {
    acquire: (who: object) =>
      new Promise<void>((resolve) => {
        const go = () => {
          owner = who
          resolve()
        }
        if (owner === undefined || owner === who) go()
        else waiting.push(go)
      }),
    release: (who: object) => {
      if (owner !== who) return
      owner = undefined
      waiting.shift()?.()
    },
    ownedBy: (who: object) => owner === who
  }
}

/** Serves `db` on 127.0.0.1 (a free port) to any number of clients, one exchange at a time. */
const serve = (db: PGlite) =>
  Effect.async<net.Server, BillingError>((resume) => {
    const session = makeSession()
    const server = net.createServer((socket) => {
      const me = {}
      let buffer = Buffer.alloc(0)
      let group: Array<Buffer> = []
      let started = false
      let chain = Promise.resolve()
      socket.setNoDelay(true)

      const run = async (bytes: Buffer, endsExchange: boolean) => {
        await session.acquire(me)
        try {
          const out = await db.execProtocolRaw(new Uint8Array(bytes))
          if (socket.writable && out.length > 0) socket.write(out)
        } finally {
          // Keep the session through a transaction block, or a Flush that awaits the rest of its query.
          if (endsExchange && !db.isInTransaction()) session.release(me)
        }
      }
      const enqueue = (bytes: Buffer, endsExchange: boolean) => {
        chain = chain.then(() => run(bytes, endsExchange)).catch(() => {
          socket.destroy()
        })
      }

      socket.on("data", (data) => {
        buffer = Buffer.concat([buffer, data])
        while (true) {
          if (!started) {
            if (buffer.length < 8) return
            const length = buffer.readInt32BE(0)
            const code = buffer.readInt32BE(4)
            if (length === 8 && code === SSL_REQUEST) {
              socket.write("N")
              buffer = buffer.subarray(8)
              continue
            }
            if (length === 16 && code === CANCEL_REQUEST) {
              // Cancelling a running statement is not possible on PGlite (D16: nothing relies on it).
              socket.destroy()
              return
            }
            if (buffer.length < length) return
            started = true
            enqueue(buffer.subarray(0, length), true)
            buffer = buffer.subarray(length)
            continue
          }
          if (buffer.length < 5) return
          const length = 1 + buffer.readInt32BE(1)
          if (buffer.length < length) return
          const type = buffer[0]!
          const message = buffer.subarray(0, length)
          buffer = buffer.subarray(length)
          if (type === TERMINATE) {
            socket.end()
            return
          }
          group.push(message)
          if (type === SYNC || type === QUERY || type === FLUSH) {
            const bytes = Buffer.concat(group)
            group = []
            enqueue(bytes, type !== FLUSH)
          }
        }
      })
      socket.on("error", () => socket.destroy())
      socket.on("close", () => {
        // A client that leaves inside a transaction block must not keep the session.
        chain = chain.then(async () => {
          if (session.ownedBy(me)) {
            if (db.isInTransaction()) await db.exec("rollback").catch(() => undefined)
            session.release(me)
          }
        })
      })
    })
    server.once("error", (e) => resume(Effect.fail(new BillingError({ message: `serving PGlite failed: ${e}` }))))
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  })

/** Starts PGlite in memory and serves it on 127.0.0.1 (a free port); both stop with the scope. */
export const start = (options: Options) =>
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => PGlite.create(),
        catch: (e) => new BillingError({ message: `starting the embedded PGlite database failed: ${String(e)}` })
      }),
      (db) => Effect.promise(() => db.close())
    )
    yield* Effect.tryPromise({
      try: () => db.exec(`set idle_in_transaction_session_timeout = '${options.idleInTransactionTimeoutMs}ms'`),
      catch: (e) => new BillingError({ message: `configuring the embedded database failed: ${String(e)}` })
    })
    const server = yield* Effect.acquireRelease(
      serve(db),
      (server) =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          // Pooled clients close with the pool before this runs; never wait on a straggler.
          setTimeout(() => resume(Effect.void), 1000).unref()
        })
    )
    const address = server.address() as net.AddressInfo
    const embedded: Embedded = { host: address.address, port: address.port }
    return embedded
  })

/**
 * A `PgClient` on a fresh embedded database with a pool of `maxConnections`. The pool closes before
 * the server and the database stop.
 */
export const layer = (
  options: { readonly maxConnections: number; readonly idleInTransactionTimeoutMs: number },
  onStart: (embedded: Embedded) => Effect.Effect<void> = () => Effect.void
) =>
  Layer.unwrapScoped(
    Effect.gen(function*() {
      const embedded = yield* start({ idleInTransactionTimeoutMs: options.idleInTransactionTimeoutMs })
      yield* onStart(embedded)
      return PgClient.layer({
        host: embedded.host,
        port: embedded.port,
        username: "postgres",
        database: "postgres",
        maxConnections: options.maxConnections,
        applicationName: "monthly-billing"
      })
    })
  )
