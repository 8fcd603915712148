/**
 * The Postgres store's session (`StateStoreShape.session`): transactions on one kept connection, with
 * the same outcomes as the store's `transaction` when a step fails, is interrupted, or its COMMIT fails,
 * and a kept connection that the database closed while idle replaced without failing a transaction.
 */
import { SqlClient, SqlError } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import {
  Cause,
  Deferred,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  Schedule,
  Schema,
  type Scope,
  Stream
} from "effect"
import pg from "pg"
import {
  Errors,
  Job,
  PgResourceLimiter,
  PgStateStore,
  QueueAdapter,
  type ResourceLimiter,
  Runner,
  StateStore,
  Step,
  Worker
} from "../src/index.js"
import { outsideTransaction } from "../src/internal/outsideTransaction.js"
import { commitWith, makeSession } from "../src/internal/pgSession.js"
import * as Telemetry from "../src/Telemetry.js"
import { awaitRun, freshSchema, liveWorker, pgClient } from "./pg.js"

/** Runs `body` with a session of the Postgres store and a fresh table `<app>.t (x int unique deferrable)`. */
const withSession = <A, E>(
  body: (
    session: StateStore.StoreSession,
    table: string,
    store: StateStore.StateStoreShape
  ) => Effect.Effect<A, E, SqlClient.SqlClient | Scope.Scope>,
  maxConnections = 4
) => {
  const store = freshSchema("cw_store")
  const app = freshSchema("cw_app")
  return Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.acquireRelease(
      Effect.zipRight(
        sql`create schema ${sql(app)}`,
        sql`create table ${sql(app)}.t (x integer unique deferrable initially deferred)`
      ),
      () =>
        Effect.orDie(Effect.all([
          sql`drop schema if exists ${sql(app)} cascade`,
          sql`drop schema if exists ${sql(store)} cascade`
        ]))
    )
    const shape = yield* Effect.provide(StateStore.StateStore, PgStateStore.layer({ schema: store }))
    if (shape.session === undefined) return yield* Effect.die(new Error("the Postgres store has no session"))
    return yield* body(yield* shape.session, `${app}.t`, shape)
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.merge(pgClient({ maxConnections }), Logger.minimumLogLevel(LogLevel.None)))
  )
}

const rows = (table: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ readonly x: number }>`select x from ${sql.unsafe(table)} order by x`
  ).pipe(Effect.map((found) => found.map((r) => r.x)))
const insert = (table: string, x: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`insert into ${sql.unsafe(table)} (x) values (${x})`)
const backendPid = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => Effect.map(sql<{ readonly pid: number }>`select pg_backend_pid() as pid`, ([row]) => row!.pid)
)

/**
 * Terminates backend `pid` and waits until it is gone (a client on it is then closed under it); true if
 * the backend was found.
 */
const terminate = (pid: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.gen(function*() {
      const [killed] = yield* sql<{ readonly ok: boolean }>`select pg_terminate_backend(${pid}) as ok`
      yield* sql`select 1 from pg_stat_activity where pid = ${pid}`.pipe(
        Effect.repeat({ until: (found) => found.length === 0, schedule: Schedule.spaced("10 millis") })
      )
      return killed?.ok === true
    }))

