import { Runbook } from "@chunkwise/core"

/** The reference page of chunkwise's built-in error classes, rendered from `Runbook.builtins`. */
export const builtinRunbooksMarkdown = (): string =>
  [
    "# Built-in error classes",
    "",
    "chunkwise's own failures, each with its runbook. Generated from `Runbook.builtins` by",
    "`npm run docs:runbooks`; do not edit by hand.",
    "",
    Runbook.render([{ job: "chunkwise", runbooks: Runbook.builtins.map((b) => b.runbook) }])
      .replace(/^## chunkwise\n\n/, "")
  ].join("\n")
