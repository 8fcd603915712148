/**
 * The simulated-failure harness: runs a job in-process on an engine (memory or Postgres) with faults
 * injected at named points or on a seeded schedule, records what happened (points reached, every
 * execution of the job's effects, every fault), and compares the job's observable final state with
 * the fault-free run. `explore` crashes at every point a small run reaches, one trial per point.
 *
 * @since 0.1.0
 */
import { type Job, Probe, QueueAdapter, Runner, StateStore, Worker } from "@chunkwise/core"
import { Cause, Deferred, Duration, Effect, Exit, Fiber, FiberRef, type Layer, Option, Ref, TestClock } from "effect"
import type { Engine } from "./Engine.js"
import * as Fault from "./Fault.js"
import { seeded } from "./internal/seeded.js"
import { makeQueue, makeStore, type Severable } from "./internal/wrap.js"

/** A point a worker reached. */
export interface Hit {
  /** Order of events in the trial (hits, executions, faults share one counter). */
  readonly seq: number
  readonly worker: string
  readonly point: Fault.Point
  /** Partition key; `""` for the run's completion. */
  readonly partition: string
  readonly step: string
  readonly chunkSeq: number
  readonly attempt: number
}

/** One execution of a step's effect (a chunk, a single step) from start to end. */
export interface Execution {
  readonly worker: string
  /** The partition key; for a range unit of a split step, `<key> range {"from":…,"to":…}`. */
  readonly partition: string
  readonly step: string
  readonly chunkSeq: number
  readonly attempt: number
  readonly start: number
  /** `Infinity` while it runs. */
  end: number
  outcome: "succeeded" | "failed" | "interrupted" | "running"
}

/** A fault as it was injected. */
export interface Injection {
  readonly seq: number
  readonly worker: string
  readonly fault: string
  readonly partition: string
  readonly step: string
  readonly chunkSeq: number
}

/** What one trial did and where it ended. */
export interface Trial<A> {
  readonly runId: string
  readonly seed: number
  readonly faults: ReadonlyArray<Fault.Fault>
  /** The run's final status, or `"unfinished"` when it had not ended by the engine's deadline. */
  readonly status: StateStore.RunStatus | "unfinished"
  readonly observed: Option.Option<A>
  readonly hits: ReadonlyArray<Hit>
  readonly executions: ReadonlyArray<Execution>
  readonly injections: ReadonlyArray<Injection>
  /** Idempotency keys committed more than once for one partition (never, if exactly-once holds). */
  readonly duplicateCommits: ReadonlyArray<string>
  /** Chunks committed, counted from the store's ledger. */
  readonly commits: number
  /** Completion transactions (hook + terminal status) that committed. */
  readonly completions: number
  readonly workersStarted: number
}

/** Options of `run`. */
export interface RunOptions<P, JR, S, E, R, A, EO, RO> {
  readonly engine: Engine<S, E, R>
  readonly job: Job.Job<P, JR>
  readonly params: NoInfer<P>
  readonly faults?: ReadonlyArray<Fault.Fault> | undefined
  /** Seeds every random decision of the trial (default 1). */
  readonly seed?: number | undefined
  /** Workers running at once (default 1); a killed one is replaced. */
  readonly workers?: number | undefined
  /** Units per worker (default: the job's `concurrency.perWorker`). */
  readonly concurrency?: number | undefined
  /** Runs before the trial, e.g. truncating the job's tables. */
  readonly reset?: Effect.Effect<void, EO, RO> | undefined
  /** The job's observable final state, read after the run ended (e.g. a SQL query). */
  readonly observe?: Effect.Effect<A, EO, RO> | undefined
  /** Joins the run key, so trials on a shared store are separate runs (default: the trial number). */
  readonly trial?: number | undefined
}

/** The harness could not run a trial at all (not a finding about the job). */
export class HarnessError extends Error {
  readonly _tag = "HarnessError"
}

interface TrialState {
  seq: number
  readonly rng: () => number
  readonly hits: Array<Hit>
  readonly executions: Array<Execution>
  readonly injections: Array<Injection>
  readonly partitions: Map<string, string>
  readonly occurrences: Map<Fault.Fault, number>
  randomLeft: number
  completions: number
}