describe("a Postgres store session", () => {
  it.live("keeps one connection for its transactions; the user's writes commit with them or roll back", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const first = yield* session.transaction(Effect.zipRight(insert(table, 1), backendPid))
        const second = yield* session.transaction(Effect.zipRight(insert(table, 2), backendPid))
        expect(second).toBe(first)
        const failed = yield* Effect.exit(session.transaction(Effect.zipRight(insert(table, 3), Effect.fail("no"))))
        expect(failed).toEqual(Exit.fail("no"))
        expect(yield* rows(table)).toEqual([1, 2])
      })
    ))

  it.live("gives the connection back on idle and when its scope ends, so a pool of one is not starved", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        yield* session.transaction(insert(table, 1))
        yield* session.idle
        // Outside the session, on the pool's only connection: waits forever if the session still kept it.
        expect(yield* rows(table).pipe(Effect.timeout("5 seconds"))).toEqual([1])
        yield* session.transaction(insert(table, 2))
        yield* session.idle
        expect(yield* rows(table).pipe(Effect.timeout("5 seconds"))).toEqual([1, 2])
      }), 1))

  it.live("gives the connection back when a transaction fails, so what follows a failure gets the pool's", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        yield* session.transaction(insert(table, 1))
        expect(yield* Effect.exit(session.transaction(Effect.zipRight(insert(table, 2), Effect.fail("no"))))).toEqual(
          Exit.fail("no")
        )
        // No idle: on the pool's only connection, this waits forever if the failed transaction kept it.
        expect(yield* rows(table).pipe(Effect.timeout("5 seconds"))).toEqual([1])
        yield* session.transaction(insert(table, 3))
        yield* session.idle
        expect(yield* rows(table).pipe(Effect.timeout("5 seconds"))).toEqual([1, 3])
      }), 1))

  it.live("rolls an interrupted transaction back before the next one begins on the connection", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const inserted = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(session.transaction(
          insert(table, 1).pipe(Effect.zipRight(Deferred.succeed(inserted, undefined)), Effect.zipRight(Effect.never))
        ))
        yield* Deferred.await(inserted)
        yield* Fiber.interrupt(fiber)
        // Were the interrupted transaction still open, this COMMIT would commit its row too.
        yield* session.transaction(insert(table, 2))
        expect(yield* rows(table)).toEqual([2])
      })
    ))

  it.live("takes a fresh connection when the kept one was closed while idle, failing no transaction", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const pid = yield* session.transaction(Effect.zipRight(insert(table, 1), backendPid))
        // The kept connection is then closed under the session.
        expect(yield* terminate(pid)).toBe(true)
        const next = yield* session.transaction(Effect.zipRight(insert(table, 2), backendPid))
        expect(next).not.toBe(pid)
        // Again, with a first statement that has no parameters (its BEGIN goes alone).
        yield* terminate(next)
        const third = yield* session.transaction(Effect.zipLeft(backendPid, insert(table, 3)))
        expect(third).not.toBe(next)
        expect(yield* rows(table)).toEqual([1, 2, 3])
      })
    ))

  it.live("sends a lone final statement again on a fresh connection when the kept one was closed while idle", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const queries = yield* watchingQueries
        const pid = yield* session.transaction(Effect.zipRight(insert(table, 1), backendPid))
        const kept = queries.lastClient()
        yield* terminate(pid)
        // Until the client has taken in the close. (Sent before that, the statement is written to a
        // connection that is closing, and whether the database ran it is unknown: CommitOutcomeUnknown.)
        yield* Effect.sync(() => kept._queryable === false || kept._ending === true).pipe(
          Effect.repeat({ until: (closed) => closed, schedule: Schedule.spaced("10 millis") })
        )
        // The transaction's one statement is its final one (an empty chunk's commit): BEGIN, it and COMMIT
        // in one round trip, refused unsent by the client that lost its connection, so sent again.
        const status = yield* session.transaction(
          endWith(`insert into ${table} (x) values ($1) returning 'ok' as status`, ["2"])
        )
        expect(status).toEqual([{ status: "ok" }])
        yield* session.transaction(insert(table, 3))
        expect(yield* rows(table)).toEqual([1, 2, 3])
      })
    ))

  it.live("fails a lone final statement as not run, not as unknown, when no connection can be taken to send it again", () =>
    withSession((_, table, store) =>
      Effect.gen(function*() {
        const client = yield* SqlClient.SqlClient
        // A pool that cannot hand out a connection while `refusing` (a database down, say).
        let refusing = false
        const pool = {
          reserve: Effect.suspend(() =>
            refusing
              ? Effect.fail(new SqlError.SqlError({ message: "the pool is out of connections" }))
              : client.reserve
          )
        } as SqlClient.SqlClient
        const session = yield* makeSession(pool, store.transaction)
        const terminatedUnread = terminatedUnreadIn(session, yield* watchingQueries)
        yield* session.transaction(insert(table, 1))
        // BEGIN, the statement and COMMIT, answered by the FATAL of a backend that ran none of it; the
        // session would send them again on a fresh connection, but the pool has none. (The session keeps
        // its connection: only that second sending takes one.)
        const failed = yield* untilTheFatalIsRead(
          (n) =>
            terminatedUnread(Effect.zipRight(
              Effect.sync(() => (refusing = true)),
              session.transaction(endWith(`insert into ${table} (x) values ($1) returning x`, [String(2 + n)]))
            )).pipe(Effect.ensuring(Effect.sync(() => (refusing = false)))),
          (exit) =>
            Exit.isFailure(exit) &&
            Cause.failureOption(exit.cause).pipe(Option.exists((error) => error instanceof SqlError.SqlError))
        )
        // A connection failure (transient: the worker retries the chunk), not CommitOutcomeUnknown.
        expect(Exit.isFailure(failed) && Cause.failureOption(failed.cause)).toEqual(
          Option.some(expect.objectContaining({ _tag: "SqlError", cause: expect.objectContaining({ code: "08006" }) }))
        )
        yield* session.transaction(insert(table, 7))
        expect(yield* rows(table)).toEqual([1, 7])
      })
    ))

  it.live("sends a first round trip again when its reply is the server's termination, read before the close", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const terminatedUnread = terminatedUnreadIn(session, yield* watchingQueries)
        // BEGIN with the step's first statement (nothing commits with them)...
        yield* terminatedUnread(session.transaction(insert(table, 1)))
        // ...and BEGIN, a lone final statement and COMMIT (a FATAL before BEGIN completed: none of it ran).
        const sent = yield* untilTheFatalIsRead(
          (n) =>
            terminatedUnread(session.transaction(
              endWith(`insert into ${table} (x) values ($1) returning x`, [String(2 + n)])
            )),
          Exit.isSuccess
        )
        expect(Exit.isSuccess(sent)).toBe(true)
        const [{ x }] = Exit.isSuccess(sent) ? sent.value as Array<{ readonly x: string }> : [{ x: "" }]
        // Only the try whose FATAL was read ran (on a fresh connection); the others reached no backend.
        expect(yield* rows(table)).toEqual([1, Number(x)])
      })
    ))

  it.live("reports a failed COMMIT as CommitOutcomeUnknown and goes on with another connection", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        // A deferred unique constraint fails at COMMIT, not at the insert.
        const failed = yield* Effect.exit(session.transaction(Effect.zipRight(insert(table, 1), insert(table, 1))))
        expect(Exit.isFailure(failed) && failed.cause._tag === "Fail" && failed.cause.error).toBeInstanceOf(
          Errors.CommitOutcomeUnknown
        )
        yield* session.transaction(insert(table, 2))
        expect(yield* rows(table)).toEqual([2])
      })
    ))

  it.live("tells the store's own transaction's failed COMMIT (outcome unknown) from a step's SQL error or defect", () =>
    withSession((session, table, store) =>
      Effect.gen(function*() {
        const commitFailed = yield* Effect.exit(store.transaction(Effect.zipRight(insert(table, 1), insert(table, 1))))
        expect(Exit.isFailure(commitFailed) && commitFailed.cause._tag === "Fail" && commitFailed.cause.error)
          .toBeInstanceOf(Errors.CommitOutcomeUnknown)
        // The step's own statement fails and the step dies of it: its defect, not a COMMIT's.
        const divide = Effect.flatMap(SqlClient.SqlClient, (sql) => sql`select 1 / 0`)
        const stepDied = yield* Effect.exit(store.transaction(Effect.zipRight(insert(table, 2), Effect.orDie(divide))))
        expect(Exit.isFailure(stepDied) && stepDied.cause._tag === "Die" && stepDied.cause.defect).toMatchObject({
          _tag: "SqlError"
        })
        expect(yield* rows(table)).toEqual([])
        // The step fails as its connection is lost, so ROLLBACK fails too: the step's failure stands, as
        // through the session.
        const terminate = Effect.flatMap(
          SqlClient.SqlClient,
          (sql) => sql`select pg_terminate_backend(pg_backend_pid())`
        )
        for (const run of [store.transaction, session.transaction]) {
          const lost = yield* Effect.exit(run(Effect.zipRight(insert(table, 3), terminate)))
          expect(Exit.isFailure(lost) && lost.cause._tag === "Fail" && lost.cause.error).toMatchObject({
            _tag: "SqlError"
          })
        }
        expect(yield* rows(table)).toEqual([])
      })
    ))

  it.live("runs a transaction begun inside one of its own as a savepoint of it", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        yield* session.transaction(Effect.gen(function*() {
          yield* insert(table, 1)
          yield* Effect.exit(session.transaction(Effect.zipRight(insert(table, 2), Effect.fail("inner"))))
          yield* insert(table, 3)
        }))
        expect(yield* rows(table)).toEqual([1, 3])
      })
    ))
})

