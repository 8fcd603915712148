import { Metric, MetricLabel } from "effect"

const byMetric = new WeakMap<object, Map<string, unknown>>()

/**
 * `metric` with these labels, made once per distinct label set and kept. Effect finds a tagged
 * metric's registry entry by the identity of its label array: a tagged metric made anew (or tagged
 * twice, whose label arrays are merged into a new one on each update) makes and hashes a new metric
 * key on every update. One metric per label set, with all its labels at one level, finds its entry
 * by identity. Labels come from bounded sets (job, step, outcome, error tag, resource).
 */
export const labelled = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  labels: ReadonlyArray<readonly [key: string, value: string]>
): Metric.Metric<Type, In, Out> => {
  let byLabels = byMetric.get(metric)
  if (byLabels === undefined) {
    byLabels = new Map()
    byMetric.set(metric, byLabels)
  }
  const key = labels.map(([k, v]) => `${k}\u0000${v}`).join("\u0001")
  let tagged = byLabels.get(key) as Metric.Metric<Type, In, Out> | undefined
  if (tagged === undefined) {
    tagged = Metric.taggedWithLabels(metric, labels.map(([k, v]) => MetricLabel.make(k, v)))
    byLabels.set(key, tagged)
  }
  return tagged
}