const matches = (match: Fault.Match, hit: Pick<Hit, "partition" | "step" | "chunkSeq">) =>
  (match.partition === undefined || match.partition === hit.partition) &&
  (match.step === undefined || match.step === hit.step) &&
  (match.chunkSeq === undefined || match.chunkSeq === hit.chunkSeq)

/** Runs one trial of `job` on the engine with the given faults, to its end. */
export const run = <P, JR, S, E, R, A = void, EO = never, RO = never>(
  options: RunOptions<P, JR, S, E, R, A, EO, RO>
): Effect.Effect<
  Trial<A>,
  E | EO | HarnessError,
  R | Exclude<JR | RO, StateStore.StateStore | QueueAdapter.QueueAdapter | S>
> => {
  const trialNo = options.trial ?? 0
  const layer = options.engine.layer(trialNo) as Layer.Layer<
    StateStore.StateStore | QueueAdapter.QueueAdapter | S,
    E,
    R
  >
  return Effect.scoped(trialIn(options, trialNo)).pipe(Effect.provide(layer)) as never
}

const trialIn = <P, JR, S, E, R, A, EO, RO>(
  options: RunOptions<P, JR, S, E, R, A, EO, RO>,
  trialNo: number
) =>
  Effect.gen(function*() {
    const engine = options.engine
    const timers = engine.timers
    const seed = options.seed ?? 1
    const faults = options.faults ?? []
    const random = faults.find((f): f is Fault.Random => f._tag === "Random")
    const state: TrialState = {
      seq: 0,
      rng: seeded(seed),
      hits: [],
      executions: [],
      injections: [],
      partitions: new Map(),
      occurrences: new Map(),
      randomLeft: random?.max ?? 0,
      completions: 0
    }
    if (options.reset !== undefined) yield* options.reset
    const store = yield* StateStore.StateStore
    const queue = yield* QueueAdapter.QueueAdapter
    const leaseMs = Duration.toMillis(timers.leaseDuration)
    const live = engine.time === "live"
    const finishing = yield* FiberRef.make<{ finished: boolean } | undefined>(undefined)

    const partitionOf = (unitId: string) => state.partitions.get(unitId) ?? unitId
    const record = (worker: string, fault: string, hit: Omit<Hit, "seq" | "worker" | "point" | "attempt">) =>
      state.injections.push({ seq: ++state.seq, worker, fault, ...hit })

    /**
     * The fault that applies at this hit, if any: the first listed whose occurrence this is. Every
     * matching fault counts the hit, so each counts the hits it matches, whichever applies.
     */
    const faultAt = (hit: Hit): Fault.Fault | undefined => {
      let applies: Fault.Fault | undefined = undefined
      for (const fault of faults) {
        if (fault._tag !== "Crash" && fault._tag !== "Slow" && fault._tag !== "Zombie") continue
        const point = fault._tag === "Zombie" ? "after-effect" : fault.point
        if (point !== hit.point || !matches(fault.match, hit)) continue
        const seen = (state.occurrences.get(fault) ?? 0) + 1
        state.occurrences.set(fault, seen)
        const wanted = fault.match.occurrence ?? 1
        if (applies === undefined && (wanted === 0 || wanted === seen)) applies = fault
      }
      if (applies !== undefined) return applies
      if (random !== undefined && hit.point !== "heartbeat" && state.randomLeft > 0 && state.rng() < random.rate) {
        state.randomLeft -= 1
        const kind = random.kinds[Math.floor(state.rng() * random.kinds.length)]!
        const match = { partition: hit.partition, step: hit.step, chunkSeq: hit.chunkSeq }
        if (kind === "slow") return Fault.slow(hit.point, Math.floor(state.rng() * leaseMs / 2), match)
        if (kind === "zombie") return hit.point === "after-effect" ? Fault.zombie(match) : undefined
        return Fault.crash(hit.point, { ...match, kind })
      }
      return undefined
    }

    // ---- worker slots: each runs one worker at a time and replaces it when it is killed
    let started = 0
    const slot = (index: number) =>
      Effect.gen(function*() {
        for (let generation = 1;; generation++) {
          const workerId = `w${index}.${generation}`
          started += 1
          const killed = yield* Deferred.make<void>()
          const paused = yield* Ref.make<Deferred.Deferred<void> | undefined>(undefined)
          const cut: Severable = { severed: false, receipts: new Set() }
          const kill = Effect.suspend(() => {
            cut.severed = true
            return Deferred.succeed(killed, undefined)
          })
          const probe = Probe.make({
            at: (point, info) =>
              Effect.gen(function*() {
                if (cut.severed) return yield* Effect.interrupt
                if (point === "heartbeat") {
                  const gate = yield* Ref.get(paused)
                  if (gate !== undefined) yield* Deferred.await(gate)
                }
                const hit: Hit = {
                  seq: ++state.seq,
                  worker: workerId,
                  point,
                  partition: info.step === "onComplete" ? "" : partitionOf(info.unitId),
                  step: info.step,
                  chunkSeq: info.chunkSeq,
                  attempt: info.attempt
                }
                state.hits.push(hit)
                const fault = faultAt(hit)
                if (fault === undefined) return
                record(workerId, Fault.describe(fault), hit)
                switch (fault._tag) {
                  case "Crash":
                    if (fault.kind === "kill") return yield* Effect.zipRight(kill, Effect.interrupt)
                    if (fault.kind === "interrupt") return yield* Effect.interrupt
                    return yield* Effect.die(new Error(`chunkwise harness: ${Fault.describe(fault)}`))
                  case "Slow":
                    return yield* Effect.sleep(fault.duration)
                  case "Zombie": {
                    const gate = yield* Deferred.make<void>()
                    yield* Ref.set(paused, gate)
                    // Frozen past the lease and the message's visibility, so another worker can take over.
                    yield* Effect.sleep(Math.round(leaseMs * 1.5) + Duration.toMillis(timers.pollInterval) * 4)
                    yield* Ref.set(paused, undefined)
                    yield* Deferred.succeed(gate, undefined)
                    return
                  }
                  default:
                    return
                }
              }),
            around: (info, effect) =>
              Effect.suspend(() => {
                const execution: Execution = {
                  worker: workerId,
                  partition: partitionOf(info.unitId),
                  step: info.step,
                  chunkSeq: info.chunkSeq,
                  attempt: info.attempt,
                  start: ++state.seq,
                  end: Infinity,
                  outcome: "running"
                }
                state.executions.push(execution)
                return Effect.onExit(effect, (exit) =>
                  Effect.sync(() => {
                    execution.end = ++state.seq
                    execution.outcome = Exit.isSuccess(exit)
                      ? "succeeded"
                      : Cause.isInterruptedOnly(exit.cause)
                      ? "interrupted"
                      : "failed"
                  }))
              })
          })
          const wrappedStore = makeStore(store, {
            cut,
            faults,
            rng: state.rng,
            onClaim: (unit) =>
              state.partitions.set(
                unit.unitId,
                unit.kind === "finalize"
                  ? ""
                  : unit.kind === "range"
                  ? `${unit.partitionKey} range ${JSON.stringify(unit.range)}`
                  : unit.partitionKey
              ),
            finishing,
            onCompleted: () => state.completions += 1,
            onInjected: (fault) => record(workerId, fault, { partition: "", step: "", chunkSeq: 0 })
          })
          const wrappedQueue = makeQueue(queue, {
            cut,
            faults,
            rng: state.rng,
            onInjected: (fault) => record(workerId, fault, { partition: "", step: "", chunkSeq: 0 })
          })
          const running = yield* Effect.scoped(
            Effect.gen(function*() {
              yield* Worker.make({
                jobs: [options.job],
                workerId,
                concurrency: options.concurrency,
                leaseDuration: timers.leaseDuration,
                pollInterval: timers.pollInterval,
                feedInterval: timers.feedInterval,
                sweepInterval: timers.sweepInterval,
                shutdownTimeout: timers.shutdownTimeout
              }).pipe(
                Effect.provideService(StateStore.StateStore, wrappedStore),
                Effect.provideService(QueueAdapter.QueueAdapter, wrappedQueue),
                Effect.provideService(Probe.Probe, probe)
              )
              yield* Deferred.await(killed)
            })
          ).pipe(Effect.exit)
          if (Exit.isFailure(running) && !Cause.isInterruptedOnly(running.cause)) {
            // A killed worker's shutdown meets the cut connection; anything else is the harness's problem.
            if (!cut.severed) return yield* Effect.failCause(running.cause)
          }
          // The broker and the store would let the dead worker's messages and leases expire; do it now.
          // (Leases first: a message released before its lease expired would only be put off again.)
          if (engine.expireLeases !== undefined) yield* Effect.orDie(engine.expireLeases(workerId))
          for (const receipt of cut.receipts) yield* Effect.ignore(queue.release(receipt, 0))
          yield* Effect.sleep(timers.restartDelay)
        }
      })

    const slots: Array<Fiber.RuntimeFiber<void, unknown>> = []
    for (let i = 1; i <= (options.workers ?? 1); i++) slots.push(yield* Effect.forkScoped(slot(i)))

    const { runId } = yield* Runner.start(options.job, options.params, { rerun: `harness-${trialNo}` }).pipe(
      Effect.mapError((e) => new HarnessError(`the harness could not start the run: ${String(e)}`))
    )
    const ended = Effect.map(store.getRun(runId), (run) =>
      Option.match(run, {
        onNone: () => undefined,
        onSome: (r) => StateStore.isTerminalRun(r.status) ? r.status : undefined
      }))
    const deadlineMs = Duration.toMillis(timers.deadline)
    const stepMs = live ? 25 : 1000
    let status: StateStore.RunStatus | "unfinished" = "unfinished"
    for (let waited = 0; waited <= deadlineMs; waited += stepMs) {
      const now = yield* Effect.orDie(ended)
      if (now !== undefined) {
        status = now
        break
      }
      for (const fiber of slots) {
        const done = yield* Fiber.poll(fiber)
        if (Option.isSome(done) && Exit.isFailure(done.value)) {
          return yield* Effect.die(Cause.squash(done.value.cause))
        }
      }
      if (live) yield* Effect.sleep(stepMs)
      else {
        yield* TestClock.adjust(stepMs)
        for (let j = 0; j < 5; j++) yield* Effect.yieldNow()
      }
    }
    // Let the workers settle (a completion whose reply was lost is re-checked), then stop them. A
    // worker's shutdown waits, on the clock, for its units (a retry backoff, say) up to its shutdown
    // timeout: under TestClock time must keep moving while they stop, or the trial never ends.
    if (!live) yield* TestClock.adjust(leaseMs)
    const stopping = yield* Effect.fork(Effect.forEach(slots, Fiber.interrupt, { discard: true }))
    if (!live) {
      while (Option.isNone(yield* Fiber.poll(stopping))) {
        yield* TestClock.adjust(stepMs)
        for (let j = 0; j < 5; j++) yield* Effect.yieldNow()
      }
    }
    yield* Fiber.join(stopping)

    const units = yield* Effect.orDie(store.listUnits(runId, { limit: 100_000 }))
    const duplicateCommits: Array<string> = []
    let commits = 0
    for (const unit of units) {
      const keys = yield* Effect.orDie(store.ledger(runId, unit.unitId))
      commits += keys.length
      const seen = new Set<string>()
      for (const key of keys) {
        if (seen.has(key)) duplicateCommits.push(`${unit.partitionKey}: ${key}`)
        seen.add(key)
      }
    }
    const observed = options.observe === undefined ? Option.none() : Option.some(yield* options.observe)
    const trial: Trial<A> = {
      runId,
      seed,
      faults,
      status,
      observed,
      hits: state.hits,
      executions: state.executions,
      injections: state.injections,
      duplicateCommits,
      commits,
      completions: state.completions,
      workersStarted: started
    }
    return trial
  })

