// Writes docs/reference/builtin-errors.md from the code, so the reference never drifts from it.
// Run: npm run docs:runbooks (a test fails when the file is out of date).
import { writeFileSync } from "node:fs"
import { builtinRunbooksMarkdown } from "../docs/examples/builtinRunbooks.js"

writeFileSync(new URL("../docs/reference/builtin-errors.md", import.meta.url), builtinRunbooksMarkdown())
