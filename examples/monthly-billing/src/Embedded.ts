/**
 * The embedded default: PGlite (Postgres compiled to WebAssembly, in this process) served on a free
 * loopback port by its socket server, so `@effect/sql-pg` connects to it as to any Postgres.
 *
 * PGlite is one database connection. Its socket server accepts several clients and serves them one
 * transaction at a time: while a client has a transaction open, the others' statements wait until it
 * commits or rolls back. So every chunk transaction is isolated as on a real server, and the pool may
 * hold several connections; what it cannot give is parallelism (one statement runs at a time), and
 * lease heartbeats wait behind chunk commits, so the worker's lease must be far longer than any chunk.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Effect, Layer } from "effect"
import { BillingError } from "./Errors.js"

/** Where the embedded database listens. */
export interface Embedded {
  readonly host: string
  readonly port: number
}

/** Options of the embedded database. */
export interface Options {
  /** Connections the socket server accepts; size it to the client's pool or above. */
  readonly maxConnections: number
  /**
   * Set on the database's one session (every client of the socket server shares it), so workers see
   * a bound on idle transactions (D6).
   */
  readonly idleInTransactionTimeoutMs: number
}

/** Starts PGlite in memory and its socket server on 127.0.0.1 (a free port); both stop with the scope. */
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
    const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: options.maxConnections })
    yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => server.start(),
        catch: (e) => new BillingError({ message: `serving the embedded database on 127.0.0.1 failed: ${String(e)}` })
      }),
      () => Effect.promise(() => server.stop())
    )
    const [host, port] = server.getServerConn().split(":") as [string, string]
    const embedded: Embedded = { host, port: Number(port) }
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
      const embedded = yield* start({
        maxConnections: options.maxConnections + 1,
        idleInTransactionTimeoutMs: options.idleInTransactionTimeoutMs
      })
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
