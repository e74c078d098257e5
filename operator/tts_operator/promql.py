"""The autoscaling signal in PromQL, written once for every consumer: the alert rules, poll mode,
KEDA's trigger and an HPA's external metric.

The signal is a **ratio**: the replicas the load needs over the replicas scraped (1 = exactly
right), so that ``ceil(pods x ratio)`` is the replica count to run -- HPA's algorithm.  It is the
largest of three terms, each labelled by the TTSService's ``namespace`` only:

* **utilization** -- the engines' mean busy fraction (the rate of ``tts_inference_duration_seconds``'
  sum: one engine per pod) over ``utilizationTarget``.  It is proportional to load per replica, so
  it sizes both directions (conservatively when scaling in: bigger batches make a busier engine
  more efficient).
* **refused demand** -- while requests are refused because the queue is full,
  ``(served + refused) / served``: demand that was not served is load too, in proportion.
* **the chosen target, breached** -- ``queueWait`` (the default): p99 of ``tts_queue_wait_seconds``,
  time a request waits for its turn at the engine, above ``queueWaitTargetSeconds``.  It measures capacity: a
  longer text takes longer to synthesize but waits no longer for its turn, so a shift to longer
  inputs does not read as load.  ``latency``: p99 of ``tts_synthesis_duration_seconds`` --
  successful whole-file synthesis only, so fast 400s and 503s cannot dilute it and streams cannot
  inflate it -- above ``p99TargetSeconds`` (the write-up's rule: p99 > 1.2 s for 2 minutes).  A
  breach reads ``(pods + 1) / pods``: one replica more, not ``p99 / target`` times more -- waiting
  time is not proportional to replicas (it stays near one batch until saturation, then grows
  without bound), so scaling by it would overshoot to ``maxReplicas`` and back.

A service that is scraped but idle reads 0 (so it can scale in); one that is not scraped has no
value at all (blind: no scaling).  A term with no data (NaN: no request in the window) is left out.
"""

from __future__ import annotations

from typing import Any

from tts_service.metrics import BUILD_INFO, INFERENCE_DURATION, QUEUE_WAIT, REJECTED, SYNTHESIS_DURATION

from .spec import duration_seconds

DEFAULT_WINDOW = "1m"
HIGH_ALERT = "TTSServiceCapacityHigh"  # the ratio is above 1 (scale out)
LOW_ALERT = "TTSServiceCapacityLow"  # one replica fewer would still be under target (scale in)
ALERTS = (HIGH_ALERT, LOW_ALERT)
# Labels on the alerts naming the TTSService they are about; the webhook receiver reads them.
ALERT_NAMESPACE_LABEL = "tts_namespace"
ALERT_NAME_LABEL = "tts_name"
DEMAND_ANNOTATION = "demand"  # the alert's value: the demand at evaluation
# Recorded for an HPA (through prometheus-adapter) and for dashboards, labelled namespace + service.
RATIO_RECORD = "tts_capacity_ratio"
DEMAND_RECORD = "tts_capacity_demand"  # ratio x scraped pods: the replicas the load needs


def _selector(name: str, namespace: str) -> str:
    return f'namespace="{namespace}",service="{name}"'


def signal_metric(autoscaling: dict[str, Any]) -> tuple[str, float]:
    """(histogram, target seconds) of the chosen signal."""
    if autoscaling["signal"] == "latency":
        return SYNTHESIS_DURATION, float(autoscaling["p99TargetSeconds"])
    return QUEUE_WAIT, float(autoscaling["queueWaitTargetSeconds"])


def pods_expression(name: str, namespace: str) -> str:
    """How many replicas are scraped (every pod exports tts_build_info from its start)."""
    return f"count by (namespace) ({BUILD_INFO}{{{_selector(name, namespace)}}})"


