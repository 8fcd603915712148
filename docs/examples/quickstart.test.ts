import { expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import { program } from "./quickstart.js"

it.live("the README quick start runs to success on real time", () =>
  Effect.gen(function*() {
    const result = yield* program.pipe(Logger.withMinimumLogLevel(LogLevel.None))
    expect(result).toEqual({ status: "succeeded", ticks: 75 })
  }))
