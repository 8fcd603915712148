/**
 * Telemetry for chunkwise services with `@effect/opentelemetry`: the worker's spans (run → unit →
 * step → chunk) and its metrics (module `Metrics`) go to OpenTelemetry, and leave the process by
 * OTLP/HTTP only when an endpoint is configured. Without one, `layer` installs the tracer and the
 * metric bridge for any extra span processors or metric readers you pass, and exports nothing.
 *
 * Import it from `@chunkwise/core/Telemetry`: it needs the optional peer dependencies
 * `@effect/opentelemetry`, `@opentelemetry/api`, `@opentelemetry/resources`,
 * `@opentelemetry/sdk-trace-base`, `@opentelemetry/sdk-trace-node`, `@opentelemetry/sdk-metrics`,
 * `@opentelemetry/semantic-conventions`, `@opentelemetry/exporter-trace-otlp-http` and
 * `@opentelemetry/exporter-metrics-otlp-http`, which services that do not export telemetry never load.
 *
 * Spans of one run share one trace, whichever process ran them: its trace id derives from the run id
 * (D19). Each unit execution is a `chunkwise.unit` span, with a `chunkwise.step` span per step and a
 * `chunkwise.chunk` span per chunk beneath it.
 *
 * @since 0.1.0
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import type * as OtelResource from "@effect/opentelemetry/Resource"
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import { type MetricReader, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Config, type ConfigError, Duration, Effect, Layer, Option, Redacted } from "effect"
import * as Errors from "./Errors.js"

/** Where and how to export by OTLP/HTTP. */
export interface OtlpOptions {
  /** The collector's base URL, e.g. `http://otel-collector:4318`; traces go to `/v1/traces`, metrics to `/v1/metrics`. */
  readonly url: string
  /** Headers for every export (e.g. an API key); secrets, so `Redacted`, and never logged. */
  readonly headers?: Readonly<Record<string, Redacted.Redacted<string>>> | undefined
  /** How often metrics are exported (default 60 s). */
  readonly metricsInterval?: Duration.DurationInput | undefined
}

/** Options of the telemetry layer. */
export interface Options {
  /** `service.name` of the resource, e.g. `billing-worker`. */
  readonly serviceName: string
  readonly serviceVersion?: string | undefined
  /** Extra resource attributes, e.g. `{ "deployment.environment": "prod" }`. */
  readonly attributes?: Readonly<Record<string, string>> | undefined
  /** Export by OTLP/HTTP; when absent nothing leaves the process (the default). */
  readonly otlp?: OtlpOptions | undefined
  /** More span processors, e.g. a `SimpleSpanProcessor` over an `InMemorySpanExporter` in tests. */
  readonly spanProcessors?: ReadonlyArray<SpanProcessor> | undefined
  /** More metric readers, e.g. a `PrometheusExporter` or a reader that tests collect from. */
  readonly metricReaders?: ReadonlyArray<MetricReader> | undefined
}

const trimSlash = (url: string) => url.replace(/\/+$/, "")

const headersOf = (otlp: OtlpOptions) => async () =>
  Object.fromEntries(Object.entries(otlp.headers ?? {}).map(([key, value]) => [key, Redacted.value(value)]))

const checkUrl = (url: string) =>
  Effect.try({
    try: () => new URL(url),
    catch: () =>
      new Errors.ConfigurationError({
        message:
          `Telemetry: otlp.url "${url}" is not a URL; give the collector's base URL, e.g. http://otel-collector:4318`
      })
  }).pipe(
    Effect.filterOrFail(
      (parsed) => parsed.protocol === "http:" || parsed.protocol === "https:",
      () =>
        new Errors.ConfigurationError({
          message: `Telemetry: otlp.url "${url}" must be http(s), e.g. http://otel-collector:4318 (OTLP/HTTP)`
        })
    )
  )