/** Runs `statement` through `commitWith` on the session transaction's connection, or dies if it has none. */
const endWith = (statement: string, values: ReadonlyArray<string | null>) =>
  Effect.flatMap(
    Effect.serviceOption(SqlClient.TransactionConnection),
    (open) =>
      (Option.isSome(open) ? commitWith(open.value[0], open.value[1], statement, values) : undefined) ??
        Effect.dieMessage("commitWith: no session transaction")
  )
/** node-postgres's client, with the internals these tests watch. */
type KeptClient = pg.Client & {
  readonly _queryable?: boolean
  readonly _ending?: boolean
  readonly _activeQuery?: unknown
  readonly connection: { readonly stream: { pause(): void; resume(): void } }
}
/**
 * Watches the round trips node-postgres clients start (their `query` calls) in this scope:
 * `roundTrips()` gives the count since it was last called, `lastClient()` the client of the latest one.
 */
const watchingQueries = Effect.acquireRelease(
  Effect.sync(() => {
    const query = pg.Client.prototype.query
    let count = 0
    let last: KeptClient | undefined
    const record = (client: pg.Client) => {
      count += 1
      last = client
    }
    pg.Client.prototype.query = function(this: pg.Client, ...args: Array<unknown>) {
      record(this)
      return (query as (...a: Array<unknown>) => unknown).apply(this, args)
    } as typeof query
    return {
      query,
      roundTrips: () => {
        const n = count
        count = 0
        return n
      },
      lastClient: () => last!
    }
  }),
  ({ query }) => Effect.sync(() => (pg.Client.prototype.query = query))
)
/**
 * Terminates the backend of `session`'s kept connection while its client reads nothing, runs
 * `transaction`, and lets the client read once the round trip is on the wire: the server's FATAL
 * (57P01), sent while the connection was idle, is then the first reply to it.
 */
