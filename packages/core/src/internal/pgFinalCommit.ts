/**
 * A transaction's last statement and its COMMIT in one round trip, on a node-postgres connection of
 * `@effect/sql-pg`: Parse, Bind, Describe and Execute of the statement, then Parse, Bind and Execute of
 * COMMIT, and one Sync, written at once. Postgres runs them in order; an error in the statement skips
 * everything up to the Sync, so the COMMIT never runs and the transaction stays aborted. Parameters stay
 * parameters (the extended protocol), as with every other statement.
 *
 * It is a node-postgres "submittable" (the interface `pg-cursor` and `pg-query-stream` use), handed to
 * the connection's `execute`, which passes it to the client's `query` as it is.
 */
import type { Connection } from "@effect/sql/SqlConnection"

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

/** Where the round trip stopped: nothing back yet, the statement done, or the COMMIT done too. */
export type Reached = "sent" | "statement" | "commit"

/** The round trip's rows (the statement's, in text) and the COMMIT's command tag. */
export interface FinalResult {
  readonly rows: ReadonlyArray<Record<string, string | null>>
  /** `COMMIT`, or `ROLLBACK` when Postgres rolled the transaction back at its COMMIT. */
  readonly commitTag: string | undefined
}

/** The statement and COMMIT of one round trip, as a node-postgres submittable. */
export class FinalStatement {
  /** Set by the client's `query` from the callback that `@effect/sql-pg` passes. */
  callback: ((error: unknown, result?: FinalResult) => void) | undefined = undefined
  /** How far the round trip got, read after a failure to tell the statement's from the COMMIT's. */
  reached: Reached = "sent"
  private fields: ReadonlyArray<string> = []
  private readonly rows: Array<Record<string, string | null>> = []
  private commitTag: string | undefined = undefined

  /** `values` in Postgres's text form (`null` for NULL), as the statement's `$n` placeholders take them. */
  constructor(readonly text: string, readonly values: ReadonlyArray<string | null>) {}

  submit(wire: Wire): null {
    wire.stream.cork?.()
    try {
      wire.parse({ text: this.text, name: "", types: [] })
      wire.bind({ portal: "", statement: "", values: this.values })
      wire.describe({ type: "P", name: "" })
      wire.execute({ portal: "", rows: 0 })
      wire.parse({ text: "COMMIT", name: "", types: [] })
      wire.bind({ portal: "", statement: "", values: [] })
      wire.execute({ portal: "", rows: 0 })
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
    if (this.reached === "sent") this.reached = "statement"
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

/**
 * Whether `connection` is `@effect/sql-pg`'s over a node-postgres client, which takes a submittable in
 * place of a statement's text. Another driver's connection runs the statement and COMMIT one by one.
 */
export const takesSubmittable = (connection: Connection): boolean => {
  const client = (connection as { readonly pg?: { readonly query?: unknown; readonly connection?: unknown } }).pg
  return typeof client?.query === "function" && typeof client.connection === "object"
}
