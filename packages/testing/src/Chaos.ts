/**
 * The multi-process chaos helper: starts K worker processes (your worker entry point, on a real store
 * and queue), SIGKILLs random ones at random moments on a seeded schedule, restarts them, and stops
 * when your condition holds (e.g. the run ended). Then check the final state as you would after a
 * real incident: no row lost, none doubled.
 *
 * @since 0.1.0
 */
import { Duration, Effect, Ref } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { seeded } from "./internal/seeded.js"

/** How to start one worker process. */
export interface WorkerCommand {
  /** The executable (default: this Node, `process.execPath`). */
  readonly command?: string | undefined
  /** E.g. `["--import", "tsx", "worker.ts"]`. */
  readonly args: ReadonlyArray<string>
  /** Added to this process's environment; `CHUNKWISE_WORKER_ID` is set per process. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /**
   * A line the process prints on stdout once it has installed its signal handlers; the helper waits
   * for it before going on, so a SIGTERM is never sent to a process that cannot drain yet.
   */
  readonly readyLine?: string | undefined
}

/** Options of `run`. */
export interface Options<E, R> {
  readonly worker: WorkerCommand
  /** Worker processes kept running (default 3). */
  readonly processes?: number | undefined
  /** Seeds which process dies and when (default 1). */
  readonly seed?: number | undefined
  /** Mean time between kills (default 1 s); each wait is drawn between half and 1.5 times it. */
  readonly killEvery?: Duration.DurationInput | undefined
  /** At most this many kills (default 5). */
  readonly maxKills?: number | undefined
  /** A killed process is replaced after this long (default 200 ms). */
  readonly restartAfter?: Duration.DurationInput | undefined
  /** Chaos stops once this holds (checked every 100 ms), e.g. "the run has ended". */
  readonly until: Effect.Effect<boolean, E, R>
  /** Fails when `until` has not held after this long (default 2 minutes). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Survivors get SIGTERM and this long to drain and exit before SIGKILL (default 10 s). */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
}

/** A process killed by the helper. */
export interface Kill {
  readonly worker: string
  readonly pid: number | undefined
  /** Milliseconds since the chaos started. */
  readonly atMs: number
}

/** What happened. */
export interface Report {
  readonly started: number
  readonly kills: ReadonlyArray<Kill>
  /** Exit codes of the survivors after SIGTERM (0 when they drained cleanly). */
  readonly survivorExitCodes: ReadonlyArray<number | null>
}

/** The condition did not hold in time, or a worker could not start. */
export class ChaosError extends Error {
  readonly _tag = "ChaosError"
}

const exited = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

interface Running {
  readonly name: string
  readonly child: ChildProcess
}

/** Runs worker processes under random SIGKILLs until `until` holds; every process is gone afterwards. */
export const run = <E, R>(options: Options<E, R>): Effect.Effect<Report, E | ChaosError, R> =>
  Effect.gen(function*() {
    const count = options.processes ?? 3
    if (!Number.isInteger(count) || count < 1) {
      return yield* Effect.fail(new ChaosError(`Chaos.run: processes must be a positive integer (got ${count})`))
    }
    const rng = seeded(options.seed ?? 1)
    const killEveryMs = Duration.toMillis(options.killEvery ?? "1 second")
    const maxKills = options.maxKills ?? 5
    const restartMs = Duration.toMillis(options.restartAfter ?? "200 millis")
    const deadline = Date.now() + Duration.toMillis(options.timeout ?? "2 minutes")
    const startedAt = Date.now()
    let started = 0
    const kills: Array<Kill> = []
    const all = yield* Ref.make<Array<Running>>([])

    const readyLine = options.worker.readyLine
    const start = (slot: number) =>
      Effect.async<Running, ChaosError>((resume) => {
        started += 1
        const name = `chaos-${slot}.${started}`
        const child = spawn(options.worker.command ?? process.execPath, [...options.worker.args], {
          env: { ...process.env, ...options.worker.env, CHUNKWISE_WORKER_ID: name },
          stdio: ["ignore", readyLine === undefined ? "ignore" : "pipe", "inherit"]
        })
        if (readyLine === undefined) return resume(Effect.succeed({ name, child }))
        let seen = ""
        let ready = false
        const onData = (data: Buffer) => {
          seen += data.toString("utf8")
          if (seen.split("\n").some((line) => line.trim() === readyLine)) {
            ready = true
            child.stdout?.off("data", onData)
            child.stdout?.resume()
            resume(Effect.succeed({ name, child }))
          }
        }
        child.stdout?.on("data", onData)
        child.once("exit", (code) =>
          ready ||
          resume(Effect.fail(new ChaosError(`Chaos.run: worker ${name} exited with ${code} before it was ready`))))
      })

    const killAll = Effect.flatMap(Ref.get(all), (running) =>
      Effect.sync(() => running.forEach((r) => r.child.exitCode === null && r.child.kill("SIGKILL"))))

    return yield* Effect.gen(function*() {
      const slots = yield* Effect.all(
        Array.from({ length: count }, (_, i) =>
          start(i + 1)),
        {
          concurrency: "unbounded"
        }
      )
      yield* Ref.set(all, [...slots])
      let nextKill = Date.now() + killEveryMs * (0.5 + rng())
      while (!(yield* options.until)) {
        if (Date.now() > deadline) {
          return yield* Effect.fail(
            new ChaosError(`Chaos.run: the condition did not hold in time (${kills.length} kills so far)`)
          )
        }
        if (kills.length < maxKills && Date.now() >= nextKill) {
          const index = Math.floor(rng() * slots.length)
          const victim = slots[index]!
          victim.child.kill("SIGKILL")
          kills.push({ worker: victim.name, pid: victim.child.pid, atMs: Date.now() - startedAt })
          yield* exited(victim.child)
          yield* Effect.sleep(restartMs)
          slots[index] = yield* start(index + 1)
          yield* Ref.update(all, (r) => [...r, slots[index]!])
          nextKill = Date.now() + killEveryMs * (0.5 + rng())
        }
        yield* Effect.sleep(100)
      }
      for (const survivor of slots) {
        survivor.child.kill("SIGTERM")
      }
      const survivorExitCodes = yield* Effect.forEach(slots, (s) =>
        exited(s.child).pipe(
          Effect.timeoutTo({
            duration: options.shutdownTimeout ?? "10 seconds",
            onSuccess: (code) => code,
            onTimeout: () => "timeout" as const
          }),
          Effect.map((code) => (code === "timeout" ? null : code))
        ))
      return { started, kills, survivorExitCodes }
    }).pipe(Effect.ensuring(killAll))
  })
