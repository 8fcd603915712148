/**
 * Jobs: a named definition in code, made of a params schema, a partitioner, ordered steps, the error
 * classes the steps may raise (each with its runbook) and policies.
 *
 * @since 0.1.0
 */
import { Effect, Either, ParseResult, Schema, Stream } from "effect"
import * as Errors from "./Errors.js"
import { canonicalJson, stableId } from "./internal/hash.js"
import { positiveIntProblem } from "./internal/settings.js"
import * as JobDefinition from "./JobDefinition.js"
import * as Quarantine from "./Quarantine.js"
import * as Runbook from "./Runbook.js"
import * as Step from "./Step.js"

/** A partition as a partitioner yields it: a key, or a key with a weight (default 1). */
export type PartitionInput = string | { readonly key: string; readonly weight?: number | undefined }

/** What `onComplete` receives, once per terminal outcome of a run. */
export interface CompletionContext<P> {
  readonly job: string
  readonly runId: string
  readonly params: P
  readonly outcome: "succeeded" | "failed"
  /** Partitions by final status. */
  readonly partitions: {
    readonly total: number
    readonly succeeded: number
    readonly failed: number
    readonly skipped: number
    readonly cancelled: number
  }
  /** Stable per run and finalize round; use it for the hook's external calls. */
  readonly idempotencyKey: string
  readonly attempt: number
}

/** A failure budget: how many partitions may fail before the run fails fast. */
export type FailureBudget = { readonly partitions: number | `${number}%` }

/** Options of `Job.make`. */
export interface Options<P, PI, Steps extends ReadonlyArray<Step.Step<P, any>>, RP, RC> {
  /** Unique among the jobs of a service: letters, digits, `.`, `_`, `-`. */
  readonly name: string
  /** The params schema; params cross processes, so they must encode to JSON. */
  readonly params: Schema.Schema<P, PI, never>
  /**
   * The run key: starting a run with the same key attaches to the existing run. Defaults to the
   * canonical JSON of the encoded params.
   */
  readonly runKey?: ((params: P) => string) | undefined
  /** Enumerates the partitions once, when the run starts; the set is frozen in the store. */
  readonly partitions: (params: P) => Stream.Stream<PartitionInput, unknown, RP> | Iterable<PartitionInput>
  /** The ordered steps. Pass a function to get a `Step` builder with `params` already typed. */
  readonly steps: Steps | ((step: Step.Builder<P>) => Steps)
  /** The error classes the steps may raise, each registered with its runbook. */
  readonly errors?: ReadonlyArray<Runbook.Registration> | undefined
  readonly concurrency?: {
    /** Units of this job one worker runs at once (default 4). */
    readonly perWorker?: number | undefined
    /** Units of this job leased at once across all workers (default: no limit). */
    readonly total?: number | undefined
  } | undefined
  /** Past this many failed partitions (a count, or a percentage like `"1%"`) the run fails fast. Default: no limit. */
  readonly failureBudget?: FailureBudget | undefined
  /**
   * Items the whole run may set aside (steps with `skip`): a count, or a percentage of the items the
   * run has handled so far. A chunk that would go over it fails its partition. Default: only the
   * steps' own budgets.
   */
  readonly skipBudget?: { readonly items: Quarantine.Budget } | undefined
  /** Runs once per terminal outcome (succeeded or failed; not on cancel), as its own fenced unit. */
  readonly onComplete?: ((ctx: CompletionContext<P>) => Effect.Effect<void, unknown, RC>) | undefined
  /** A unit whose workers die this many times without progress fails with `CrashLoop` (default 3). */
  readonly maxCrashes?: number | undefined
}

/** A job definition. `R` is what its steps, partitioner and hook need from the worker's context. */
export interface Job<P, R> {
  readonly name: string
  readonly params: Schema.Schema<P, any, never>
  readonly steps: ReadonlyArray<Step.Step<P, R>>
  readonly partitions: (params: P) => Stream.Stream<PartitionInput, unknown, R>
  readonly runKey: ((params: P) => string) | undefined
  /** The job's registered runbooks followed by the built-ins, by error tag. */
  readonly runbooks: ReadonlyMap<string, Runbook.Runbook>
  readonly concurrency: { readonly perWorker: number; readonly total: number | undefined }
  readonly failureBudget: FailureBudget | undefined
  /** Items the run may set aside, across its partitions and steps. */
  readonly skipBudget: Quarantine.Limit | undefined
  readonly onComplete: ((ctx: CompletionContext<P>) => Effect.Effect<void, unknown, R>) | undefined
  readonly maxCrashes: number
  readonly definition: JobDefinition.JobDefinition
  readonly fingerprint: string
}

/** Any job; for registries of jobs with different params. */
export type Any = Job<any, any>

/** The services a job needs. */
export type Context<J> = J extends Job<any, infer R> ? R : never

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/
const MAX_CURSOR_BYTES = 1024

const fail = (job: string, message: string): never => {
  throw new TypeError(`Job "${job}": ${message}`)
}

