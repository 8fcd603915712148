import { SqlClient, SqlError } from "@effect/sql"
import type { Connection } from "@effect/sql/SqlConnection"
import { Context, Effect, type Either, Exit, Scope, Stream } from "effect"
import * as Errors from "../Errors.js"
import type { StateStoreShape, StoreSession } from "../StateStore.js"
import {
  beginThen,
  discard,
  endsSession,
  type FinalResult,
  FinalStatement,
  isBroken,
  isNodePostgres,
  isServerError,
  takesSubmittable
} from "./pgPipeline.js"
import { storeUnavailable } from "./storeUnavailable.js"

/** The kept connection and the scope that gives it back to the pool. */
interface Kept {
  readonly connection: Connection
  readonly scope: Scope.CloseableScope
}

const unavailable = storeUnavailable("transaction")

/** How a session transaction ended before the session's own COMMIT: by its final statement. */
type Ending = "open" | "committed" | "rolled back" | "lost"

/** A session transaction: on `connection`, its BEGIN not sent while `pending`, ended by a final statement or not. */
interface Open {
  connection: Connection
  /** Nothing sent yet: BEGIN goes with the first statement. */
  pending: boolean
  /** The connection was kept from an earlier transaction (the database may have closed it since). */
  reused: boolean
  ending: Ending
  /**
   * Sends the transaction's first round trip (`send`, with BEGIN), and sends it once more on a fresh
   * connection when it failed and `lostBeforeBegin` says the kept one was lost before any of it ran.
   */
  readonly sendFirst: <A>(
    send: (connection: Connection) => Effect.Effect<A, SqlError.SqlError>,
    lostBeforeBegin: (error: SqlError.SqlError) => boolean
  ) => Effect.Effect<A, SqlError.SqlError>
}

const exec = (connection: Connection, statement: string) => connection.executeUnprepared(statement, [], undefined)
/** ROLLBACK, tried twice (a cancel sent late for the chunk's statement can land on the first). */
const rollBackOn = (connection: Connection) => exec(connection, "ROLLBACK").pipe(Effect.retry({ times: 1 }))

/** The session transaction behind each connection a session's transaction gives its effect. */
const openOn = new WeakMap<Connection, Open>()

/**
 * Runs `statement` as the last statement of the session transaction behind `connection` (at depth 0)
 * and commits the transaction in the same round trip (`FinalStatement`; with its BEGIN too, when it is
 * the transaction's first statement). The session then sends no COMMIT of its own. `values` in Postgres's
 * text form.
 *
 * `undefined` when there is no such transaction (not a session's, inside a savepoint, or a driver
 * other than node-postgres): the caller runs the statement as any other, and the session commits.
 * Fails with the statement's `SqlError` after rolling the transaction back (its COMMIT did not run), or
 * with `CommitOutcomeUnknown` when the COMMIT failed or the connection broke before the reply. As the
 * transaction's first round trip, on a kept connection the database closed while idle, it is sent once
 * more on a fresh one when the client refused it unsent or its first reply was Postgres ending the
 * session (`endsSession`: nothing before it completed), and fails with a connection failure (SQLSTATE
 * 08006, transient) when the pool has none to give; written to a connection that closed without a reply
 * (or reset before the client read it), the database might have run all of it, COMMIT included.
 * Uninterruptible, as the session's COMMIT is.
 */