/** A place `explore` crashes at: a point as the fault-free run reached it. */
export interface Site {
  readonly point: Fault.Point
  readonly partition: string
  readonly step: string
  readonly chunkSeq: number
  /** Which time the fault-free run reached this point for this chunk (retries reach it again). */
  readonly occurrence: number
}

/** A trial whose outcome differs from the fault-free run. */
export interface Divergence<A> {
  /** What was injected; pass it as `faults` to `run`, with `seed`, to reproduce. */
  readonly faults: ReadonlyArray<Fault.Fault>
  readonly seed: number
  /** The trial's sentence for the fault, e.g. "kill the worker at after-effect of p1 / step apply / chunk 2". */
  readonly description: string
  /** What differs. */
  readonly reasons: ReadonlyArray<string>
  readonly expected: Option.Option<A>
  readonly actual: Option.Option<A>
  readonly trial: Trial<A>
}

/** What `explore` found. */
export interface Report<A> {
  readonly engine: string
  /** Trials run, not counting the fault-free one. */
  readonly tried: number
  /** Sites whose crash point was not reached in its trial (another path was taken). */
  readonly notReached: number
  readonly sites: ReadonlyArray<Site>
  readonly baseline: Trial<A>
  readonly divergences: ReadonlyArray<Divergence<A>>
}

