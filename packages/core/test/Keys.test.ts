/**
 * D9: idempotency keys, item keys, run ids and unit ids are part of what a run has already written (the
 * ledger, the user's own tables, a payment provider's idempotency store). A worker of a later version
 * must derive the very same strings for the same inputs, or a re-run after an upgrade would redo work
 * under new keys. These values are pinned: a change that moves one is a breaking change of every
 * running job, and must not pass.
 */
import { describe, expect, it } from "@effect/vitest"
import * as crypto from "node:crypto"
import { Job, Worker } from "../src/index.js"

/** RFC 4648 base32, lower case, no padding: written out here, independently of the library's. */
const referenceBase32 = (bytes: Uint8Array): string => {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
  const bits = [...bytes].map((b) => b.toString(2).padStart(8, "0")).join("")
  let out = ""
  for (let i = 0; i < bits.length; i += 5) out += alphabet[parseInt(bits.slice(i, i + 5).padEnd(5, "0"), 2)]
  return out
}
const referenceSha256 = (parts: ReadonlyArray<string | number>) =>
  crypto.createHash("sha256").update(parts.map(String).join("\u0000")).digest()

const input = {
  job: "monthly-billing",
  runId: "run_abc",
  unitId: "p_xyz",
  partition: "42",
  step: "bill-records",
  generation: 0,
  chunkSeq: 7
}

describe("keys (D9)", () => {
  it("a chunk's idempotency key is cw1_ + base32(sha256(job, runId, unitId, step, generation, chunkSeq))", () => {
    const key = Worker.defaultKey(input)
    expect(key).toBe("cw1_k5xauqp75rfabdc2iakst7kyie43wtmt2533idoszkznsi252uka")
    expect(key).toBe(
      "cw1_" + referenceBase32(referenceSha256(["monthly-billing", "run_abc", "p_xyz", "bill-records", 0, 7]))
    )
    expect(
      Worker.defaultKey({
        job: "j",
        runId: "r",
        unitId: "u",
        partition: "",
        step: "onComplete",
        generation: 3,
        chunkSeq: 0
      })
    )
      .toBe("cw1_wpsoqhlf2s6d3wofracttjoyel66ijmv6f6fq52bgpfvqjmftbha")
    // The partition key is not part of it (the unit id already is); every other input is.
    expect(Worker.defaultKey({ ...input, partition: "other" })).toBe(Worker.defaultKey(input))
    for (const changed of [{ chunkSeq: 8 }, { generation: 1 }, { step: "issue-invoice" }, { unitId: "p_xy" }]) {
      expect(Worker.defaultKey({ ...input, ...changed })).not.toBe(Worker.defaultKey(input))
    }
  })

  it("an item's key derives from its chunk's key and the item id, whatever the id's type", () => {
    const key = Worker.defaultKey(input)
    expect(Worker.itemKeyOf(key, 1001)).toBe("cw1i_67icn4t74eg6yqf6ddims6uohhv5w6wduzz4xwbt")
    expect(Worker.itemKeyOf(key, "1001")).toBe(Worker.itemKeyOf(key, 1001))
    expect(Worker.itemKeyOf(key, 9007199254740993n)).toBe("cw1i_ie5j42btrrztkgesmxkci6u64rc6zv4iw6l5tdip")
    expect(Worker.itemKeyOf(key, 1001)).toBe("cw1i_" + referenceBase32(referenceSha256([key, "1001"])).slice(0, 40))
  })

  it("a run's id derives from its job and run key, a unit's from its run and partition key", () => {
    expect(Job.runIdOf("monthly-billing", "{\"month\":\"2026-10\"}")).toBe("run_s7yr2yflygtawlgcwdyicmaw6l")
    expect(Job.unitIdOf("run_abc", "company-42")).toBe("p_pu3gbbugi5n7faubu7wh")
  })
})
