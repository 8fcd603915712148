import { SqlClient } from "@effect/sql"
import { Context, Effect } from "effect"

/**
 * Runs `effect` with no transaction connection in its context, so its SQL never joins an open chunk
 * transaction (D4): every `SqlClient` in `@effect/sql` uses the one `TransactionConnection` it finds.
 */
export const outsideTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.mapInputContext(
    effect,
    (context: Context.Context<R>) => Context.omit(SqlClient.TransactionConnection)(context) as Context.Context<R>
  )