/** Options of `explore`. */
export interface ExploreOptions<P, JR, S, E, R, A, EO, RO>
  extends Omit<RunOptions<P, JR, S, E, R, A, EO, RO>, "faults" | "seed" | "trial" | "observe">
{
  /** The job's observable final state, compared with the fault-free run's. */
  readonly observe: Effect.Effect<A, EO, RO>
  /** How to crash at each site (default `["kill"]`). */
  readonly kinds?: ReadonlyArray<Fault.CrashKind> | undefined
  /** Only these points (default: all of them). */
  readonly points?: ReadonlyArray<Fault.Point> | undefined
  /** Also run this many trials on random schedules, seeds 1..n (default 0). */
  readonly randomTrials?: number | undefined
  /** The schedule of random trials (default `Fault.random({ rate: 0.1 })` plus 5 % duplicates). */
  readonly random?: ReadonlyArray<Fault.Fault> | undefined
}

/** Canonical JSON (object keys sorted), so equal states compare equal whatever their key order. */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_, v) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : typeof v === "bigint"
      ? v.toString()
      : v)

/** Where two observed states differ, briefly (the first few differing keys of an object). */
const difference = (expected: unknown, actual: unknown): string => {
  if (
    expected !== null && actual !== null && typeof expected === "object" && typeof actual === "object" &&
    !Array.isArray(expected) && !Array.isArray(actual)
  ) {
    const e = expected as Record<string, unknown>
    const a = actual as Record<string, unknown>
    const keys = [...new Set([...Object.keys(e), ...Object.keys(a)])].sort()
    const differing = keys.filter((k) => canonical(e[k]) !== canonical(a[k]))
    const shown = differing.slice(0, 5).map((k) => `${k}: expected ${canonical(e[k])}, got ${canonical(a[k])}`)
    return `${differing.length} of ${keys.length} keys differ (${shown.join("; ")}${
      differing.length > 5 ? "; ..." : ""
    })`
  }
  return `expected ${canonical(expected)}, got ${canonical(actual)}`
}