const terminatedUnreadIn =
  (session: StateStore.StoreSession, queries: Effect.Effect.Success<typeof watchingQueries>) =>
  <A, E>(transaction: Effect.Effect<A, E, SqlClient.SqlClient>) =>
    Effect.gen(function*() {
      const pid = yield* session.transaction(backendPid)
      const kept = queries.lastClient()
      kept.connection.stream.pause()
      yield* terminate(pid)
      const fiber = yield* Effect.fork(transaction)
      // Until it is on the wire, or already over (a write that met the closed socket fails it at once,
      // and the session sends it again elsewhere).
      yield* Effect.zipWith(
        Effect.sync(() => kept._activeQuery != null),
        Fiber.poll(fiber),
        (sent, done) => sent || Option.isSome(done)
      ).pipe(Effect.repeat({ until: (ready) => ready, schedule: Schedule.spaced("1 millis") }))
      kept.connection.stream.resume()
      return yield* Fiber.join(fiber)
    })
/**
 * Runs `attempt` (given its try's number, from 0) until its exit is one `read` accepts, five tries at most;
 * every other try must have failed with CommitOutcomeUnknown. A round trip written to a terminated
 * backend's socket draws a reset, and when the reset overtakes the FATAL the client has not read yet,
 * the kernel drops the FATAL: the client reads ECONNRESET, after which it cannot know whether anything
 * ran (a try in about fifteen here). Returns the last try's exit.
 */