export const commitWith = (
  connection: Connection,
  depth: number,
  statement: string,
  values: ReadonlyArray<string | null>
): Effect.Effect<FinalResult["rows"], SqlError.SqlError | Errors.CommitOutcomeUnknown> | undefined => {
  const open = openOn.get(connection)
  if (open === undefined || open.ending !== "open" || depth !== 0 || !takesSubmittable(open.connection)) {
    return undefined
  }
  const final = Effect.suspend(() => {
    // Read when it runs: what the caller sends before it (quarantine rows) may carry the BEGIN.
    const begin = open.pending
    let sent: FinalStatement | undefined = undefined
    const send = (connection: Connection) =>
      Effect.suspend(() => {
        sent = new FinalStatement(statement, values, begin)
        return connection.executeRaw(sent as unknown as string, [])
      })
    open.pending = false
    const round = begin
      ? open.sendFirst(send, (error) => {
        // Refused unsent, or answered by the close of a connection that ran none of it (nothing completed).
        const ranNone = sent?.reached === "sent" &&
          ((!sent.submitted && isBroken(open.connection)) || endsSession(error))
        // As if never sent: when no connection can be taken to send it again, nothing of it ran.
        if (ranNone) sent = undefined
        return ranNone
      })
      : send(open.connection)
    return Effect.flatMap(Effect.either(round), (outcome) => ended(sent, outcome))
  })
  const ended = (
    sent: FinalStatement | undefined,
    outcome: Either.Either<unknown, SqlError.SqlError>
  ): Effect.Effect<FinalResult["rows"], SqlError.SqlError | Errors.CommitOutcomeUnknown> => {
    if (outcome._tag === "Right") {
      const { commitTag, rows } = outcome.right as FinalResult
      if (commitTag === "COMMIT") {
        open.ending = "committed"
        return Effect.succeed(rows)
      }
      open.ending = "rolled back"
      return Effect.fail(
        new Errors.CommitOutcomeUnknown({
          message: `the transaction ended ${commitTag ?? "without a reply"} at COMMIT`
        })
      )
    }
    const error = outcome.left
    if (sent === undefined) {
      // Not sent again after a lost connection: none could be taken (the pool's failure, transient).
      // Nothing of the transaction ran, and there is no connection to end it on.
      open.ending = "rolled back"
      return Effect.fail(error)
    }
    if (!sent.submitted || (sent.reached !== "commit" && sent.reached !== "statement" && isServerError(error))) {
      // Never sent (the client had lost its connection), or the server failed the statement (or BEGIN):
      // the COMMIT behind it did not run. End the aborted transaction here, so the caller can read on
      // the connection (why the commit was refused) outside it.
      open.ending = "rolled back"
      return Effect.zipRight(
        rollBackOn(open.connection).pipe(
          // Statements after it (the caller's read of why) begin a transaction the session rolls back.
          Effect.matchEffect({
            onFailure: () => Effect.sync(() => (open.ending = "lost")),
            onSuccess: () => Effect.sync(() => (open.pending = true))
          })
        ),
        Effect.fail(error)
      )
    }
    open.ending = "lost"
    return Effect.fail(new Errors.CommitOutcomeUnknown({ message: error.message }))
  }
  return Effect.uninterruptible(final)
}

/**
 * A Postgres store session (`StateStoreShape.session`): its transactions run on one connection reserved
 * from the client's pool on first use and kept until `idle` or the session's scope ends. Each is BEGIN,
 * the effect with that connection as its `TransactionConnection` (so the user's SQL on the same client
 * joins it, as in `withTransaction`), then COMMIT, or ROLLBACK when the effect fails or is interrupted.
 * What `withTransaction` does per transaction beside that (a pool checkout and return, a scope, a span)
 * is done once per session instead: most of the store's CPU per chunk in a worker.
 *
 * BEGIN goes with the transaction's first statement and COMMIT with its last (`commitWith`), each pair
 * in one round trip where the driver is node-postgres (`pgPipeline`); a transaction that sent nothing
 * sends neither.
 *
 * Errors as `transaction`'s: a failed COMMIT is `CommitOutcomeUnknown`. A transaction that fails in any
 * way gives its connection up (after a ROLLBACK), so the work that follows a failure never holds one
 * while it waits for the pool. A kept connection that the database closed while idle (a restart) fails
 * the BEGIN sent with the first statement: the session ends it, takes a fresh one and sends them once
 * more (they cannot have committed, no COMMIT went with them), so no transaction with a statement of its
 * own fails for it; a lone final statement (BEGIN, it and COMMIT) is sent again only when it surely did
 * not run (`commitWith`). A transaction whose final statement did not commit it is rolled back before its
 * connection goes back (the connection may still be live).
 */
