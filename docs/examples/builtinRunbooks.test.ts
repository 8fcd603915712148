import { readFileSync } from "node:fs"
import { expect, it } from "vitest"
import { builtinRunbooksMarkdown } from "./builtinRunbooks.js"

it("docs/reference/builtin-errors.md is up to date with Runbook.builtins (npm run docs:runbooks)", () => {
  const file = readFileSync(new URL("../reference/builtin-errors.md", import.meta.url), "utf8")
  expect(file).toBe(builtinRunbooksMarkdown())
})
