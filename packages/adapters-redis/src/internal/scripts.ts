/**
 * The queue's Lua scripts: one per file in `src/lua`, each documenting its KEYS and ARGV, defined on a
 * client with `defineCommand` (EVALSHA, falling back to EVAL once after a script cache flush).
 */
import type { Redis } from "ioredis"
import { readFileSync } from "node:fs"

/** Every script, with how many of its arguments are keys. */
export const scripts = {
  receive: 4,
  ack: 1,
  extend: 1,
  release: 2,
  "dead-letter": 2,
  "send-delayed": 1,
  depth: 3,
  redrive: 2
} as const

/** A script's file name, without `.lua`. */
export type Name = keyof typeof scripts

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

let sources: Record<Name, string> | undefined

/** The scripts' sources, with `-- @include <name>` lines replaced by `src/lua/include/<name>.lua`. */
const load = (): Record<Name, string> => {
  if (sources === undefined) {
    const loaded: Partial<Record<Name, string>> = {}
    for (const name of Object.keys(scripts) as Array<Name>) {
      loaded[name] = read(`${name}.lua`).replace(
        /^-- @include ([\w-]+)$/gm,
        (_, include: string) => read(`include/${include}.lua`)
      )
    }
    sources = loaded as Record<Name, string>
  }
  return sources
}

const command = (name: Name) => `chunkwise_${name.replaceAll("-", "_")}`

/**
 * Defines every script on `client` (the names start with `chunkwise_`, so they do not clash with a
 * service's own commands on a shared client) and returns a caller for them.
 */
export const define = (
  client: Redis
): (name: Name, keys: ReadonlyArray<string>, args: ReadonlyArray<Arg>) => Promise<unknown> => {
  const source = load()
  for (const name of Object.keys(scripts) as Array<Name>) {
    client.defineCommand(command(name), { numberOfKeys: scripts[name], lua: source[name] })
  }
  const commands = client as unknown as Record<string, Invoke>
  return (name, keys, args) => {
    if (keys.length !== scripts[name]) throw new Error(`script ${name} takes ${scripts[name]} keys, got ${keys.length}`)
    return commands[command(name)]!.call(client, ...keys, ...args)
  }
}