/** Everything that makes a trial differ from the fault-free run. */
export const compare = <A>(baseline: Trial<A>, trial: Trial<A>): ReadonlyArray<string> => {
  const reasons: Array<string> = []
  if (trial.status === "unfinished") reasons.push("the run did not finish")
  else if (trial.status !== baseline.status) {
    reasons.push(`the run ended ${trial.status}; the fault-free run ended ${baseline.status}`)
  }
  if (trial.duplicateCommits.length > 0) {
    reasons.push(`chunks committed twice: ${trial.duplicateCommits.slice(0, 3).join(", ")}`)
  }
  if (trial.status !== "unfinished" && trial.completions !== 1) {
    reasons.push(`the completion committed ${trial.completions} times`)
  }
  const expected = Option.getOrUndefined(baseline.observed)
  const actual = Option.getOrUndefined(trial.observed)
  if (canonical(expected) !== canonical(actual)) {
    reasons.push(`the observed state differs: ${difference(expected, actual)}`)
  }
  return reasons
}

/** The sites of a fault-free trial: every point it reached, heartbeats once. */
export const sitesOf = (baseline: Trial<unknown>, only?: ReadonlyArray<Fault.Point>): ReadonlyArray<Site> => {
  const seen = new Map<string, number>()
  const sites: Array<Site> = []
  for (const hit of baseline.hits) {
    if (only !== undefined && !only.includes(hit.point)) continue
    const place = hit.point === "heartbeat" ? "heartbeat" : `${hit.point}|${hit.partition}|${hit.step}|${hit.chunkSeq}`
    const occurrence = (seen.get(place) ?? 0) + 1
    seen.set(place, occurrence)
    if (hit.point === "heartbeat" && occurrence > 1) continue
    sites.push(
      hit.point === "heartbeat"
        ? { point: "heartbeat", partition: "", step: "", chunkSeq: 0, occurrence: 1 }
        : { point: hit.point, partition: hit.partition, step: hit.step, chunkSeq: hit.chunkSeq, occurrence }
    )
  }
  return sites
}