const untilTheFatalIsRead = <A, E, R>(
  attempt: (n: number) => Effect.Effect<A, E, R>,
  read: (exit: Exit.Exit<A, E>) => boolean
): Effect.Effect<Exit.Exit<A, E>, never, R> => {
  const tryFrom = (n: number): Effect.Effect<Exit.Exit<A, E>, never, R> =>
    Effect.flatMap(Effect.exit(attempt(n)), (exit) => {
      if (read(exit) || n === 4) return Effect.succeed(exit)
      expect(Exit.isFailure(exit) && Cause.failureOption(exit.cause)).toEqual(
        Option.some(expect.any(Errors.CommitOutcomeUnknown))
      )
      return tryFrom(n + 1)
    })
  return tryFrom(0)
}
/** The transaction id of the transaction open on the connection, `null` outside one (or before a write). */
const openTransactionId = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ readonly xid: string | null }>`select pg_current_xact_id_if_assigned()::text as xid`,
    ([row]) => row!.xid
  ))

describe("a Postgres session transaction's BEGIN and COMMIT, sent with its first and last statements", () => {
  it.live("sends BEGIN with the first statement: the transaction starts as that statement arrives", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // now() is the transaction's start; a BEGIN sent on its own would start it 100 ms before the statement.
        const [times] = yield* session.transaction(Effect.zipRight(
          Effect.sleep("100 millis"),
          sql<{ readonly gap: number }>`
            select (extract(epoch from statement_timestamp() - now()) * 1000)::float8 as gap, ${1}::int as one`
        ))
        expect(times!.gap).toBeLessThan(50)
        yield* session.transaction(insert(table, 1))
        expect(yield* rows(table)).toEqual([1])
      })
    ))

  it.live("takes one round trip for BEGIN and the first statement, one for the last statement and COMMIT", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const trips = (yield* watchingQueries).roundTrips
        yield* session.transaction(Effect.zipRight(insert(table, 1), endWith("select 'ok' as status", [])))
        expect(trips()).toBe(2)
        yield* session.transaction(Effect.zipRight(insert(table, 2), insert(table, 3)))
        expect(trips()).toBe(3) // the second insert, and COMMIT on its own
        yield* session.transaction(endWith("select 'ok' as status", []))
        expect(trips()).toBe(1)
        yield* session.transaction(Effect.void)
        expect(trips()).toBe(0)
        expect(yield* rows(table)).toEqual([1, 2, 3])
      })
    ))

  it.live("runs a first statement without parameters, a values read and a stream inside the transaction", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        // Each first statement is inside the transaction: the failure after it rolls it back.
        const firsts = [
          sql.unsafe(`insert into ${table} (x) values (1)`),
          sql.unsafe(`insert into ${table} (x) values ($1) returning x`, [2]).values,
          Stream.runDrain(sql.unsafe(`insert into ${table} (x) values ($1) returning x`, [3]).stream)
        ]
        for (const first of firsts) {
          expect(yield* Effect.flip(session.transaction(Effect.zipRight(first, Effect.fail("after"))))).toBe("after")
        }
        expect(yield* rows(table)).toEqual([])
        expect(yield* session.transaction(sql.unsafe(`insert into ${table} (x) values ($1) returning x`, [4]).values))
          .toEqual([[4]])
        expect(yield* rows(table)).toEqual([4])
      })
    ))

  it.live("commits in the statement's round trip: its rows come back, and nothing may follow it", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const seen = yield* session.transaction(Effect.gen(function*() {
          yield* insert(table, 1)
          // Within the transaction, before its last statement: the insert holds a transaction id.
          expect(yield* openTransactionId).not.toBeNull()
          expect(yield* outsideTransaction(rows(table))).toEqual([])
          expect(yield* endWith("select $1::text as status, $2::int as n", ["ok", "7"])).toEqual([{
            status: "ok",
            n: "7"
          }])
          // Committed already, before the transaction's effect ends: another connection sees the row.
          expect(yield* outsideTransaction(rows(table))).toEqual([1])
          return yield* Effect.flip(openTransactionId)
        }))
        expect(seen.message).toContain("nothing may follow")
        // A savepoint (depth 1) is not a transaction's end: no commitWith there.
        yield* session.transaction(Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (open) =>
          Effect.sync(() =>
            expect(commitWith(Option.getOrThrow(open)[0], 1, "select 1", [])).toBeUndefined()
          )))
        yield* session.transaction(insert(table, 2))
        expect(yield* rows(table)).toEqual([1, 2])
      })
    ))

  it.live("rolls back when the statement fails (the COMMIT behind it does not run), and the session goes on", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        const failed = yield* Effect.flip(session.transaction(Effect.gen(function*() {
          yield* insert(table, 1)
          return yield* endWith("select 1 / $1::int as status", ["0"])
        })))
        expect(failed).toMatchObject({ _tag: "SqlError" })
        yield* session.transaction(Effect.zipRight(insert(table, 2), endWith("select 'ok' as status", [])))
        expect(yield* rows(table)).toEqual([2])
      })
    ))

  it.live("reports a COMMIT that fails behind the statement as CommitOutcomeUnknown; nothing commits", () =>
    withSession((session, table) =>
      Effect.gen(function*() {
        // The deferred unique constraint fails at the COMMIT sent with the statement.
        const failed = yield* Effect.flip(session.transaction(Effect.gen(function*() {
          yield* insert(table, 1)
          yield* insert(table, 1)
          return yield* endWith("select 'ok' as status", [])
        })))
        expect(failed).toBeInstanceOf(Errors.CommitOutcomeUnknown)
        yield* session.transaction(Effect.zipRight(insert(table, 2), endWith("select 'ok' as status", [])))
        expect(yield* rows(table)).toEqual([2])
      })
    ))
})

