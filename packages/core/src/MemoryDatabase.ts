/**
 * An in-memory key-value database for jobs that run on the in-memory store (tests, demos). Inside a
 * `chunk`-mode step its writes join the chunk's write set, which the in-memory store applies together
 * with the checkpoint, or drops when the chunk fails or its commit is refused (D13): the same
 * exactly-once guarantee a `chunk` step gets from Postgres. Outside a chunk transaction writes apply
 * at once. Reads inside a transaction see its own writes.
 *
 * @since 0.1.0
 */
import { Context, Effect, FiberRef, Option } from "effect"

/**
 * Pending writes of one chunk transaction: `undefined` value = delete. A probe's write set (a savepoint
 * that is always rolled back, D17) has the chunk's as `parent`: it reads through to it and is dropped.
 */
export class WriteSet {
  constructor(readonly parent?: WriteSet | undefined) {}
  readonly writes = new Map<string, Map<string, unknown>>()
  set(table: string, key: string, value: unknown) {
    let rows = this.writes.get(table)
    if (rows === undefined) {
      rows = new Map()
      this.writes.set(table, rows)
    }
    rows.set(key, value)
  }
  lookup(table: string, key: string): { readonly found: boolean; readonly value: unknown } {
    const rows = this.writes.get(table)
    return rows !== undefined && rows.has(key)
      ? { found: true, value: rows.get(key) }
      : this.parent?.lookup(table, key) ?? { found: false, value: undefined }
  }
  /** This set's writes to `table` over its parents', oldest first. */
  pending(table: string): ReadonlyArray<readonly [string, unknown]> {
    return [...(this.parent?.pending(table) ?? []), ...(this.writes.get(table) ?? [])]
  }
}

/** The write set of the chunk transaction this fiber runs in, if any. */
export const currentWriteSet: FiberRef.FiberRef<WriteSet | undefined> = FiberRef.unsafeMake<WriteSet | undefined>(
  undefined
)

/** The in-memory database. Values should be plain data; they are stored as given. */
export interface MemoryDatabaseShape {
  readonly get: (table: string, key: string) => Effect.Effect<Option.Option<unknown>>
  /** Inserts or replaces a row. */
  readonly put: (table: string, key: string, value: unknown) => Effect.Effect<void>
  /** Inserts a row unless its key exists (`ON CONFLICT DO NOTHING`); returns whether it inserted. */
  readonly insert: (table: string, key: string, value: unknown) => Effect.Effect<boolean>
  readonly remove: (table: string, key: string) => Effect.Effect<void>
  /** Every committed row of a table, ordered by key, plus this transaction's own writes. */
  readonly rows: (table: string) => Effect.Effect<ReadonlyArray<readonly [string, unknown]>>
  /** Applies a transaction's writes; called by the in-memory store at commit. */
  readonly apply: (writes: WriteSet) => void
}

/** The in-memory database service, provided by `StateStore.layerMemory`. */
export class MemoryDatabase
  extends Context.Tag("@chunkwise/core/MemoryDatabase")<MemoryDatabase, MemoryDatabaseShape>()
{}

/** Makes an empty database. */
export const make = (): MemoryDatabaseShape => {
  const tables = new Map<string, Map<string, unknown>>()
  const table = (name: string) => {
    let rows = tables.get(name)
    if (rows === undefined) {
      rows = new Map()
      tables.set(name, rows)
    }
    return rows
  }
  const read = (writeSet: WriteSet | undefined, name: string, key: string): Option.Option<unknown> => {
    const pending = writeSet?.lookup(name, key)
    if (pending !== undefined && pending.found) {
      return pending.value === undefined ? Option.none() : Option.some(pending.value)
    }
    const rows = table(name)
    return rows.has(key) ? Option.some(rows.get(key)) : Option.none()
  }
  const write = (name: string, key: string, value: unknown) =>
    Effect.flatMap(FiberRef.get(currentWriteSet), (writeSet) =>
      Effect.sync(() => {
        if (writeSet !== undefined) writeSet.set(name, key, value)
        else if (value === undefined) table(name).delete(key)
        else table(name).set(key, value)
      }))
  return {
    get: (name, key) => Effect.map(FiberRef.get(currentWriteSet), (writeSet) => read(writeSet, name, key)),
    put: (name, key, value) => write(name, key, value),
    insert: (name, key, value) =>
      Effect.flatMap(
        FiberRef.get(currentWriteSet),
        (writeSet) =>
          Option.isSome(read(writeSet, name, key)) ? Effect.succeed(false) : Effect.as(write(name, key, value), true)
      ),
    remove: (name, key) => write(name, key, undefined),
    rows: (name) =>
      Effect.map(FiberRef.get(currentWriteSet), (writeSet) => {
        const merged = new Map(table(name))
        for (const [key, value] of writeSet?.pending(name) ?? []) {
          if (value === undefined) merged.delete(key)
          else merged.set(key, value)
        }
        return [...merged.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      }),
    apply: (writes) => {
      for (const [name, rows] of writes.writes) {
        const target = table(name)
        for (const [key, value] of rows) {
          if (value === undefined) target.delete(key)
          else target.set(key, value)
        }
      }
    }
  }
}
