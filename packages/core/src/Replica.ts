/**
 * Read replicas for steps. A step that reads a lot (a keyset scan of the month's records, say) can send
 * those reads to a replica and keep the primary for writes; the state store always stays on the
 * primary. Each query says where it goes:
 *
 * - `Replica.replica(sql => ...)` runs on the replica, outside the chunk's transaction. It does not see
 *   this chunk's own writes, nor anything committed on the primary that the replica has not replayed
 *   yet (replication lag).
 * - `Replica.primary(sql => ...)` runs on the step's own `SqlClient`, inside the chunk's transaction in
 *   mode `chunk`: it sees the chunk's own writes. Use it for any read that must.
 *
 * Why the replica query leaves the transaction: in `@effect/sql` one `TransactionConnection` is shared by
 * every `SqlClient` in scope (D4), so a replica client used inside a chunk transaction would silently run
 * on the primary's transaction connection.
 *
 * @since 0.1.0
 */
import { SqlClient } from "@effect/sql"
import { Context, Effect, Layer } from "effect"
import { outsideTransaction } from "./internal/outsideTransaction.js"

/** The replica's `SqlClient`, under its own tag so it never replaces the step's (primary) client. */
export class ReadReplica extends Context.Tag("@chunkwise/core/ReadReplica")<ReadReplica, SqlClient.SqlClient>() {}

/**
 * `ReadReplica` from a layer that builds the replica's client, e.g.
 * `Replica.layer(PgClient.layer({ url: Config.redacted("REPLICA_URL") }))`. The replica's `SqlClient`
 * stays inside this layer: the step's `SqlClient` (and the store's) remains the primary.
 */
export const layer = <E, R>(client: Layer.Layer<SqlClient.SqlClient, E, R>): Layer.Layer<ReadReplica, E, R> =>
  Layer.effect(ReadReplica, SqlClient.SqlClient).pipe(Layer.provide(client))

/** Runs `query` on the replica, outside the chunk's transaction (it does not see the chunk's writes). */
export const replica = <A, E, R>(
  query: (sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, ReadReplica | R> => Effect.flatMap(ReadReplica, (sql) => outsideTransaction(query(sql)))

/** Runs `query` on the primary, inside the chunk's transaction in mode `chunk` (it sees the chunk's writes). */
export const primary = <A, E, R>(
  query: (sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, SqlClient.SqlClient | R> => Effect.flatMap(SqlClient.SqlClient, query)
