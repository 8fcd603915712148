/**
 * The structured definition a run stores (D10): per step its name, kind, transaction mode, cursor
 * schema and, for a split step, its encoded range schema. A worker whose job definition differs incompatibly from a run's refuses to continue that run
 * and says what changed. Chunk sizes, limits, retries and runbook text may change freely.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { canonicalJson, stableId } from "./internal/hash.js"

/** One step as a run remembers it. */
export const StepDefinition = Schema.Struct({
  name: Schema.String,
  kind: Schema.Literal("chunked", "single"),
  mode: Schema.Literal("chunk", "none"),
  /** The encoded cursor schema, as text (`""` for single steps). */
  cursor: Schema.String,
  /** A split step's encoded range schema, as text; absent when the step does not split. */
  split: Schema.optional(Schema.String)
})

/** @since 0.1.0 */
export interface StepDefinition extends Schema.Schema.Type<typeof StepDefinition> {}

/** A job's definition as a run stores it. */
export const JobDefinition = Schema.Struct({
  version: Schema.Literal(1),
  steps: Schema.Array(StepDefinition)
})

/** @since 0.1.0 */
export interface JobDefinition extends Schema.Schema.Type<typeof JobDefinition> {}

/** A short hash of the definition: equal definitions, equal fingerprints. */
export const fingerprint = (definition: JobDefinition): string => stableId("d", [canonicalJson(definition)], 16)

/** The incompatible differences between a run's stored definition and the current one, in words. */
export const changes = (stored: JobDefinition, current: JobDefinition): ReadonlyArray<string> => {
  const out: Array<string> = []
  const storedNames = stored.steps.map((s) => s.name)
  const currentNames = current.steps.map((s) => s.name)
  if (storedNames.join("\u0000") !== currentNames.join("\u0000")) {
    out.push(`steps were [${storedNames.join(", ")}], now [${currentNames.join(", ")}]`)
  }
  for (const step of current.steps) {
    const before = stored.steps.find((s) => s.name === step.name)
    if (before === undefined) continue
    if (before.kind !== step.kind) out.push(`step "${step.name}" was ${before.kind}, now ${step.kind}`)
    if (before.mode !== step.mode) {
      out.push(`step "${step.name}" transaction mode was "${before.mode}", now "${step.mode}"`)
    }
    if (before.cursor !== step.cursor) {
      out.push(`step "${step.name}" cursor schema was ${before.cursor}, now ${step.cursor}`)
    }
    if (before.split !== step.split) {
      out.push(`step "${step.name}" split key ranges were ${before.split ?? "none"}, now ${step.split ?? "none"}`)
    }
  }
  return out
}
