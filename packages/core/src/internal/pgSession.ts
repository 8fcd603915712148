import { SqlClient, type SqlError } from "@effect/sql"
import type { Connection } from "@effect/sql/SqlConnection"
import { Context, Effect, type Either, Exit, Scope } from "effect"
import * as Errors from "../Errors.js"
import type { StateStoreShape, StoreSession } from "../StateStore.js"
import { sqlStateOf } from "./classify.js"
import { type FinalResult, FinalStatement, takesSubmittable } from "./pgFinalCommit.js"
import { storeUnavailable } from "./storeUnavailable.js"

/** The kept connection and the scope that gives it back to the pool. */
interface Kept {
  readonly connection: Connection
  readonly scope: Scope.CloseableScope
}

const unavailable = storeUnavailable("transaction")

/** How a session transaction ended before the session's own COMMIT: by its final statement. */
type Ending = "open" | "committed" | "rolled back" | "lost"

/** A server's error code (an error without one is the connection's, such as ECONNRESET). */
const SQLSTATE = /^[0-9A-Z]{5}$/

/** The session transaction open on each kept connection, which its final statement may end. */
const openOn = new WeakMap<Connection, { ending: Ending }>()

/**
 * Runs `statement` as the last statement of the session transaction open on `connection` (at depth 0)
 * and commits the transaction in the same round trip (`FinalStatement`). The session then sends no COMMIT
 * of its own. `values` in Postgres's text form.
 *
 * `undefined` when there is no such transaction (not a session's, inside a savepoint, or a driver
 * other than node-postgres): the caller runs the statement as any other, and the session commits.
 * Fails with the statement's `SqlError` after rolling the transaction back (its COMMIT did not run), or
 * with `CommitOutcomeUnknown` when the COMMIT failed or the connection broke before the reply.
 * Uninterruptible, as the session's COMMIT is.
 */
export const commitWith = (
  connection: Connection,
  depth: number,
  statement: string,
  values: ReadonlyArray<string | null>
): Effect.Effect<FinalResult["rows"], SqlError.SqlError | Errors.CommitOutcomeUnknown> | undefined => {
  const open = openOn.get(connection)
  if (open === undefined || open.ending !== "open" || depth !== 0 || !takesSubmittable(connection)) return undefined
  const final = new FinalStatement(statement, values)
  const ended = (
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
    if (final.reached === "sent" && SQLSTATE.test(sqlStateOf(error) ?? "")) {
      // The statement failed: the COMMIT behind it did not run. End the aborted transaction here, so the
      // caller can read on the connection (why the commit was refused) outside it.
      open.ending = "rolled back"
      return Effect.zipRight(
        connection.executeUnprepared("ROLLBACK", [], undefined).pipe(
          Effect.catchAll(() => Effect.sync(() => (open.ending = "lost")))
        ),
        Effect.fail(error)
      )
    }
    open.ending = "lost"
    return Effect.fail(new Errors.CommitOutcomeUnknown({ message: error.message }))
  }
  return Effect.uninterruptible(
    Effect.flatMap(Effect.either(connection.executeRaw(final as unknown as string, [])), ended)
  )
}

/**
 * A Postgres store session (`StateStoreShape.session`): its transactions run on one connection reserved
 * from the client's pool on first use and kept until `idle` or the session's scope ends. Each is BEGIN,
 * the effect with that connection as its `TransactionConnection` (so the user's SQL on the same client
 * joins it, as in `withTransaction`), then COMMIT, or ROLLBACK when the effect fails or is interrupted.
 * The effect's last statement may carry the COMMIT itself (`commitWith`): the session then sends none.
 * What `withTransaction` does per transaction beside that (a pool checkout and return, a scope, a span)
 * is done once per session instead: most of the store's CPU per chunk in a worker.
 *
 * Errors as `transaction`'s: a failed BEGIN is `StoreUnavailable`, a failed COMMIT
 * `CommitOutcomeUnknown`. A transaction that fails in any way gives its connection up (after a
 * ROLLBACK), so the work that follows a failure never holds one while it waits for the pool. A kept
 * connection that the database closed while idle (a restart) fails its BEGIN: the session takes a fresh
 * one and begins once more.
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
    const exec = (connection: Connection, statement: string) => connection.executeUnprepared(statement, [], undefined)
    /** BEGIN on the kept connection, or on a fresh one when the kept one fails it (closed while idle). */
    const begin: Effect.Effect<Connection, Errors.StoreUnavailable> = Effect.gen(function*() {
      const reused = kept?.connection
      const connection = reused ?? (yield* Effect.mapError(take, unavailable))
      const began = yield* Effect.either(exec(connection, "BEGIN"))
      if (began._tag === "Right") return connection
      yield* giveBack
      if (reused === undefined) return yield* Effect.fail(unavailable(began.left))
      const fresh = yield* Effect.mapError(take, unavailable)
      return yield* exec(fresh, "BEGIN").pipe(
        Effect.as(fresh),
        Effect.tapError(() => giveBack),
        Effect.mapError(unavailable)
      )
    })

    /**
     * Ends the transaction that failed (or whose COMMIT failed) and gives its connection up. A ROLLBACK is
     * tried twice (a cancel sent late for the chunk's statement can land on the first): a connection goes
     * back to the pool outside a transaction, or broken (the pool drops a broken one).
     */
    const rollBack = (connection: Connection) =>
      exec(connection, "ROLLBACK").pipe(
        Effect.retry({ times: 1 }),
        Effect.ignore,
        Effect.zipRight(giveBack)
      )

    const transaction = <A, E, R>(
      effect: Effect.Effect<A, E, R>
    ): Effect.Effect<A, E | Errors.StoreUnavailable | Errors.CommitOutcomeUnknown, R> =>
      Effect.withFiberRuntime((fiber) =>
        open || Context.getOption(fiber.currentContext, SqlClient.TransactionConnection)._tag === "Some"
          ? alone(effect)
          : Effect.uninterruptibleMask((restore) =>
            Effect.gen(function*() {
              open = true
              const connection = yield* begin
              const state = { ending: "open" as Ending }
              openOn.set(connection, state)
              const exit = yield* Effect.exit(restore(
                Effect.provideService(effect, SqlClient.TransactionConnection, [connection, 0]) as Effect.Effect<
                  A,
                  E,
                  R
                >
              ))
              openOn.delete(connection)
              if (state.ending !== "open") {
                // Its final statement ended the transaction (`commitWith`), committed or not.
                if (Exit.isFailure(exit) || state.ending !== "committed") yield* giveBack
                return yield* exit
              }
              // A failed chunk gives its connection back: what follows it (recording the failure, a backoff,
              // permits for the next attempt) takes connections from the pool and must not hold one meanwhile.
              if (Exit.isFailure(exit)) {
                yield* rollBack(connection)
                return yield* exit
              }
              const committed = yield* Effect.either(exec(connection, "COMMIT"))
              if (committed._tag === "Left") {
                yield* rollBack(connection)
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