/**
 * Runs a two-partition job (a `chunk`-mode step of three chunks, then a `none`-mode step) on a worker
 * whose store's sessions are watched; with `limited`, the chunked step loads a resource limited on
 * Postgres. Returns what the worker did with its sessions.
 */
const watchedRun = (limited: boolean) => {
  const schema = freshSchema("cw_store")
  const seen = { transactions: 0, idles: 0, keptAtNoneStep: [] as Array<boolean> }
  let kept = false
  const watched = Layer.effect(
    StateStore.StateStore,
    Effect.map(StateStore.StateStore, (store): StateStore.StateStoreShape => ({
      ...store,
      session: Effect.map(store.session!, (session) => ({
        transaction: (effect) =>
          Effect.tap(session.transaction(effect), () => Effect.sync(() => (seen.transactions += 1, kept = true))),
        idle: Effect.tap(session.idle, () => Effect.sync(() => (seen.idles += 1, kept = false)))
      }))
    }))
  ).pipe(Layer.provideMerge(PgStateStore.layer({ schema })))
  const job = Job.make({
    name: "session-job",
    params: Schema.Struct({ label: Schema.String }),
    partitions: () => ["a", "b"],
    steps: (step) => [
      step.chunked("count", {
        cursor: Schema.Struct({ n: Schema.Number }),
        start: { n: 0 },
        chunkSize: 1,
        transaction: "chunk",
        resources: limited ? ["db"] : [],
        process: ({ cursor }) => Effect.succeed(Step.advance(cursor.n >= 2 ? Step.done : { n: cursor.n + 1 }, 1))
      }),
      step.single("notify", {
        transaction: "none",
        run: () => Effect.sync(() => seen.keptAtNoneStep.push(kept))
      })
    ],
    concurrency: { perWorker: 1 }
  })
  return Effect.as(
    runOnPostgres(
      schema,
      job,
      Layer.merge(watched, limited ? PgResourceLimiter.layer({ schema }) : Layer.empty),
      limited ? { limits: { db: { inFlight: 1 } } } : {}
    ),
    seen
  )
}

