"""One autoscaler evaluation for a TTSService (provider ``builtin``): read the signal, decide, summarize.

The decision itself is :func:`tts_operator.autoscaler.decide` (pure); this module only reads the
signal -- the alerts the webhook recorded in status, and in poll mode a Prometheus query of the
same demand the alerts are built on -- and shapes the result for the status.  It never writes the
Deployment: the decision goes into ``status.autoscaler.desiredReplicas`` and :mod:`.reconcile`,
the one writer of replicas, applies it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .autoscaler import Policy, Reading, State, alert_reading, combine, decide
from .prometheus import query_demand
from .promql import demand_expression
from .status import ConditionType, condition

if TYPE_CHECKING:
    from .reconcile import Operator


@dataclass(frozen=True)
class Scaling:
    replicas: int
    reason: str
    summary: dict[str, Any]  # merged into status.autoscaler
    reading: Reading

    def metrics_condition(self, generation: int | None) -> dict[str, Any]:
        ok = self.reading.known
        return condition(
            ConditionType.METRICS,
            ok,
            "SignalAvailable" if ok else "NoData",
            "scaling signal available" if ok else "not scaling: " + (self.reading.problem or "no data"),
            generation,
        )


async def read_signal(
    op: Operator, obj: dict[str, Any], autoscaling: dict[str, Any], status: dict[str, Any]
) -> Reading:
    meta = obj["metadata"]
    readings: list[Reading] = []
    if autoscaling["mode"] in ("alerts", "both"):
        alerts = (status.get("autoscaler") or {}).get("alerts")
        readings.append(alert_reading(alerts, time.time(), op.config.alert_stale_s))
    if autoscaling["mode"] in ("poll", "both"):
        url = autoscaling.get("prometheusURL") or op.config.prometheus_url
        if not url:
            readings.append(
                Reading(
                    None, "poll mode needs autoscaling.prometheusURL (or KUBETTS_OPERATOR_PROMETHEUS_URL)"
                )
            )
        else:
            expression = demand_expression(
                meta["name"], meta["namespace"], autoscaling, op.config.signal_window
            )
            readings.append(await query_demand(url, expression))
    return combine(readings)


async def autoscale(
    op: Operator, obj: dict[str, Any], spec: dict[str, Any], status: dict[str, Any], current: int
) -> Scaling:
    autoscaling = spec["autoscaling"]
    policy = Policy.from_spec(autoscaling, alerts_only=autoscaling["mode"] == "alerts")
    stored = status.get("autoscaler") or {}
    reading = await read_signal(op, obj, autoscaling, status)
    ready = int(status.get("readyReplicas") or 0)
    decision = decide(current, ready, reading, policy, State.from_status(stored), time.time())
    # Merged into status.autoscaler: "alerts" is the webhook's, and is left as it is there now.
    summary = {
        **decision.state.to_status(),
        "desiredReplicas": decision.replicas,
        "demand": reading.demand,
        "recommendedReplicas": decision.recommended,
        "lastDecision": decision.reason,
    }
    if decision.changed(current):
        summary["lastScaleReason"] = decision.reason
    return Scaling(decision.replicas, decision.reason, summary, reading)
