/**
 * The monthly-billing job: one partition per active company with billable records (heaviest first),
 * three steps per company:
 *
 * 1. `bill-records` (chunked, mode `chunk`): a chunk of the company's records of the month becomes
 *    invoice lines, the records are marked billed and the invoice draft grows, in one set-based
 *    statement that commits with the checkpoint: exactly once, whatever crashes. A company with more
 *    than `splitRecords` records is split into ranges of days billed in parallel, so the largest
 *    company does not become the run's tail.
 * 2. `issue-invoice` (single, mode `chunk`): the invoice from the draft.
 * 3. `notify` (single, mode `none`): the outbox row (`ON CONFLICT DO NOTHING`) and the mail, keyed by
 *    the step's idempotency key.
 *
 * @since 0.1.0
 */
import { Job, Step } from "@chunkwise/core"
import { Effect, Schema, Stream } from "effect"
import * as Billing from "./Billing.js"
import * as Errors from "./Errors.js"

/** The run's params: the month to bill. The run key is the month, so starting it twice attaches. */
export const Params = Schema.Struct({ month: Billing.Month })

/** Options of `make`. */
export interface Options {
  /** The schema of the billing tables (default `billing`). */
  readonly schema?: string | undefined
  /** Work records per chunk (default 1,000). */
  readonly chunkSize?: number | undefined
  /** Companies one worker bills at once (default 4). */
  readonly perWorker?: number | undefined
  /**
   * Split a company with more records than this into ranges of days of about this many records, each
   * billed as its own unit in parallel (default 50,000; `Infinity` never splits).
   */
  readonly splitRecords?: number | undefined
}

/** The job's name, as `start` and the CLI know it. */
export const name = "monthly-billing"

/** Makes the job over the billing tables in `options.schema`. */
export const make = (options: Options = {}) => {
  const schema = options.schema ?? "billing"
  const splitRecords = options.splitRecords ?? 50_000
  if (!(splitRecords >= 1)) {
    throw new TypeError(
      `MonthlyBilling.make: splitRecords must be at least 1 (got ${splitRecords}); Infinity never splits`
    )
  }
  return Job.make({
    name,
    params: Params,
    partitions: ({ month }) =>
      Stream.fromIterableEffect(
        Effect.map(Billing.billableCompanies(schema, month), (rows) =>
          rows.map((r) => ({ key: r.key, weight: r.weight })))
      ),
    steps: (step) => [
      step.chunked("bill-records", {
        cursor: Billing.Cursor,
        start: Billing.startCursor,
        chunkSize: options.chunkSize ?? 1000,
        transaction: "chunk",
        split: {
          key: Schema.String,
          ranges: ({ params, partition }) =>
            partition.weight <= splitRecords
              ? Effect.succeed([Step.everything])
              : Effect.map(
                Billing.splitDays({
                  schema,
                  month: params.month,
                  company: partition.key,
                  parts: Math.min(64, Math.ceil(partition.weight / splitRecords))
                }),
                Step.rangesAt
              )
        },
        process: ({ chunkSize, cursor, params, partition, range }) =>
          Effect.map(
            Billing.billChunk({
              schema,
              month: params.month,
              company: partition.key,
              cursor,
              limit: chunkSize,
              days: range
            }),
            ({ billed, next }) => Step.advance(next ?? Step.done, billed)
          )
      }),
      step.single("issue-invoice", {
        transaction: "chunk",
        run: ({ params, partition }) => Billing.issueInvoice({ schema, month: params.month, company: partition.key })
      }),
      step.single("notify", {
        transaction: "none",
        run: ({ idempotencyKey, params, partition }) =>
          Billing.notify({ schema, month: params.month, company: partition.key, idempotencyKey })
      })
    ],
    errors: Errors.runbooks,
    concurrency: { perWorker: options.perWorker ?? 4 }
  })
}

/** The job on the default schema `billing`. */
export const monthlyBilling = make()