const positiveInt = (job: string, what: string, value: number | undefined) => {
  const problem = positiveIntProblem(what, value)
  if (problem !== undefined) fail(job, problem)
}

/** D10: the start cursor must survive encode → JSON → decode, and stay under 1 KiB. */
const checkCursor = (job: string, step: Step.Chunked<any, any, any>) => {
  const encode = Schema.encodeEither(step.cursor)
  const decode = Schema.decodeUnknownEither(step.cursor)
  const encoded = encode(step.start)
  if (Either.isLeft(encoded)) {
    return fail(
      job,
      `step "${step.name}": start does not encode with its cursor schema: ` +
        ParseResult.TreeFormatter.formatErrorSync(encoded.left)
    )
  }
  let text: string | undefined
  try {
    text = JSON.stringify(encoded.right as unknown)
  } catch {
    text = undefined
  }
  if (text === undefined) {
    return fail(
      job,
      `step "${step.name}": the encoded cursor is not JSON. Use schemas that encode to JSON values, ` +
        `e.g. Schema.BigInt (a string) instead of Schema.BigIntFromSelf`
    )
  }
  if (Buffer.byteLength(text, "utf8") > MAX_CURSOR_BYTES) {
    fail(job, `step "${step.name}": the encoded cursor is over ${MAX_CURSOR_BYTES} bytes; keep it to a few keys`)
  }
  const decoded = decode(JSON.parse(text))
  const again = Either.isRight(decoded) ? encode(decoded.right) : undefined
  if (again === undefined || Either.isLeft(again) || JSON.stringify(again.right as unknown) !== text) {
    fail(
      job,
      `step "${step.name}": the cursor does not round-trip through JSON (encoded ${text}). Use schemas ` +
        `that encode to JSON values, e.g. Schema.BigInt (a string) instead of Schema.BigIntFromSelf`
    )
  }
}

/**
 * Defines a job.
 *
 * @example
 * ```ts
 * const job = Job.make({
 *   name: "monthly-billing",
 *   params: Schema.Struct({ month: Schema.String }),
 *   partitions: ({ month }) => billableCompanies(month),
 *   steps: (step) => [
 *     step.chunked("bill-records", {
 *       cursor: Schema.Struct({ afterId: Schema.BigInt }),
 *       start: { afterId: 0n },
 *       transaction: "chunk",
 *       process: ({ params, partition, cursor, chunkSize }) => billChunk(params.month, partition.key, cursor, chunkSize)
 *     }),
 *     step.single("notify", { transaction: "none", run: ({ partition, idempotencyKey }) => notify(partition.key, idempotencyKey) })
 *   ]
 * })
 * ```
 */
export const make = <
  P,
  PI,
  const Steps extends ReadonlyArray<Step.Step<P, any>>,
  RP = never,
  RC = never
>(options: Options<P, PI, Steps, RP, RC>): Job<P, Step.Context<Steps[number]> | RP | RC> => {
  type R = Step.Context<Steps[number]> | RP | RC
  const name = options.name
  if (!NAME_PATTERN.test(name)) {
    fail(name, "a job name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit")
  }
  const steps =
    (typeof options.steps === "function" ? options.steps(Step.builder<P>()) : options.steps) as ReadonlyArray<
      Step.Step<P, R>
    >
  if (steps.length === 0) fail(name, "give the job at least one step")
  const seen = new Set<string>()
  for (const step of steps) {
    if (seen.has(step.name)) fail(name, `two steps are named "${step.name}"; step names must be unique`)
    seen.add(step.name)
    if (step._tag === "Chunked") checkCursor(name, step)
  }
  positiveInt(name, "concurrency.perWorker", options.concurrency?.perWorker)
  positiveInt(name, "concurrency.total", options.concurrency?.total)
  positiveInt(name, "maxCrashes", options.maxCrashes)
  if (options.failureBudget !== undefined) budgetOf(name, options.failureBudget)
  const skipBudget = options.skipBudget === undefined
    ? undefined
    : Quarantine.limitOf(`Job "${name}": skipBudget.items`, options.skipBudget.items)

  const runbooks = new Map<string, Runbook.Runbook>()
  const ids = new Set<string>()
  for (const { runbook } of [...(options.errors ?? []), ...Runbook.builtins]) {
    if (runbooks.has(runbook.tag)) {
      fail(
        name,
        `error tag "${runbook.tag}" is registered twice` +
          (Runbook.builtins.some((b) => b.runbook.tag === runbook.tag)
            ? " (it is a chunkwise built-in; rename yours)"
            : "")
      )
    }
    if (ids.has(runbook.id)) fail(name, `runbook id "${runbook.id}" is used twice`)
    runbooks.set(runbook.tag, runbook)
    ids.add(runbook.id)
  }
  for (const step of steps) {
    for (const tag of step._tag === "Chunked" ? step.skip?.tags ?? [] : []) {
      if (!(options.errors ?? []).some((r) => r.runbook.tag === tag)) {
        fail(
          name,
          `step "${step.name}" sets aside items that fail with "${tag}", which is not in errors; register it ` +
            `with Runbook.make so each quarantined item carries its runbook`
        )
      }
    }
  }

  const definition: JobDefinition.JobDefinition = {
    version: 1,
    steps: steps.map((step) => ({
      name: step.name,
      kind: step._tag === "Chunked" ? "chunked" as const : "single" as const,
      mode: step.transaction,
      cursor: step._tag === "Chunked" ? String(Schema.encodedSchema(step.cursor).ast) : "",
      ...(step._tag === "Chunked" && step.split !== undefined
        ? { split: String(Schema.encodedSchema(step.split.range).ast) }
        : {})
    }))
  }
  const partitions = options.partitions
  return {
    name,
    params: options.params,
    steps,
    partitions: (params) => {
      const source = partitions(params)
      return (Stream.StreamTypeId in (source as object)
        ? source
        : Stream.fromIterable(source as Iterable<PartitionInput>)) as Stream.Stream<PartitionInput, unknown, R>
    },
    runKey: options.runKey,
    runbooks,
    concurrency: { perWorker: options.concurrency?.perWorker ?? 4, total: options.concurrency?.total },
    failureBudget: options.failureBudget,
    skipBudget,
    onComplete: options.onComplete as Job<P, R>["onComplete"],
    maxCrashes: options.maxCrashes ?? 3,
    definition,
    fingerprint: JobDefinition.fingerprint(definition)
  }
}