/**
 * The telemetry layer: provide it beside the worker (or the CLI) to export its spans and metrics.
 *
 * @example
 * ```ts
 * import * as Telemetry from "@chunkwise/core/Telemetry"
 *
 * const TelemetryLive = Telemetry.layer({
 *   serviceName: "billing-worker",
 *   otlp: { url: "http://otel-collector:4318", headers: { "x-api-key": Redacted.make(key) } }
 * })
 * Worker.layer({ jobs }).pipe(Layer.provide(engine), Layer.provide(TelemetryLive), Layer.launch, NodeRuntime.runMain)
 * ```
 */
export const layer = (
  options: Options
): Layer.Layer<OtelResource.Resource, Errors.ConfigurationError> =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const spanProcessors: Array<SpanProcessor> = [...(options.spanProcessors ?? [])]
    const metricReaders: Array<MetricReader> = [...(options.metricReaders ?? [])]
    if (options.otlp !== undefined) {
      const otlp = options.otlp
      yield* checkUrl(otlp.url)
      const base = trimSlash(otlp.url)
      const headers = headersOf(otlp)
      spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: `${base}/v1/traces`, headers })))
      metricReaders.push(
        new PeriodicExportingMetricReader({
          exporter: new OTLPMetricExporter({ url: `${base}/v1/metrics`, headers }),
          exportIntervalMillis: Duration.toMillis(otlp.metricsInterval ?? "60 seconds")
        })
      )
    }
    return NodeSdk.layer(() => ({
      resource: {
        serviceName: options.serviceName,
        ...(options.serviceVersion === undefined ? {} : { serviceVersion: options.serviceVersion }),
        ...(options.attributes === undefined ? {} : { attributes: { ...options.attributes } })
      },
      spanProcessor: spanProcessors,
      metricReader: metricReaders
    }))
  }))

/** Parses `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, values URL-encoded) into redacted values. */
const parseHeaders = (text: string): Record<string, Redacted.Redacted<string>> =>
  Object.fromEntries(
    text.split(",").map((pair) => pair.trim()).filter((pair) => pair.length > 0).map((pair) => {
      const at = pair.indexOf("=")
      const key = at < 0 ? pair : pair.slice(0, at)
      const value = at < 0 ? "" : pair.slice(at + 1)
      return [decodeURIComponent(key.trim()), Redacted.make(decodeURIComponent(value.trim()))]
    })
  )

/**
 * The options from the standard OpenTelemetry environment variables: `OTEL_SERVICE_NAME` (default
 * `chunkwise`), `OTEL_SERVICE_VERSION`, `OTEL_EXPORTER_OTLP_ENDPOINT` (export is off when unset),
 * `OTEL_EXPORTER_OTLP_HEADERS` (redacted) and `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60000).
 */
export const fromEnv: Config.Config<Options> = Config.all({
  serviceName: Config.string("OTEL_SERVICE_NAME").pipe(
    Config.withDefault("chunkwise"),
    Config.withDescription("service.name of the exported spans and metrics")
  ),
  serviceVersion: Config.option(Config.string("OTEL_SERVICE_VERSION")),
  endpoint: Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT")).pipe(
    Config.withDescription("OTLP/HTTP collector base URL; telemetry is not exported when unset")
  ),
  headers: Config.option(Config.redacted("OTEL_EXPORTER_OTLP_HEADERS")),
  interval: Config.integer("OTEL_METRIC_EXPORT_INTERVAL").pipe(Config.withDefault(60_000))
}).pipe(Config.map(({ endpoint, headers, interval, serviceName, serviceVersion }): Options => ({
  serviceName,
  serviceVersion: Option.getOrUndefined(serviceVersion),
  otlp: Option.match(endpoint, {
    onNone: () => undefined,
    onSome: (url) => ({
      url,
      headers: Option.match(headers, { onNone: () => ({}), onSome: (h) => parseHeaders(Redacted.value(h)) }),
      metricsInterval: Duration.millis(interval)
    })
  })
})))

/**
 * The telemetry layer from configuration: by default the standard OpenTelemetry environment variables
 * (see `fromEnv`); or pass your own `Config` of the options.
 */
export const layerConfig = (
  config: Config.Config<Options> = fromEnv
): Layer.Layer<OtelResource.Resource, Errors.ConfigurationError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, layer))