/**
 * Runs `job` once, to success, on a worker of concurrency 1 over the Postgres store in `schema` (given
 * by `layers`, beside an in-memory queue), then `inspect` while the layers are still up, and drops the
 * schema afterwards.
 */
const runOnPostgres = (
  schema: string,
  job: Job.Any,
  layers: Layer.Layer<StateStore.StateStore, unknown, SqlClient.SqlClient>,
  options: { readonly limits?: ResourceLimiter.Limits; readonly inspect?: () => void } = {}
) =>
  Effect.gen(function*() {
    const limits = options.limits === undefined ? {} : { limits: options.limits }
    yield* Worker.make({ jobs: [job], ...liveWorker, concurrency: 1, ...limits })
    const { runId } = yield* Runner.start(job, { label: "once" })
    expect((yield* awaitRun(runId)).run.status).toBe("succeeded")
    options.inspect?.()
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.mergeAll(layers, QueueAdapter.layerMemory(), Logger.minimumLogLevel(LogLevel.None))),
    Effect.ensuring(
      Effect.orDie(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`drop schema if exists ${sql(schema)} cascade`))
    ),
    Effect.provide(pgClient())
  ) as Effect.Effect<void, unknown>

describe("a worker on the Postgres store", () => {
  it.live("runs a unit's chunk-mode chunks through one session and gives its connection back before a none step", () =>
    Effect.gen(function*() {
      const seen = yield* watchedRun(false)
      // Three chunks a partition, each its own transaction through the unit's session.
      expect(seen.transactions).toBe(6)
      expect(seen.keptAtNoneStep).toEqual([false, false])
    }))

  it.live("hangs each chunk's statements, the step's and its commit_chunk, under the chunk's span", () => {
    const spans = new InMemorySpanExporter()
    const schema = freshSchema("cw_store")
    const job = Job.make({
      name: "traced-session-job",
      params: Schema.Struct({ label: Schema.String }),
      partitions: () => ["a"],
      steps: (step) => [
        step.chunked("count", {
          cursor: Schema.Struct({ n: Schema.Number }),
          start: { n: 0 },
          chunkSize: 1,
          transaction: "chunk",
          process: ({ cursor }) =>
            Effect.flatMap(SqlClient.SqlClient, (sql) => sql`select ${cursor.n}::int as n`).pipe(
              Effect.as(Step.advance(cursor.n >= 1 ? Step.done : { n: cursor.n + 1 }, 1))
            )
        })
      ]
    })
    const traced = Layer.merge(
      PgStateStore.layer({ schema }),
      Telemetry.layer({ serviceName: "pg-session-test", spanProcessors: [new SimpleSpanProcessor(spans)] })
    )
    return runOnPostgres(schema, job, traced, {
      // Read before the SDK shuts down with the layers (its exporter forgets what it held).
      inspect: () => {
        const finished = spans.getFinishedSpans()
        const chunks = finished.filter((span) => span.name === "chunkwise.chunk")
        expect(chunks).toHaveLength(2)
        for (const chunk of chunks) {
          const statements = finished
            .filter((span) =>
              span.name === "sql.execute" && span.parentSpanContext?.spanId === chunk.spanContext().spanId
            )
            .map((span) => String(span.attributes["db.query.text"]))
          expect(statements).toHaveLength(2)
          expect(statements[0]).toContain("select $1::int as n")
          expect(statements[1]).toContain(`"${schema}".commit_chunk_last(`)
        }
      }
    })
  })

  it.live("gives the kept connection back before each chunk that waits for resource permits", () =>
    Effect.gen(function*() {
      const seen = yield* watchedRun(true)
      expect(seen.transactions).toBe(6)
      // Before each of the six chunks (the permits are taken on the pool), and before each none step.
      expect(seen.idles).toBeGreaterThanOrEqual(8)
    }))
})
