import { describe, expect, it } from "@effect/vitest"
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  type MetricData,
  PeriodicExportingMetricReader
} from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { ConfigProvider, Effect, Exit, Layer, Redacted, TestClock } from "effect"
import { Runner, Worker } from "../src/index.js"
import * as Telemetry from "../src/Telemetry.js"
import { driveUntil, fastWorker, memoryEngine, recorder, runEnded, testJob } from "./fixtures.js"

/** The SDK with in-memory span and metric exporters; what they hold is read after the body. */
const capture = () => {
  const spans = new InMemorySpanExporter()
  const metrics = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter: metrics, exportIntervalMillis: 3_600_000 })
  const layer = Telemetry.layer({
    serviceName: "telemetry-test",
    spanProcessors: [new SimpleSpanProcessor(spans)],
    metricReaders: [reader]
  })
  const collect = Effect.promise(async () => {
    await reader.forceFlush()
    return metrics.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics))
  })
  return { spans, layer, collect }
}

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId
const attr = (span: ReadableSpan, key: string) => span.attributes[key]
const points = (metrics: ReadonlyArray<MetricData>, name: string) =>
  metrics.filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints as ReadonlyArray<any>)

describe("Telemetry", () => {
  it.scoped("spans form run → unit → step → chunk, with the attributes an operator searches by", () => {
    const { collect, layer, spans } = capture()
    return Effect.gen(function*() {
      const rec = recorder()
      const job = testJob(rec, { name: "traced", partitions: 2, itemsPerPartition: 5, badItems: [1003] })
      yield* Worker.make({ jobs: [job], ...fastWorker })
      const { runId } = yield* Runner.start(job, { label: "trace" })
      yield* driveUntil(runEnded(runId))

      const finished = spans.getFinishedSpans()
      const units = finished.filter((s) =>
        s.name === "chunkwise.unit" && attr(s, "chunkwise.unit_kind") === "partition"
      )
      const steps = finished.filter((s) => s.name === "chunkwise.step")
      const chunks = finished.filter((s) => s.name === "chunkwise.chunk")
      expect(units.map((s) => attr(s, "chunkwise.partition")).sort()).toEqual(["p0", "p1"])
      // One trace for the whole run, whichever unit: its id derives from the run id.
      const ofRun = finished.filter((s) => s.name !== "chunkwise.feed")
      expect(ofRun.some((s) => s.name === "chunkwise.start"), "the start hangs from the run's trace").toBe(true)
      const traceIds = new Set(ofRun.map((s) => s.spanContext().traceId))
      expect(traceIds.size).toBe(1)
      const runSpanId = parentOf(units[0]!)
      expect(runSpanId).toBeDefined()
      for (const unit of units) {
        expect(parentOf(unit)).toBe(runSpanId)
        expect(unit.attributes).toMatchObject({ "chunkwise.job": "traced", "chunkwise.run_id": runId })
      }
      // p0 ran both steps; p1 failed in its first step.
      const stepsOf = (partition: string) => steps.filter((s) => attr(s, "chunkwise.partition") === partition)
      expect(stepsOf("p0").map((s) => attr(s, "chunkwise.step"))).toEqual(["apply", "summarise"])
      expect(stepsOf("p1").map((s) => attr(s, "chunkwise.step"))).toEqual(["apply"])
      for (const step of steps) {
        const unit = units.find((u) => attr(u, "chunkwise.partition") === attr(step, "chunkwise.partition"))!
        expect(parentOf(step)).toBe(unit.spanContext().spanId)
      }
      for (const chunk of chunks) {
        const step = steps.find((s) => s.spanContext().spanId === parentOf(chunk))
        expect(step, "every chunk hangs from its step").toBeDefined()
        expect(attr(chunk, "chunkwise.step")).toBe(attr(step!, "chunkwise.step"))
        expect(attr(chunk, "chunkwise.idempotency_key")).toMatch(/^cw1_/)
        expect(typeof attr(chunk, "chunkwise.chunk_seq")).toBe("number")
      }
      const p0Apply = chunks.filter((c) =>
        attr(c, "chunkwise.partition") === "p0" && attr(c, "chunkwise.step") === "apply"
      )
      expect(p0Apply.map((c) => attr(c, "chunkwise.chunk_seq"))).toEqual([0, 1])
      expect(p0Apply.map((c) => attr(c, "chunkwise.cursor"))).toEqual(["start", JSON.stringify({ next: 3 })])
      // The failed chunk carries its error class, and so does its unit.
      const failed = chunks.filter((c) => attr(c, "chunkwise.error_tag") !== undefined)
      expect(failed.map((c) => [attr(c, "chunkwise.partition"), attr(c, "chunkwise.chunk_seq")])).toEqual([["p1", 1]])
      expect(attr(failed[0]!, "chunkwise.error_tag")).toBe("BadRecord")
      expect(failed[0]!.status.code).toBe(2) // SpanStatusCode.ERROR
      expect(attr(units.find((u) => attr(u, "chunkwise.partition") === "p1")!, "chunkwise.error_tag")).toBe("BadRecord")

      // Let a sweep sample the gauges.
      yield* TestClock.adjust("3 seconds")
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      const metrics = yield* collect
      const forJob = (name: string) => points(metrics, name).filter((p) => p.attributes.job === "traced")
      expect(forJob("chunkwise_chunks_total").map((p) => [p.attributes.step, p.value]).sort()).toEqual([
        ["apply", 3], // p0: 2 chunks, p1: 1 chunk before the bad one
        ["summarise", 1]
      ])
      expect(forJob("chunkwise_items_total").reduce((n, p) => n + p.value, 0)).toBe(8)
      expect(forJob("chunkwise_failures_total").map((p) => [p.attributes.error_tag, p.value])).toEqual([
        ["BadRecord", 1]
      ])
      const durations = forJob("chunkwise_partition_duration_seconds")
      expect(durations.map((p) => [p.attributes.outcome, p.value.count]).sort()).toEqual([
        ["failed", 1],
        ["succeeded", 1]
      ])
      expect(metrics.find((m) => m.descriptor.name === "chunkwise_partition_duration_seconds")?.dataPointType).toBe(
        DataPointType.HISTOGRAM
      )
      // Sampled on the sweep: queue depth by state and the store's backlog.
      expect(points(metrics, "chunkwise_queue_messages").map((p) => p.attributes.state).sort()).toEqual([
        "dead",
        "delayed",
        "in_flight",
        "ready"
      ])
      expect(points(metrics, "chunkwise_units").map((p) => p.attributes.state).sort()).toEqual([
        "delayed",
        "expired_lease",
        "ready",
        "running"
      ])
      expect(points(metrics, "chunkwise_queue_oldest_ready_age_seconds")).toHaveLength(1)
    }).pipe(Effect.provide(Layer.merge(memoryEngine(), layer)))
  })

  it.effect("layerConfig exports only when OTEL_EXPORTER_OTLP_ENDPOINT is set, and keeps headers redacted", () =>
    Effect.gen(function*() {
      const read = (env: Record<string, string>) =>
        Effect.withConfigProvider(Telemetry.fromEnv, ConfigProvider.fromMap(new Map(Object.entries(env))))
      const off = yield* read({})
      expect(off).toMatchObject({ serviceName: "chunkwise", otlp: undefined })
      const on = yield* read({
        OTEL_SERVICE_NAME: "billing-worker",
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/",
        OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=s%3Dcret, tenant = acme"
      })
      expect(on.serviceName).toBe("billing-worker")
      expect(on.otlp?.url).toBe("http://collector:4318/")
      const headers = on.otlp?.headers ?? {}
      expect(Object.keys(headers).sort()).toEqual(["tenant", "x-api-key"])
      expect(Redacted.value(headers["x-api-key"]!)).toBe("s=cret")
      expect(String(headers["x-api-key"])).not.toContain("cret")
      // A layer with OTLP export builds and shuts down (its final export is refused at once by a closed port).
      const built = yield* Effect.exit(
        Layer.build(Telemetry.layer({ ...on, otlp: { ...on.otlp!, url: "http://127.0.0.1:9" } })).pipe(Effect.scoped)
      )
      expect(Exit.isSuccess(built)).toBe(true)
      const bad = yield* Effect.exit(
        Layer.build(Telemetry.layer({ serviceName: "x", otlp: { url: "collector:4318" } })).pipe(Effect.scoped)
      )
      expect(Exit.isFailure(bad) && JSON.stringify(bad.cause)).toContain("http(s)")
    }))
})
