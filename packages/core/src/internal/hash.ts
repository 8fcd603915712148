import * as crypto from "node:crypto"

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"

/**
 * RFC 4648 base32 (lower case, no padding) of the bytes that `hex` spells: safe in URLs, SQL
 * identifiers-as-values and file names. Read four bits a hex digit, so a digest never becomes a Buffer.
 */
export const base32 = (hex: string): string => {
  let out = ""
  let buffer = 0
  let bits = 0
  for (let i = 0; i < hex.length; i++) {
    buffer = ((buffer << 4) | parseHexDigit(hex.charCodeAt(i))) & 0xff
    bits += 4
    if (bits >= 5) {
      out += ALPHABET[(buffer >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += ALPHABET[(buffer << (5 - bits)) & 31]
  return out
}

/** The value of a lower-case hex digit's character code. */
const parseHexDigit = (code: number): number => code <= 57 ? code - 48 : code - 87

/**
 * One-shot sha256 as hex (Node 20.12+): a hex string costs a quarter of a Buffer's allocation, and the
 * one-shot half of a Hash object's, for short inputs.
 */
const sha256: (text: string) => string = typeof crypto.hash === "function"
  ? (text) => crypto.hash("sha256", text, "hex")
  : (text) => crypto.createHash("sha256").update(text).digest("hex")

/** sha256 (hex) over the parts joined by a NUL byte, so ("ab", "c") and ("a", "bc") never collide. */
export const digest = (parts: ReadonlyArray<string | number>): string => sha256(parts.map(String).join("\u0000"))

/** A short stable id: `prefix` + the first `length` base32 characters of the digest. */
export const stableId = (prefix: string, parts: ReadonlyArray<string | number>, length = 26): string =>
  prefix + base32(digest(parts)).slice(0, length)

/** JSON with object keys sorted at every depth, so equal values always give equal text. */
export const canonicalJson = (value: unknown): string => JSON.stringify(sortKeys(value))

const sortKeys = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).sort()) {
      out[key] = sortKeys((value as Record<string, unknown>)[key])
    }
    return out
  }
  return value
}