def ratio_expression(
    name: str, namespace: str, autoscaling: dict[str, Any], window: str = DEFAULT_WINDOW
) -> str:
    """The ratio, one series labelled with the TTSService's namespace (see the module docstring)."""
    histogram, target = signal_metric(autoscaling)
    sel = _selector(name, namespace)
    p99 = f"histogram_quantile(0.99, sum by (le, namespace) (rate({histogram}_bucket{{{sel}}}[{window}])))"
    served = f"sum by (namespace) (rate({histogram}_count{{{sel}}}[{window}]))"
    refused = f'sum by (namespace) (rate({REJECTED}{{{sel},reason="queue_full"}}[{window}]))'
    busy = f"sum by (namespace) (rate({INFERENCE_DURATION}_sum{{{sel}}}[{window}]))"
    utilization_target = float(autoscaling["utilizationTarget"])
    pods = pods_expression(name, namespace)
    terms = {
        # Present whenever a pod is scraped: 0 when idle.
        "utilization": f"({busy}) / on(namespace) ({pods}) / {utilization_target:g}",
        # Only while requests are refused (else it would read 1 and the ratio could never fall below it).
        "refused": f"(({served}) + ({refused})) / ({served}) >= 0 and on(namespace) ({refused}) > 0",
        # One more replica while the p99 is over target (a NaN p99 -- no request -- compares false).
        "target": f"(({pods}) + 1) / ({pods}) and on(namespace) ({p99}) > {target:g}",
    }
    # The largest present term: each gets a distinct "term" label so "or" keeps them all.
    union = " or ".join(f'label_replace({expr}, "term", "{term}", "", "")' for term, expr in terms.items())
    return f"max by (namespace) ({union})"


def demand_expression(
    name: str, namespace: str, autoscaling: dict[str, Any], window: str = DEFAULT_WINDOW
) -> str:
    """Replicas' worth of demand, ratio x scraped pods: ``ceil(value / 1)`` is the replica count an
    HPA (or KEDA, which drives one) computes from it, i.e. ``ceil(pods x ratio)``."""
    ratio = ratio_expression(name, namespace, autoscaling, window)
    return f"({ratio}) * on(namespace) {pods_expression(name, namespace)}"


def alert_rules(
    name: str, namespace: str, spec: dict[str, Any], window: str = DEFAULT_WINDOW
) -> list[dict[str, Any]]:
    """The two alerts the operator scales on in alerts mode, each carrying the demand as its value.

    *High* fires while demand stays above ``1 + tolerance`` times the scraped pods for
    ``autoscaling.for``.  *Low* fires only while one replica fewer would still be below
    ``1 - tolerance`` of demand -- so scaling in on it cannot push the service over target and back
    (no oscillation) -- for the same time.  Both values are demand (replicas' worth of load), not
    the ratio: true of the load whatever the pod count is by the time the operator acts on them.
    """
    autoscaling = spec["autoscaling"]
    duration_seconds(autoscaling["for"])  # validated by the CRD pattern; fail loudly if not
    demand = demand_expression(name, namespace, autoscaling, window)
    pods = pods_expression(name, namespace)
    tolerance = float(autoscaling["tolerance"])
    labels = {"severity": "warning", ALERT_NAMESPACE_LABEL: namespace, ALERT_NAME_LABEL: name}
    signal = autoscaling["signal"]
    value = "{{ $value }}"

    def annotations(summary: str, action: str) -> dict[str, str]:
        return {
            DEMAND_ANNOTATION: value,
            "summary": f"TTSService {namespace}/{name}: {summary} ({signal} signal)",
            "description": f"kubetts-operator scales this TTSService {action} while the alert fires.",
        }

    return [
        {
            "alert": HIGH_ALERT,
            "expr": f"({demand}) > on(namespace) ({1 + tolerance:g} * {pods})",
            "for": autoscaling["for"],
            "labels": labels,
            "annotations": annotations(f"the load needs {value} replicas, more than it has", "out"),
        },
        {
            "alert": LOW_ALERT,
            "expr": f"({demand}) < on(namespace) ({1 - tolerance:g} * ({pods} - 1))",
            "for": autoscaling["for"],
            "labels": labels,
            "annotations": annotations(f"the load needs only {value} replicas", "in"),
        },
    ]


def recording_rules(
    name: str, namespace: str, spec: dict[str, Any], window: str = DEFAULT_WINDOW
) -> list[dict[str, Any]]:
    """The ratio and the demand as series of their own, labelled ``namespace`` and ``service`` like
    the service's metrics: what an HPA's external metric reads through prometheus-adapter."""
    autoscaling = spec["autoscaling"]
    labels = {"service": name}
    return [
        {
            "record": RATIO_RECORD,
            "expr": ratio_expression(name, namespace, autoscaling, window),
            "labels": labels,
        },
        {
            "record": DEMAND_RECORD,
            "expr": demand_expression(name, namespace, autoscaling, window),
            "labels": labels,
        },
    ]


def rule_group(
    name: str, namespace: str, spec: dict[str, Any], window: str = DEFAULT_WINDOW
) -> dict[str, Any]:
    """The Prometheus rule group (also usable as a plain rules file without prometheus-operator)."""
    return {
        "name": f"kubetts.{namespace}.{name}",
        "rules": recording_rules(name, namespace, spec, window) + alert_rules(name, namespace, spec, window),
    }
