/**
 * Chunk sizes between bounds, steered by how long each chunk's transaction took (its lock time): a
 * chunk over the target shrinks the next in proportion; one well under it doubles the next (at most),
 * so a step finds the largest chunk that keeps its locks short, and backs off when the database slows.
 */

/** How a chunked step sizes its chunks. */
export type Sizing =
  | { readonly _tag: "Fixed"; readonly size: number }
  | {
    readonly _tag: "Adaptive"
    readonly min: number
    readonly max: number
    readonly initial: number
    /** The chunk time aimed at, in ms. */
    readonly targetMs: number
  }

/** The first chunk's size. */
export const initialSize = (sizing: Sizing): number => sizing._tag === "Fixed" ? sizing.size : sizing.initial

/** The next chunk's size after a chunk of `size` items took `durationMs`. */
export const nextSize = (sizing: Sizing, size: number, durationMs: number): number => {
  if (sizing._tag === "Fixed") return sizing.size
  const clamp = (n: number) => Math.max(sizing.min, Math.min(sizing.max, Math.floor(n)))
  if (durationMs <= 0) return clamp(size * 2)
  // Aim a little under the target, so normal jitter does not push every other chunk over it.
  const fitting = (size * sizing.targetMs * 0.9) / durationMs
  if (durationMs > sizing.targetMs) return clamp(fitting)
  if (durationMs < sizing.targetMs / 2) return clamp(Math.min(size * 2, fitting))
  return clamp(size)
}
