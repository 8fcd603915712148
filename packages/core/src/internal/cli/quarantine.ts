/**
 * What `quarantine` and `quarantine retry` show: the items steps set aside, as `--json` rows and as
 * text, and the re-run an operator asked for. Fields are only ever added, never renamed or removed.
 */
import type * as Quarantine from "../../Quarantine.js"
import type { QuarantineRetry } from "../../StateStore.js"
import * as F from "./format.js"

/** One quarantined item (`quarantine --json`). */
export interface ItemJson {
  readonly step: string
  readonly partition: string
  readonly item: string
  readonly status: Quarantine.Status
  readonly attempts: number
  readonly errorTag: string
  readonly message: string
  readonly runbook: string
  /** The item as stored (encoded with the step's item schema). */
  readonly value: unknown
  /** The cursor and key range of the chunk that set it aside, encoded. */
  readonly cursor: unknown
  readonly range: unknown
  readonly unit: string
  readonly quarantinedAt: string
  readonly updatedAt: string
}

export const itemJson = (entry: Quarantine.Entry): ItemJson => ({
  step: entry.step,
  partition: entry.partitionKey,
  item: entry.itemId,
  status: entry.status,
  attempts: entry.attempts,
  errorTag: entry.errorTag,
  message: entry.message,
  runbook: entry.runbookId,
  value: entry.item,
  cursor: entry.cursor,
  range: entry.range,
  unit: entry.unitId,
  quarantinedAt: new Date(entry.quarantinedAt).toISOString(),
  updatedAt: new Date(entry.updatedAt).toISOString()
})

/** The table of `quarantine`, and how to re-run the items. */
export const itemsText = (runId: string, rows: ReadonlyArray<ItemJson>, cli: string): string =>
  rows.length === 0
    ? `No item matches in the quarantine of run ${runId}.`
    : [
      F.table(
        ["STEP", "PARTITION", "ITEM", "STATUS", "ATTEMPTS", "ERROR", "RUNBOOK"],
        rows.map((r) => [
          r.step,
          r.partition,
          r.item,
          r.status,
          r.attempts,
          F.clip(`${r.errorTag}: ${r.message}`, 70),
          r.runbook
        ])
      ),
      "",
      `After the fix: ${cli} quarantine retry ${runId} [--step <step>] [--partition <key>] --reason "<why>"`
    ].join("\n")

/** What `quarantine retry` did (or would do). */
export interface RetryJson {
  readonly action: "quarantine-retry"
  readonly runId: string
  readonly dryRun: boolean
  readonly actor: string
  readonly reason: string | null
  readonly units: ReadonlyArray<{
    readonly partition: string
    readonly step: string
    readonly items: number
    readonly unit: string
  }>
}

export const retryJson = (
  base: Omit<RetryJson, "action" | "units">,
  planned: ReadonlyArray<QuarantineRetry>
): RetryJson => ({
  action: "quarantine-retry",
  ...base,
  units: planned.map((p) => ({ partition: p.partitionKey, step: p.step, items: p.items, unit: p.unitId }))
})

export const retryText = (view: RetryJson): string => {
  const items = view.units.reduce((sum, u) => sum + u.items, 0)
  const head = view.dryRun
    ? `Dry run: quarantine retry would write ${items} item(s) of run ${view.runId} again (nothing was changed).`
    : `quarantine retry: ${items} item(s) of run ${view.runId} will be written again, as ${view.actor}` +
      (view.reason === null ? "." : `: ${view.reason}`)
  if (view.units.length === 0) return `${head} No quarantined item matches.`
  return [
    head,
    "",
    F.table(["STEP", "PARTITION", "ITEMS", "UNIT"], view.units.map((u) => [u.step, u.partition, u.items, u.unit]))
  ].join("\n")
}

/** The quarantine line of `status`, when anything was set aside. */
export const statusLine = (counts: Quarantine.Counts): ReadonlyArray<string> =>
  counts.quarantined + counts.retry + counts.resolved === 0 ? [] : [
    `quarantine  ${F.count(counts.quarantined)} set aside · ${F.count(counts.retry)} being re-run · ` +
    `${F.count(counts.resolved)} resolved`
  ]
