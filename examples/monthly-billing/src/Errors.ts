/**
 * What can go wrong while billing a month, as error classes the job registers with their runbooks,
 * and the example's own operational error.
 *
 * A fee rate out of range is not among them: the schema's check constraint (`fee_rate_bp between 0
 * and 10000`) makes it impossible, so a runbook for it would never be read.
 *
 * @since 0.1.0
 */
import { Runbook } from "@chunkwise/core"
import { Schema } from "effect"

/** A company was deactivated after its billing started: part of its month may already be billed. */
export class CompanyDeactivated extends Schema.TaggedError<CompanyDeactivated>()("CompanyDeactivated", {
  companyId: Schema.String,
  month: Schema.String
}) {
  override get message() {
    return `company ${this.companyId} is no longer active (or no longer exists) while its ${this.month} billing runs`
  }
}

/** A work record billed in an earlier run of the month is no longer approved. */
export class RecordChangedAfterBilling
  extends Schema.TaggedError<RecordChangedAfterBilling>()("RecordChangedAfterBilling", {
    companyId: Schema.String,
    month: Schema.String,
    workRecordId: Schema.String,
    status: Schema.String,
    invoicedMonth: Schema.String
  })
{
  override get message() {
    return `work record ${this.workRecordId} of company ${this.companyId} was billed in ${this.invoicedMonth} ` +
      `but its status is now "${this.status}"`
  }
}

/** A chunk would mark records billed without writing their lines (or the reverse): the invoice would not match its lines. */
export class InvoiceWouldNotBalance extends Schema.TaggedError<InvoiceWouldNotBalance>()("InvoiceWouldNotBalance", {
  companyId: Schema.String,
  month: Schema.String,
  recordsMarked: Schema.Number,
  linesWritten: Schema.Number,
  firstWorkRecordId: Schema.String
}) {
  override get message() {
    return `company ${this.companyId}, ${this.month}: a chunk marked ${this.recordsMarked} records billed but wrote ` +
      `${this.linesWritten} invoice lines (from work record ${this.firstWorkRecordId}); an invoice line already ` +
      `exists for a record that is not marked billed`
  }
}

/**
 * The example could not do what it was asked; the message names the cause and the fix. `input`: the
 * cause is a setting or an argument (the CLI exits 2), not a failure of the work (exit 1).
 */
export class BillingError extends Schema.TaggedError<BillingError>()("BillingError", {
  message: Schema.String,
  input: Schema.optional(Schema.Boolean)
}) {}

/** The runbooks of the billing job's error classes. */
export const runbooks = [
  Runbook.make(CompanyDeactivated, {
    id: "billing-company-deactivated",
    title: "A company was deactivated during its billing",
    severity: "ticket",
    meaning: "The company was active when the run started and is inactive (or gone) now. The chunk that noticed " +
      "rolled back; the chunks before it are committed, so part of its month is billed (lines written, records " +
      "marked) and no invoice was issued.",
    steps: [
      "Ask billing operations whether the company is still billed for this month.",
      "If it is: reactivate it (`update companies set active = true where id = <company>`), then " +
      "`billing retry <run> --partition <company> --reason \"reactivated\"`; the step resumes at its checkpoint.",
      "If it is not: undo the part of its month already billed (no invoice was issued for it), in one " +
      "transaction: `begin; update work_records w set invoiced_month = null from invoice_lines l where " +
      "l.billing_month = '<month>-01' and l.company_id = <company> and w.id = l.work_record_id; delete from " +
      "invoice_lines where billing_month = '<month>-01' and company_id = <company>; delete from invoice_drafts " +
      "where company_id = <company> and billing_month = '<month>-01'; commit;`, then " +
      "`billing skip <run> --partition <company> --reason \"deactivated\"`."
    ]
  }),
  Runbook.make(RecordChangedAfterBilling, {
    id: "billing-record-changed-after-billing",
    title: "A billed work record is no longer approved",
    severity: "ticket",
    meaning: "A record that an earlier run of this month billed (its invoiced_month is set, its invoice line " +
      "exists) was later cancelled or set back to pending. Billing it again or silently dropping it would make " +
      "the invoice wrong, so the partition stopped; nothing of the failing chunk was written.",
    steps: [
      "Look at the record named in the failure and ask whoever changed it why.",
      "If the change is right, take the record out of the month in one transaction, so its line, the invoice " +
      "draft and the record agree: `begin; update invoice_drafts d set line_count = d.line_count - 1, wages_yen " +
      "= d.wages_yen - l.wage_yen, transport_yen = d.transport_yen - l.transport_yen, fee_yen = d.fee_yen - " +
      "l.fee_yen from invoice_lines l where l.billing_month = '<month>-01' and l.work_record_id = <record> and " +
      "d.company_id = l.company_id and d.billing_month = l.billing_month; delete from invoice_lines where " +
      "billing_month = '<month>-01' and work_record_id = <record>; update work_records set invoiced_month = null " +
      "where id = <record>; commit;`. The retry then issues the invoice at its new total; if the old invoice " +
      "already reached the customer, send a credit note by the usual procedure.",
      "If the change is a mistake, set its status back to approved.",
      "Then `billing retry <run> --partition <company> --reason \"<what you did>\"`."
    ]
  }),
  Runbook.make(InvoiceWouldNotBalance, {
    id: "billing-invoice-would-not-balance",
    title: "An invoice would not match its lines",
    severity: "page",
    meaning: "A billing chunk found an invoice line for a work record that is not marked billed, so the " +
      "records it marks and the lines it writes differ, and the invoice (summed per chunk) would not match its " +
      "lines. Something outside the job wrote or kept invoice lines: a manual fix, a restore, another process. " +
      "The chunk rolled back; nothing of it was written.",
    steps: [
      "Find the lines of the month without a billed record: `select l.* from invoice_lines l join " +
      "work_records w on w.id = l.work_record_id where l.billing_month = '<month>-01' and w.invoiced_month is " +
      "distinct from l.billing_month`, find out who wrote them and stop that process.",
      "Delete those lines if they are wrong, or mark their records billed if they are right; then set the " +
      "company's draft from its lines, so nothing is counted twice: `update invoice_drafts d set (line_count, " +
      "wages_yen, transport_yen, fee_yen) = (select count(*), coalesce(sum(wage_yen), 0), " +
      "coalesce(sum(transport_yen), 0), coalesce(sum(fee_yen), 0) from invoice_lines l where l.company_id = " +
      "d.company_id and l.billing_month = d.billing_month) where d.company_id = <company> and d.billing_month = " +
      "'<month>-01'`. Then `billing retry <run> --partition <company> --reason \"<what you did>\"`."
    ]
  })
] as const
