/**
 * Assertions that read like chunkwise's guarantees, checked on what a harness trial recorded and on the
 * store's ledger. Each throws an `Error` that says what broke and where; in vitest call them directly.
 *
 * @since 0.1.0
 */
import type { Execution, Trial } from "./Harness.js"

const fail = (guarantee: string, details: ReadonlyArray<string>): never => {
  throw new Error(`${guarantee} does not hold:\n${details.slice(0, 10).map((d) => `  - ${d}`).join("\n")}`)
}

const chunkName = (e: Pick<Execution, "partition" | "step" | "chunkSeq">) =>
  `${e.partition} / ${e.step} / chunk ${e.chunkSeq}`

/** Exactly-once database effects: no idempotency key was committed twice for a partition. */
export const exactlyOnceCommits = (trial: Trial<unknown>): void => {
  if (trial.duplicateCommits.length > 0) fail("exactly-once commits", trial.duplicateCommits)
}

/**
 * No two executions of one unit's effects overlapped in time, on any workers: a partition, or one key
 * range of a split step (the ranges of a partition run in parallel by design, each under its own lease).
 */
export const noConcurrentExecution = (trial: Trial<unknown>): void => {
  const byPartition = new Map<string, Array<Execution>>()
  for (const e of trial.executions) byPartition.set(e.partition, [...(byPartition.get(e.partition) ?? []), e])
  const overlaps: Array<string> = []
  for (const executions of byPartition.values()) {
    const sorted = [...executions].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) {
      const before = sorted[i - 1]!
      const after = sorted[i]!
      if (after.start < before.end) {
        overlaps.push(
          `${chunkName(after)} on ${after.worker} started while ${chunkName(before)} ran on ${before.worker}`
        )
      }
    }
  }
  if (overlaps.length > 0) fail("no concurrent execution of a partition", overlaps)
}

/**
 * Bounded rework: a chunk's effect ran again only after a fault that hit its partition or the worker
 * that ran it before (at most the chunk in flight is redone), or as a retry its error class asked for.
 */
export const boundedRework = (trial: Trial<unknown>): void => {
  const byChunk = new Map<string, Array<Execution>>()
  for (const e of trial.executions) {
    const name = chunkName(e)
    byChunk.set(name, [...(byChunk.get(name) ?? []), e])
  }
  const unexplained: Array<string> = []
  for (const [name, executions] of byChunk) {
    const sorted = [...executions].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) {
      const before = sorted[i - 1]!
      const again = sorted[i]!
      if (again.attempt > before.attempt) continue
      const cause = trial.injections.find((f) =>
        f.seq > before.start && f.seq < again.start && (f.partition === again.partition || f.worker === before.worker)
      )
      if (cause === undefined) unexplained.push(`${name} ran again on ${again.worker} with no fault to explain it`)
    }
  }
  if (unexplained.length > 0) fail("bounded rework", unexplained)
}

/** Completion is never missed and never doubled: the hook and the terminal status committed once. */
export const completionOnce = (trial: Trial<unknown>): void => {
  if (trial.completions !== 1) {
    fail("completion once", [`the completion committed ${trial.completions} times (run ${trial.runId})`])
  }
}

/** Every guarantee above. */
export const all = (trial: Trial<unknown>): void => {
  exactlyOnceCommits(trial)
  noConcurrentExecution(trial)
  boundedRework(trial)
  completionOnce(trial)
}
