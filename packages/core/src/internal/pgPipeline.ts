/**
 * A transaction's boundaries sent with its statements, on a node-postgres connection of
 * `@effect/sql-pg`: BEGIN with the transaction's first statement, COMMIT with its last, each pair in one
 * round trip. The messages of both (the extended protocol's Parse, Bind, Execute, with Describe for the
 * statement) go out at once, followed by one Sync; Postgres runs them in order, and an error skips
 * everything up to the Sync (so a COMMIT behind a failed statement never runs). Parameters stay
 * parameters.
 *
 * Both are node-postgres "submittables" (the interface `pg-cursor` and `pg-query-stream` use), handed to
 * the connection's `executeRaw`, which passes them to the client's `query` as they are.
 */
import type { Connection } from "@effect/sql/SqlConnection"
import { fromCauses } from "./classify.js"

/** The node-postgres protocol connection's writers a submittable uses. */
interface Wire {
  readonly stream: { readonly cork?: () => void; readonly uncork?: () => void }
  readonly parse: (
    query: { readonly text: string; readonly name: string; readonly types: ReadonlyArray<number> }
  ) => void
  readonly bind: (
    config: { readonly portal: string; readonly statement: string; readonly values: ReadonlyArray<string | null> }
  ) => void
  readonly describe: (message: { readonly type: "P"; readonly name: string }) => void
  readonly execute: (config: { readonly portal: string; readonly rows: number }) => void
  readonly sync: () => void
  readonly sendCopyFail: (message: string) => void
}

/** Parse, Bind and Execute of a statement without parameters or rows (BEGIN, COMMIT). */
const writeBare = (wire: Wire, text: string) => {
  wire.parse({ text, name: "", types: [] })
  wire.bind({ portal: "", statement: "", values: [] })
  wire.execute({ portal: "", rows: 0 })
}

/** How far a round trip got: nothing back yet, BEGIN done, the statement done, the COMMIT done. */
export type Reached = "sent" | "begun" | "statement" | "commit"

/** A final round trip's rows (the statement's, in text) and the COMMIT's command tag. */
export interface FinalResult {
  readonly rows: ReadonlyArray<Record<string, string | null>>
  /** `COMMIT`, or `ROLLBACK` when Postgres rolled the transaction back at its COMMIT. */
  readonly commitTag: string | undefined
}

/** A transaction's last statement and its COMMIT (and its BEGIN, when nothing ran before), as a submittable. */
export class FinalStatement {
  /** Set by the client's `query` from the callback that `@effect/sql-pg` passes. */
  callback: ((error: unknown, result?: FinalResult) => void) | undefined = undefined
  /** How far the round trip got, read after a failure to tell the statement's from the COMMIT's. */
  reached: Reached
  /** Whether it was written to the connection (a client that lost its connection fails it unsent). */
  submitted = false
  private fields: ReadonlyArray<string> = []
  private readonly rows: Array<Record<string, string | null>> = []
  private commitTag: string | undefined = undefined

  /**
   * `values` in Postgres's text form (`null` for NULL), as the statement's `$n` placeholders take them;
   * `begin`: the transaction has not begun, BEGIN goes first.
   */
  constructor(readonly text: string, readonly values: ReadonlyArray<string | null>, readonly begin: boolean) {
    this.reached = begin ? "sent" : "begun"
  }

  submit(wire: Wire): null {
    this.submitted = true
    wire.stream.cork?.()
    try {
      if (this.begin) writeBare(wire, "BEGIN")
      wire.parse({ text: this.text, name: "", types: [] })
      wire.bind({ portal: "", statement: "", values: this.values })
      wire.describe({ type: "P", name: "" })
      wire.execute({ portal: "", rows: 0 })
      writeBare(wire, "COMMIT")
      wire.sync()
    } finally {
      wire.stream.uncork?.()
    }
    return null
  }

  handleRowDescription(message: { readonly fields: ReadonlyArray<{ readonly name: string }> }) {
    this.fields = message.fields.map((field) => field.name)
  }

  handleDataRow(message: { readonly fields: ReadonlyArray<string | null> }) {
    const row: Record<string, string | null> = {}
    this.fields.forEach((name, i) => (row[name] = message.fields[i] ?? null))
    this.rows.push(row)
  }

  handleCommandComplete(message: { readonly text: string }) {
    if (this.reached === "sent") this.reached = "begun"
    else if (this.reached === "begun") this.reached = "statement"
    else {
      this.reached = "commit"
      this.commitTag = message.text
    }
  }

  handleEmptyQuery() {}

  handlePortalSuspended() {}

  handleCopyInResponse(wire: Wire) {
    wire.sendCopyFail("chunkwise: no COPY in a chunk's commit")
  }

  handleCopyData() {}

  /** A server error (the rest up to the Sync is skipped) or a broken connection: reported at once. */
  handleError(error: unknown) {
    this.finish(error)
  }

