import { fileURLToPath } from "node:url"
import { configDefaults, defineConfig } from "vitest/config"

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))

/** Tests that disrupt every other test (e.g. restarting Postgres): they run alone, after all the others. */
const serial = "**/*.serial.test.ts"

export default defineConfig({
  resolve: {
    // Tests run against the sources, so no build is needed first.
    alias: {
      // Subpath entries first: an alias also matches as a prefix.
      "@chunkwise/core/Cli": fileURLToPath(new URL("./packages/core/src/Cli.ts", import.meta.url)),
      "@chunkwise/core/Telemetry": fileURLToPath(new URL("./packages/core/src/Telemetry.ts", import.meta.url)),
      "@chunkwise/core": src("core"),
      "@chunkwise/testing": src("testing"),
      "@chunkwise/adapters-redis": src("adapters-redis"),
      "@chunkwise/adapters-sqs": src("adapters-sqs")
    }
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      {
        extends: true,
        test: {
          name: "default",
          include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "docs/**/*.test.ts"],
          exclude: [...configDefaults.exclude, serial],
          sequence: { groupOrder: 0 }
        }
      },
      {
        // A higher groupOrder starts only when every lower group has finished; one file at a time.
        extends: true,
        test: {
          name: "serial",
          include: [`packages/*/test/${serial}`, `examples/*/test/${serial}`],
          fileParallelism: false,
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