const faultAtSite = (site: Site, kind: Fault.CrashKind): Fault.Crash =>
  site.point === "heartbeat"
    ? Fault.crash("heartbeat", { kind })
    : Fault.crash(site.point, {
      kind,
      partition: site.partition,
      step: site.step,
      chunkSeq: site.chunkSeq,
      occurrence: site.occurrence
    })

/**
 * Runs the job once without faults, then once per site (every point the fault-free run reached) and
 * crash kind, crashing there and running on to the end, and compares each outcome with the fault-free
 * one: the run's status, chunks committed once, the completion committed once, and `observe`.
 */
export const explore = <P, JR, S, E, R, A, EO, RO>(
  options: ExploreOptions<P, JR, S, E, R, A, EO, RO>
): Effect.Effect<
  Report<A>,
  E | EO | HarnessError,
  R | Exclude<JR | RO, StateStore.StateStore | QueueAdapter.QueueAdapter | S>
> =>
  Effect.gen(function*() {
    let trialNo = 0
    const trial = (faults: ReadonlyArray<Fault.Fault>, seed: number) =>
      run({ ...options, faults, seed, trial: trialNo++ })
    const baseline = yield* trial([], 1)
    if (baseline.status === "unfinished") {
      return yield* Effect.fail(new HarnessError("the fault-free run did not finish: fix the job or the engine first"))
    }
    const sites = sitesOf(baseline, options.points)
    const divergences: Array<Divergence<A>> = []
    let tried = 0
    let notReached = 0
    const check = (faults: ReadonlyArray<Fault.Fault>, seed: number, result: Trial<A>) => {
      const reasons = compare(baseline, result)
      if (reasons.length === 0) return
      divergences.push({
        faults,
        seed,
        description: faults.map(Fault.describe).join("; "),
        reasons,
        expected: baseline.observed,
        actual: result.observed,
        trial: result
      })
    }
    for (const kind of options.kinds ?? ["kill"]) {
      for (const site of sites) {
        const faults = [faultAtSite(site, kind)]
        const result = yield* trial(faults, 1)
        tried += 1
        if (result.injections.length === 0) notReached += 1
        check(faults, 1, result)
      }
    }
    const schedule = options.random ?? [Fault.random({ rate: 0.1 }), Fault.duplicateDelivery(0.05)]
    for (let seed = 1; seed <= (options.randomTrials ?? 0); seed++) {
      const result = yield* trial(schedule, seed)
      tried += 1
      check(schedule, seed, result)
    }
    return { engine: options.engine.name, tried, notReached, sites, baseline, divergences }
  })

/** The report as text: what was tried and, per divergence, the fault, the seed and what differs. */
export const format = (report: Report<unknown>): string => {
  const lines = [
    `explore on ${report.engine}: ${report.tried} trials over ${report.sites.length} crash sites, ` +
    `${report.notReached} not reached, ${report.divergences.length} divergent`
  ]
  for (const d of report.divergences) {
    lines.push(`- ${d.description} (seed ${d.seed}, run ${d.trial.runId})`)
    for (const reason of d.reasons) lines.push(`    ${reason}`)
    if (d.trial.injections.length > 0) {
      lines.push(`    injected: ${d.trial.injections.map((i) => `${i.fault} [${i.worker}]`).join("; ")}`)
    }
  }
  return lines.join("\n")
}

/** Fails (for a test) unless every trial matched the fault-free run; the message is `format(report)`. */
export const assertNoDivergence = (report: Report<unknown>): void => {
  if (report.divergences.length > 0) throw new Error(format(report))
}

/** The trial's observed state; throws when the trial had no `observe`. */
export const observedOrThrow = <A>(trial: Trial<A>): A =>
  Option.getOrThrowWith(trial.observed, () => new HarnessError("the trial has no observed state: pass `observe`"))
