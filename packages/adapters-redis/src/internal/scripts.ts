/**
 * The package's Lua scripts: one per file in `src/lua`, each documenting its KEYS and ARGV, defined on a
 * client with `defineCommand` (EVALSHA, falling back to EVAL once after a script cache flush).
 */
import type { Redis } from "ioredis"
import { readFileSync } from "node:fs"

/** A module's scripts (file names without `.lua`), with how many keys each takes (`"any"`: as many as given). */
export type Table = Readonly<Record<string, number | "any">>

/** The queue's scripts. */
export const queue = {
  receive: 4,
  ack: 4,
  extend: 1,
  release: 2,
  "dead-letter": 2,
  "send-delayed": 1,
  depth: 3,
  redrive: 2
} as const satisfies Table

/** The resource limiter's scripts. */
export const limiter = {
  "limiter-reserve": 2,
  "limiter-claim": 3,
  "limiter-renew": 1,
  "limiter-write": 4,
  "limiter-read": "any"
} as const satisfies Table

type Arg = string | number

type Invoke = (...args: ReadonlyArray<Arg>) => Promise<unknown>

// `src/lua` from `src/internal/` and from `dist/internal/` alike: the package ships `src`.
const directory = new URL("../../src/lua/", import.meta.url)

const read = (file: string): string => {
  try {
    return readFileSync(new URL(file, directory), "utf8")
  } catch (cause) {
    throw new Error(
      `@chunkwise/adapters-redis: cannot read its Lua script ${new URL(file, directory).pathname}; ` +
        `the package must be installed with its src directory`,
      { cause }
    )
  }
}

const sources = new Map<string, string>()

/** A script's source, with `-- @include <name>` lines replaced by `src/lua/include/<name>.lua`. */
const load = (name: string): string => {
  let source = sources.get(name)
  if (source === undefined) {
    source = read(`${name}.lua`).replace(
      /^-- @include ([\w-]+)$/gm,
      (_, include: string) => read(`include/${include}.lua`)
    )
    sources.set(name, source)
  }
  return source
}

const command = (name: string) => `chunkwise_${name.replaceAll("-", "_")}`

/**
 * Defines every script of `table` on `client` (the names start with `chunkwise_`, so they do not clash
 * with a service's own commands on a shared client) and returns a caller for them.
 */
export const define = <T extends Table>(
  client: Redis,
  table: T
): (name: keyof T & string, keys: ReadonlyArray<string>, args: ReadonlyArray<Arg>) => Promise<unknown> => {
  for (const name of Object.keys(table)) {
    const keys = table[name]!
    // Without numberOfKeys, ioredis takes the key count as the first argument of each call.
    client.defineCommand(command(name), { ...(keys === "any" ? {} : { numberOfKeys: keys }), lua: load(name) })
  }
  const commands = client as unknown as Record<string, Invoke>
  const invokers = new Map(Object.keys(table).map((name) => [name, commands[command(name)]!]))
  return (name, keys, args) => {
    const count = table[name]!
    const invoke = invokers.get(name)!
    if (count === "any") return invoke.call(client, keys.length, ...keys, ...args)
    if (keys.length !== count) throw new Error(`script ${name} takes ${count} keys, got ${keys.length}`)
    return invoke.call(client, ...keys, ...args)
  }
}
