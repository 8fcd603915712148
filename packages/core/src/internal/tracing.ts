import { Tracer } from "effect"
import { digest } from "./hash.js"

/**
 * The parent of every span of a run (D19): a run lasts hours and crosses processes, so its trace id
 * (and the id of the span that stands for the run) derive from the run id. Every unit execution and
 * every start of the run hang from it, in any process, and a trace viewer shows the run as one trace.
 */
export const runParentSpan = (runId: string): Tracer.ExternalSpan => {
  const hex = Buffer.from(digest(["chunkwise-trace", runId])).toString("hex")
  return Tracer.externalSpan({ traceId: hex.slice(0, 32), spanId: hex.slice(32, 48), sampled: true })
}
