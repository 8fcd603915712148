/**
 * What `limits` shows: a resource's limits, item rate included, as its `--json` row and as text (fields
 * are only ever added, never renamed or removed).
 */
import * as ResourceLimiter from "../../ResourceLimiter.js"
import * as F from "./format.js"

/** A resource and its limits (`limits --json`). */
export interface LimitJson {
  readonly resource: string
  readonly chunksPerSecond: number | null
  /** The burst in effect (the default, one second of chunks, when none is set); null without a rate. */
  readonly burst: number | null
  readonly itemsPerSecond: number | null
  /** The item burst in effect (the default, one second of items, when none is set); null without an item rate. */
  readonly itemsBurst: number | null
  readonly inFlight: number | null
  /** In-flight slots held now. */
  readonly inUse: number
  /** Units waiting for a permit now. */
  readonly waiting: number
  /** `default`: declared in code; `operator`: set with `limits set`. */
  readonly source: "default" | "operator"
  readonly updatedAt: string
  readonly updatedBy: string
  readonly reason: string
}

/** The row of one resource, settings in the order `limits set` takes them. */
export const limitJson = (usage: ResourceLimiter.Usage): LimitJson => ({
  resource: usage.resource,
  chunksPerSecond: usage.chunksPerSecond,
  burst: usage.chunksPerSecond === null ? null : usage.burst ?? ResourceLimiter.defaultBurst(usage.chunksPerSecond),
  itemsPerSecond: usage.itemsPerSecond,
  itemsBurst: usage.itemsPerSecond === null
    ? null
    : usage.itemsBurst ?? ResourceLimiter.defaultBurst(usage.itemsPerSecond),
  inFlight: usage.inFlight,
  inUse: usage.inUse,
  waiting: usage.waiting,
  source: usage.source,
  updatedAt: new Date(usage.updatedAt).toISOString(),
  updatedBy: usage.updatedBy,
  reason: usage.reason
})

const shown = (value: number | null) => (value === null ? "—" : String(value))

/** The table of `limits`, and how to change a limit. */
export const limitsText = (rows: ReadonlyArray<LimitJson>, cli: string): string =>
  rows.length === 0
    ? "No resources yet: a worker stores the resources its steps name when it starts."
    : [
      F.table(
        [
          "RESOURCE",
          "CHUNKS/S",
          "BURST",
          "ITEMS/S",
          "ITEMS BURST",
          "IN FLIGHT",
          "IN USE",
          "WAITING",
          "SET BY",
          "AT",
          "REASON"
        ],
        rows.map((r) => [
          r.resource,
          shown(r.chunksPerSecond),
          shown(r.burst),
          shown(r.itemsPerSecond),
          shown(r.itemsBurst),
          shown(r.inFlight),
          r.inUse,
          r.waiting,
          r.source === "default" ? `code (${r.updatedBy})` : r.updatedBy,
          r.updatedAt,
          F.clip(r.reason, 50)
        ])
      ),
      "",
      `Change one while runs go: \`${cli} limits set <resource> --in-flight 4 --reason "..."\` ` +
      `(workers pick it up within 5 s; \`${cli} limits history\` shows every change).`
    ].join("\n")
