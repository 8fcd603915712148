import { Tracer } from "effect"
import { digest } from "./hash.js"

/** The parent spans of the runs a process works on now (a handful), so a unit does not hash again. */
const recent = new Map<string, Tracer.ExternalSpan>()

/**
 * The parent of every span of a run (D19): a run lasts hours and crosses processes, so its trace id
 * (and the id of the span that stands for the run) derive from the run id. Every unit execution and
 * every start of the run hang from it, in any process, and a trace viewer shows the run as one trace.
 */
export const runParentSpan = (runId: string): Tracer.ExternalSpan => {
  let span = recent.get(runId)
  if (span === undefined) {
    const hex = digest(["chunkwise-trace", runId])
    span = Tracer.externalSpan({ traceId: hex.slice(0, 32), spanId: hex.slice(32, 48), sampled: true })
    if (recent.size >= 64) recent.clear()
    recent.set(runId, span)
  }
  return span
}
