/** Plain-text formatting for the operator CLI: aligned tables, durations, counts. No colours, so logs stay clean. */

/** Left-aligned columns separated by two spaces; numbers are right-aligned. */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string | number>>): string => {
  const cells = rows.map((row) => row.map((cell) => (typeof cell === "number" ? count(cell) : cell)))
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((row) => typeof row[i] === "number"))
  const widths = headers.map((header, i) => Math.max(header.length, ...cells.map((row) => (row[i] ?? "").length)))
  const line = (row: ReadonlyArray<string>) =>
    row.map((cell, i) => (numeric[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(headers), ...cells.map(line)].join("\n")
}

/** `key  value` lines with aligned values. */
export const pairs = (entries: ReadonlyArray<readonly [string, string]>): string => {
  const width = Math.max(...entries.map(([key]) => key.length))
  return entries.map(([key, value]) => `${key.padEnd(width)}  ${value}`).join("\n")
}

/** 1234567 → "1,234,567". */
export const count = (n: number): string => Math.round(n).toLocaleString("en-US")

/** A rate with one decimal under 100. */
export const rate = (perSecond: number): string =>
  perSecond >= 100 ? count(perSecond) : (Math.round(perSecond * 10) / 10).toFixed(1)

/** 450 → "450ms", 12300 → "12.3s", 185000 → "3m05s", 3720000 → "1h02m". */
export const duration = (ms: number | null): string => {
  if (ms === null || !Number.isFinite(ms)) return "—"
  if (ms < 1000) return `${Math.round(ms)}ms`
  if (ms < 60_000) return `${(Math.round(ms / 100) / 10).toFixed(1)}s`
  const s = Math.round(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
  const m = Math.round(s / 60)
  if (m < 48 * 60) return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`
  return `${Math.floor(m / 1440)}d${String(Math.floor((m % 1440) / 60)).padStart(2, "0")}h`
}

/** An ISO timestamp, or "—". */
export const time = (epochMs: number | null): string => (epochMs === null ? "—" : new Date(epochMs).toISOString())

/** Cuts a text to `max` characters on one line. */
export const clip = (text: string, max: number): string => {
  const one = text.replace(/\s+/g, " ").trim()
  return one.length <= max ? one : `${one.slice(0, max - 1)}…`
}

/** `[#####.....]` for done/total. */
export const bar = (done: number, total: number, width = 24): string => {
  const filled = total === 0 ? width : Math.min(width, Math.round((done / total) * width))
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`
}

/** A shell-safe rendering of an argument (for the commands the CLI suggests). */
export const shellArg = (
  value: string
): string => (/^[A-Za-z0-9_./:=@-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`)
