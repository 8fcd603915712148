import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))

export default defineConfig({
  resolve: {
    // Tests run against the sources, so no build is needed first.
    alias: {
      "@chunkwise/core": src("core"),
      "@chunkwise/testing": src("testing"),
      "@chunkwise/adapters-redis": src("adapters-redis"),
      "@chunkwise/adapters-sqs": src("adapters-sqs")
    }
  },
  test: {
    include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "docs/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
