/**
 * Connections every module of the package opens the same way: a Redis URL checked without repeating
 * it, a password kept `Redacted`, connection errors logged through Effect by message only, and a
 * client closed with its scope. Also the shared `CHUNKWISE_REDIS_*` config entries.
 */
import type { Errors } from "@chunkwise/core"
import { Config, ConfigError, Effect, Either, Redacted, Runtime, type Scope } from "effect"
import { Redis } from "ioredis"

/** How a module's own connections are opened. */
export interface ConnectionOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS. */
  readonly url: Redacted.Redacted<string>
  /** The password, when it is not in the URL (it wins over the URL's). */
  readonly password?: Redacted.Redacted<string> | undefined
  /** The name the connections show in `CLIENT LIST` (default `chunkwise`; no spaces). */
  readonly connectionName?: string | undefined
}

/** The default connection name. */
export const defaultConnectionName = "chunkwise"

/**
 * What is wrong with a Redis URL, naming the setting, or `undefined` when it is fine. The URL itself
 * is never repeated: it may hold a password.
 */
export const urlProblem = (url: string, setting: string): string | undefined => {
  const fix = "set it to redis://[[user]:password@]host[:port][/db], or rediss://… for TLS"
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return `${setting} is not a URL; ${fix}`
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    return `${setting} has the scheme "${parsed.protocol}", not redis: or rediss:; ${fix}`
  }
  if (parsed.hostname === "") return `${setting} names no host; ${fix}`
  if (parsed.pathname !== "" && parsed.pathname !== "/" && !/^\/\d+$/.test(parsed.pathname)) {
    return `${setting} has the path "${parsed.pathname}", but a Redis URL's path is a database number; ${fix}`
  }
  return undefined
}

/** `CHUNKWISE_REDIS_<name>`. */
export const configName = (name: string) => `CHUNKWISE_REDIS_${name}`

/**
 * The connection's config entries: `CHUNKWISE_REDIS_URL` (required, redacted, checked),
 * `CHUNKWISE_REDIS_PASSWORD` (redacted) and `CHUNKWISE_REDIS_CONNECTION_NAME`.
 */
export const config = {
  url: Config.redacted(configName("URL")).pipe(
    Config.mapOrFail((url) => {
      const problem = urlProblem(Redacted.value(url), configName("URL"))
      return problem === undefined
        ? Either.right(url)
        : Either.left(ConfigError.InvalidData([configName("URL")], problem))
    }),
    Config.withDescription("the Redis URL: redis://[[user]:password@]host[:port][/db] or rediss://…")
  ),
  password: Config.redacted(configName("PASSWORD")).pipe(
    Config.withDefault(undefined),
    Config.withDescription("the Redis password, when it is not in the URL")
  ),
  connectionName: Config.string(configName("CONNECTION_NAME")).pipe(
    Config.withDefault(defaultConnectionName),
    Config.withDescription("the name the connections show in CLIENT LIST")
  )
}

/** A vendor error without what ioredis attaches to it: the failed command's arguments (an AUTH's password). */
export const scrub = (cause: unknown): unknown => {
  if (!(cause instanceof Error) || !("command" in cause)) return cause
  const copy = new Error(cause.message)
  copy.name = cause.name
  if (cause.stack !== undefined) copy.stack = cause.stack
  return copy
}

/** An error's message, or the value as text. */
export const messageOf = (cause: unknown) => cause instanceof Error ? cause.message : String(cause)

/**
 * Acquires a client of the module's own, and disconnects it when the scope closes (after a QUIT that
 * lets its last replies arrive, when `graceful` and connected). Its connection errors are logged
 * through Effect (ioredis would print them to stderr), by message only: ioredis attaches the failed
 * command's arguments to them, an AUTH's password among them. `lastError` is the latest one.
 */
export const ownClient = (open: () => Redis, role: string, graceful: boolean) =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    let lastError: string | undefined
    const listener = (error: Error) => {
      lastError = error.message
      Runtime.runFork(runtime)(
        Effect.logWarning(`chunkwise: Redis ${role} connection: ${error.message}`).pipe(
          Effect.annotateLogs({ package: "@chunkwise/adapters-redis" })
        )
      )
    }
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => open().on("error", listener)),
      (client) =>
        (graceful && client.status === "ready"
          ? Effect.ignore(Effect.timeout(Effect.promise(() => client.quit()), "2 seconds"))
          : Effect.void).pipe(
            Effect.ensuring(Effect.sync(() => {
              client.disconnect()
              client.off("error", listener)
            }))
          )
    )
    return { client, lastError: () => lastError }
  })

/**
 * Opens a client for the options, connected, and quits it when the scope closes. `invalid` words a
 * bad option; `unavailable` a failed connection (given the reason, never the URL, and the scrubbed cause).
 */
export const connect = <E>(
  options: ConnectionOptions,
  errors: {
    readonly invalid: (message: string) => Errors.ConfigurationError
    readonly unavailable: (message: string, cause: unknown) => E
  }
): Effect.Effect<Redis, Errors.ConfigurationError | E, Scope.Scope> =>
  Effect.gen(function*() {
    const problem = urlProblem(Redacted.value(options.url), "url")
    if (problem !== undefined) return yield* errors.invalid(problem)
    const connectionName = options.connectionName ?? defaultConnectionName
    if (connectionName === "" || /\s/.test(connectionName)) {
      return yield* errors.invalid(`connectionName must be a non-empty name without spaces (got "${connectionName}")`)
    }
    const { client, lastError } = yield* ownClient(
      () =>
        new Redis(Redacted.value(options.url), {
          lazyConnect: true,
          connectionName,
          ...(options.password === undefined ? {} : { password: Redacted.value(options.password) })
        }),
      "command",
      true
    )
    yield* Effect.tryPromise({
      try: () => client.connect(),
      // ioredis rejects with "Connection is closed."; the reason came as an error event.
      catch: (cause) => errors.unavailable(lastError() ?? messageOf(cause), scrub(cause))
    })
    return client
  })