export const makeSession = (
  client: SqlClient.SqlClient,
  alone: StateStoreShape["transaction"]
): Effect.Effect<StoreSession, never, Scope.Scope> =>
  Effect.gen(function*() {
    let kept: Kept | undefined = undefined
    let open = false
    const giveBack = Effect.suspend(() => {
      const k = kept
      kept = undefined
      return k === undefined ? Effect.void : Scope.close(k.scope, Exit.void)
    })
    yield* Effect.addFinalizer(() => giveBack)

    const take = Effect.gen(function*() {
      const scope = yield* Scope.make()
      const connection = yield* Scope.extend(client.reserve, scope).pipe(
        Effect.tapError(() => Scope.close(scope, Exit.void))
      )
      kept = { connection, scope }
      return connection
    })

    /**
     * `send` on the transaction's connection, BEGIN sent first (with it, by `send`) as nothing was yet.
     * When it fails and `lostBeforeBegin` says the kept connection was lost before BEGIN ran (closed while
     * idle), the connection is given up, a fresh one taken and `send` runs once more: nothing of it ran.
     */
    const sendFirst = <A>(
      tx: Open,
      send: (connection: Connection) => Effect.Effect<A, SqlError.SqlError>,
      lostBeforeBegin: (error: SqlError.SqlError) => boolean
    ): Effect.Effect<A, SqlError.SqlError> =>
      Effect.suspend(() => {
        tx.pending = false
        return Effect.catchAll(send(tx.connection), (error) => {
          if (!tx.reused || !lostBeforeBegin(error)) return Effect.fail(error)
          // Ended first: a client whose first reply was the server closing it may not know yet, and the
          // pool would hand it out again (to the `take` below, say).
          discard(tx.connection)
          return Effect.zipRight(giveBack, Effect.uninterruptible(take)).pipe(
            Effect.mapError((cause) =>
              new SqlError.SqlError({
                // Classified as the connection failure it follows (SQLSTATE 08006): transient.
                cause: { code: "08006", cause },
                message: "chunkwise: the kept connection was lost and no other could be taken for the transaction"
              })
            ),
            Effect.flatMap((fresh) => {
              tx.connection = fresh
              tx.reused = false
              return send(fresh)
            })
          )
        })
      })

    /** BEGIN alone, when the first statement cannot carry it (no parameters, a stream, another driver). */
    const beginAlone = (tx: Open) => {
      let began = false
      return sendFirst(
        tx,
        (connection) => Effect.tap(exec(connection, "BEGIN"), () => Effect.sync(() => (began = true))),
        // node-postgres tells a lost connection; on another driver, a BEGIN that failed is taken for one.
        (error) => !began && (isBroken(tx.connection) || endsSession(error) || !isNodePostgres(tx.connection))
      )
    }

    /** What a statement after the transaction's final one gets: nothing may follow that one. */
    const ended = new SqlError.SqlError({
      message: "chunkwise: a statement after the transaction's final one (its commit): nothing may follow it"
    })

    /** A statement on the transaction's connection: the first one carries BEGIN where it can. */
    const statement = <A>(
      tx: Open,
      sql: string,
      params: ReadonlyArray<unknown>,
      rowMode: "array" | undefined,
      read: (result: { readonly rows: ReadonlyArray<any> }) => A,
      plain: (connection: Connection) => Effect.Effect<A, SqlError.SqlError>
    ): Effect.Effect<A, SqlError.SqlError> =>
      Effect.suspend(() => {
        if (tx.ending === "committed" || tx.ending === "lost") return Effect.fail(ended)
        if (!tx.pending) return plain(tx.connection)
        if (params.length === 0 || !takesSubmittable(tx.connection)) {
          return Effect.zipRight(beginAlone(tx), Effect.suspend(() => plain(tx.connection)))
        }
        let query: { readonly begun: boolean } | undefined = undefined
        return sendFirst(
          tx,
          (connection) => {
            const withBegin = beginThen(connection, { text: sql, values: params, rowMode, queryMode: "extended" })
            query = withBegin
            return Effect.map(connection.executeRaw(withBegin as unknown as string, []), (result) =>
              read(result as never))
          },
          // Only a client that lost its connection (or whose first reply was the server closing it): a live
          // one may have run BEGIN and the statement.
          (error) =>
            query?.begun !== true && (isBroken(tx.connection) || endsSession(error))
        )
      })

    /** A statement's rows from its result, through the row transform when there is one. */
    const rowsOf =
      (transformRows: (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined) =>
      ({ rows }: { readonly rows: ReadonlyArray<any> }) => transformRows === undefined ? rows : transformRows(rows)

    /** The connection a transaction gives its effect: the kept one, with BEGIN sent with its first statement. */
    const connectionOf = (tx: Open): Connection => ({
      execute: (sql, params, transformRows) =>
        statement(tx, sql, params, undefined, rowsOf(transformRows), (c) => c.execute(sql, params, transformRows)),
      executeUnprepared: (sql, params, transformRows) =>
        statement(
          tx,
          sql,
          params,
          undefined,
          rowsOf(transformRows),
          (c) => c.executeUnprepared(sql, params, transformRows)
        ),
      executeRaw: (sql, params) =>
        statement(tx, sql, params, undefined, (result) => result, (connection) => connection.executeRaw(sql, params)),
      executeValues: (sql, params) =>
        statement(
          tx,
          sql,
          params,
          "array",
          ({ rows }) => rows as ReadonlyArray<ReadonlyArray<unknown>>,
          (connection) => connection.executeValues(sql, params)
        ),
      executeStream: (sql, params, transformRows) =>
        Stream.unwrap(Effect.suspend(() =>
          tx.ending === "committed" || tx.ending === "lost" ? Effect.fail(ended) : Effect.zipRight(
            tx.pending ? beginAlone(tx) : Effect.void,
            Effect.sync(() =>
              tx.connection.executeStream(sql, params, transformRows)
            )
          )
        ))
    })

    /**
     * Ends the transaction that failed (or whose COMMIT failed) and gives its connection up. A ROLLBACK is
     * tried twice (a cancel sent late for the chunk's statement can land on the first): a connection goes
     * back to the pool outside a transaction, or broken (the pool drops a broken one).
     */
    const rollBack = (connection: Connection) =>
      Effect.suspend(() =>
        // Only on the connection the session still keeps: one given up is another's by now.
        kept?.connection === connection
          ? rollBackOn(connection).pipe(
            // Still in a transaction, or lost: the pool must not hand it out again.
            Effect.catchAll(() => Effect.sync(() => discard(connection)))
          )
          : Effect.void
      ).pipe(Effect.zipRight(giveBack))

    const transaction = <A, E, R>(
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | Errors.StoreUnavailable | Errors.CommitOutcomeUnknown, R> =>
      Effect.withFiberRuntime((fiber) =>
        open || Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)._tag === "Some"
          ? alone(effect)
          : Effect.uninterruptibleMask((restore) =>
            Effect.gen(function*() {
              open = true
              const reused = kept?.connection
              const tx: Open = {
                connection: reused ?? (yield* Effect.mapError(take, unavailable)),
                pending: true,
                reused: reused !== undefined,
                ending: "open",
                sendFirst: (send, lostBeforeBegin) => sendFirst(tx, send, lostBeforeBegin)
              }
              const connection = connectionOf(tx)
              openOn.set(connection, tx)
              const exit = yield* Effect.exit(restore(
                Effect.provideService(effect, SqlClient.TransactionConnection, [connection, 0]) as Effect.Effect<
                  A,
                  E,
                  R
                >
              ))
              openOn.delete(connection)
              // A failed chunk gives its connection back: what follows it (recording the failure, a backoff,
              // permits for the next attempt) takes connections from the pool and must not hold one meanwhile.
              if (tx.pending && tx.ending === "open") {
                // Nothing was sent: nothing to commit or roll back.
                if (Exit.isFailure(exit)) yield* giveBack
                return yield* exit
              }
              if (tx.ending === "committed") {
                // Its final statement committed it (`commitWith`).
                if (Exit.isFailure(exit)) yield* giveBack
                return yield* exit
              }
              if (tx.ending !== "open") {
                // Its final statement did not commit it: the connection is rolled back (it may still be
                // live, its statement still running) and given up. An effect that swallowed that failure
                // does not make it a commit.
                yield* rollBack(tx.connection)
                if (Exit.isSuccess(exit)) {
                  return yield* tx.ending === "lost"
                    ? new Errors.CommitOutcomeUnknown({ message: "the transaction's final statement went unanswered" })
                    : unavailable(
                      new SqlError.SqlError({
                        message: "the transaction's final statement failed, and nothing committed"
                      })
                    )
                }
                return yield* exit
              }
              if (Exit.isFailure(exit)) {
                yield* rollBack(tx.connection)
                return yield* exit
              }
              const committed = yield* Effect.either(exec(tx.connection, "COMMIT"))
              if (committed._tag === "Left") {
                yield* rollBack(tx.connection)
                return yield* new Errors.CommitOutcomeUnknown({ message: committed.left.message })
              }
              return exit.value
            }).pipe(Effect.ensuring(Effect.sync(() => (open = false))))
          )
      )

    /** Nothing to give back while a transaction of the session is open: it ends with the transaction. */
    const idle = Effect.suspend(() => open ? Effect.void : giveBack)

    return { transaction, idle }
  })