  handleReadyForQuery() {
    this.finish(undefined, { rows: this.rows, commitTag: this.commitTag })
  }

  private finish(error: unknown, result?: FinalResult) {
    const callback = this.callback
    this.callback = undefined
    callback?.(error ?? null, result)
  }
}

/** node-postgres's `Query`, as far as a subclass of it uses it. */
interface PgQuery {
  prepare(wire: Wire): void
  handleCommandComplete(message: unknown, wire: Wire): void
}
type PgQueryClass = new(config: {
  readonly text: string
  readonly values: ReadonlyArray<unknown>
  readonly rowMode?: "array" | undefined
  readonly queryMode: "extended"
}) => PgQuery

/** The node-postgres client under `connection`, when it is `@effect/sql-pg`'s. */
const clientOf = (connection: Connection) =>
  (connection as {
    readonly pg?: {
      readonly query?: unknown
      readonly connection?: unknown
      readonly pipeline?: unknown
      readonly _queryable?: unknown
      readonly _ending?: unknown
      readonly end?: unknown
      readonly constructor: { readonly Query?: unknown }
    }
  }).pg

/**
 * Whether `connection` is `@effect/sql-pg`'s over a node-postgres client, which takes a submittable in
 * place of a statement's text (not in node-postgres's pipeline mode, which refuses custom ones). On
 * another driver's, BEGIN and COMMIT go on their own.
 */
export const takesSubmittable = (connection: Connection): boolean => {
  const client = clientOf(connection)
  return typeof client?.query === "function" && typeof client.connection === "object" &&
    typeof client.constructor.Query === "function" && client.pipeline !== true
}

/** Whether `connection` is `@effect/sql-pg`'s over a node-postgres client. */
export const isNodePostgres = (connection: Connection): boolean => clientOf(connection) !== undefined

/**
 * Ends the node-postgres client under `connection` (a no-op on another driver): one that may still be
 * in a transaction. Its pool then drops it when it comes back instead of handing it out again.
 */
export const discard = (connection: Connection): void => {
  const client = clientOf(connection)
  if (typeof client?.end === "function") void (client.end as () => Promise<void>)().catch(() => {})
}

/** Whether the node-postgres client under `connection` lost its connection (it takes no more statements). */
export const isBroken = (connection: Connection): boolean => {
  const client = clientOf(connection)
  return client !== undefined && (client._queryable === false || client._ending === true)
}

/** Whether `error` (an SqlError, say) carries an error the server sent, as node-postgres reads it. */
export const isServerError = (error: unknown): boolean =>
  fromCauses(error, (cause) => typeof (cause as { severity?: unknown }).severity === "string" || undefined) === true

/**
 * SQLSTATEs Postgres ends a session with: an administrator's termination (`pg_terminate_backend`, a
 * shutdown) and `idle_session_timeout`. The backend writes them to its output after whatever it
 * completed (a round trip's BEGIN completes before anything else of it runs): first in a reply, they say
 * nothing of that round trip ran. (A pooler's own FATAL, PgBouncer's "server conn crashed?", is 08P01:
 * not among them.)
 */
const SESSION_ENDED = new Set(["57P01", "57P05"])

/**
 * Whether `error` carries a server error by which Postgres ended the session (`SESSION_ENDED`; read by
 * its code, which is not translated): the server closed the connection after sending it. Read before
 * the client has taken in the close, it is the reply to whatever was sent next.
 */
export const endsSession = (error: unknown): boolean =>
  fromCauses(error, (cause) => {
    const { code, severity } = cause as { readonly code?: unknown; readonly severity?: unknown }
    return typeof severity === "string" && typeof code === "string" ? SESSION_ENDED.has(code) : undefined
  }) === true

const withBegin = new WeakMap<object, new(config: ConstructorParameters<PgQueryClass>[0]) => PgQuery>()

/**
 * A statement with BEGIN before it in one round trip: node-postgres's own `Query` (so its rows are
 * parsed with the client's type parsers, as any statement's), which writes BEGIN's messages before its
 * own and takes BEGIN's completion for none of its results. `begun` says whether BEGIN completed.
 */
export const beginThen = (
  connection: Connection,
  config: ConstructorParameters<PgQueryClass>[0]
): PgQuery & { readonly begun: boolean } => {
  const Query = clientOf(connection)!.constructor.Query as PgQueryClass
  let BeginThen = withBegin.get(Query)
  if (BeginThen === undefined) {
    BeginThen = class extends Query {
      begun = false
      override prepare(wire: Wire) {
        writeBare(wire, "BEGIN")
        super.prepare(wire)
      }
      override handleCommandComplete(message: unknown, wire: Wire) {
        if (this.begun) super.handleCommandComplete(message, wire)
        else this.begun = true
      }
    }
    withBegin.set(Query, BeginThen)
  }
  return new BeginThen(config) as PgQuery & { readonly begun: boolean }
}