/** Turns a failure budget into "at most N failed partitions" for a run of `count` partitions. */
export const budgetOf = (job: string, budget: FailureBudget | undefined) => {
  if (budget === undefined) return (_count: number) => Number.MAX_SAFE_INTEGER
  const spec = budget.partitions
  if (typeof spec === "number") {
    if (!Number.isInteger(spec) || spec < 0) {
      fail(job, `failureBudget.partitions must be a count >= 0 or a percentage like "1%" (got ${spec})`)
    }
    return (_count: number) => spec
  }
  const percent = Number(spec.slice(0, -1))
  // A number before the sign: `Number("")` is 0, so "%" alone would pass as 0 %.
  if (!/^\d+(\.\d+)?%$/.test(spec) || percent > 100) {
    fail(job, `failureBudget.partitions must be a count >= 0 or a percentage like "1%" (got "${spec}")`)
  }
  return (count: number) => Math.floor((count * percent) / 100)
}

/** The runbook that handles an error tag in this job (registered first, then built-in). */
export const runbookFor = (job: Any, tag: string): Runbook.Runbook =>
  job.runbooks.get(tag) ?? job.runbooks.get("Unclassified")!

/** Decodes and validates params (applying schema defaults), returning their encoded form too. */
export const validateParams = <P, R>(
  job: Job<P, R>,
  input: unknown,
  from: "type" | "encoded",
  /** `"error"`: a key the schema does not know is refused (input from outside); default: dropped. */
  excess: "error" | "ignore" = "ignore"
) =>
  Effect.gen(function*() {
    const invalid = (error: ParseResult.ParseError) =>
      new Errors.InvalidParams({ job: job.name, details: ParseResult.TreeFormatter.formatErrorSync(error) })
    const encodedInput = from === "type"
      ? yield* Effect.mapError(Schema.encodeUnknown(job.params)(input), invalid)
      : input
    const params = yield* Effect.mapError(
      Schema.decodeUnknown(job.params)(encodedInput, { onExcessProperty: excess }),
      invalid
    )
    const encoded = yield* Effect.mapError(Schema.encode(job.params)(params), invalid)
    return { params, encoded: encoded as unknown }
  })

/** The run key of params (D9): the job's `runKey`, or the canonical JSON of the encoded params. */
export const runKeyOf = <P, R>(job: Job<P, R>, params: P, encoded: unknown, rerun?: string): string =>
  rerunKeyOf(baseKeyOf(job, params, encoded), rerun)

/** The run key of params without a rerun label: every run of the same params shares it. */
export const baseKeyOf = <P, R>(job: Job<P, R>, params: P, encoded: unknown): string =>
  job.runKey?.(params) ?? canonicalJson(encoded)

/** What joins a rerun label to the base key in a run key: the base key is the run key up to it. */
export const rerunSeparator = "#rerun:"

/** The run key of a base key (`baseKeyOf`) with an optional rerun label. */
export const rerunKeyOf = (baseKey: string, rerun?: string): string =>
  rerun === undefined ? baseKey : `${baseKey}${rerunSeparator}${rerun}`

/** The run id: derived from (job, run key), so starting the same run twice attaches to it. */
export const runIdOf = (job: string, runKey: string): string => stableId("run_", [job, runKey])

/** The unit id of a partition of a run. */
export const unitIdOf = (runId: string, partitionKey: string): string => stableId("p_", [runId, partitionKey], 20)
