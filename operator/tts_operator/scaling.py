"""One autoscaler evaluation for a TTSService: gather its signals, decide, summarize.

The decision itself is :func:`tts_operator.autoscaler.decide` (pure); this module only reads
the signals -- the alert the webhook recorded in status, and in poll mode a Prometheus query --
and shapes the result for the status.  It never writes the Deployment: the decision goes into
``status.autoscaler.desiredReplicas``, and :mod:`.reconcile`, the one writer of replicas,
applies it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .autoscaler import Policy, Signal, State, alert_signal, classify_p99, combine, decide
from .prometheus import query_p99
from .status import ConditionType, condition

if TYPE_CHECKING:
    from .reconcile import Operator


@dataclass(frozen=True)
class Scaling:
    replicas: int
    reason: str
    summary: dict[str, Any]  # merged into status.autoscaler
    signal: Signal
    problems: tuple[str, ...]

    def metrics_condition(self, generation: int | None) -> dict[str, Any]:
        ok = self.signal is not Signal.UNKNOWN
        return condition(
            ConditionType.METRICS,
            ok,
            "SignalAvailable" if ok else "NoData",
            "latency signal available" if ok else "not scaling: " + "; ".join(self.problems or ("no data",)),
            generation,
        )


async def autoscale(
    op: Operator, obj: dict[str, Any], spec: dict[str, Any], status: dict[str, Any], current: int
) -> Scaling:
    autoscaling = spec["autoscaling"]
    meta = obj["metadata"]
    policy = Policy.from_spec(autoscaling)
    stored = status.get("autoscaler") or {}
    state = State.from_status(stored)
    now = time.time()
    signals: list[Signal] = []
    problems: list[str] = []
    p99 = stored.get("lastP99Seconds")
    if autoscaling["mode"] in ("alerts", "both"):
        signal, problem = alert_signal(status, now, op.config.alert_stale_s)
        signals.append(signal)
        problems += [problem] if problem else []
    if autoscaling["mode"] in ("poll", "both"):
        url = autoscaling.get("prometheusURL") or op.config.prometheus_url
        if not url:
            signals.append(Signal.UNKNOWN)
            problems.append("poll mode needs autoscaling.prometheusURL (or KUBETTS_OPERATOR_PROMETHEUS_URL)")
        else:
            reading = await query_p99(url, meta["name"], meta["namespace"], op.config.p99_window)
            signal, state = classify_p99(reading.p99_s, policy, state, now)
            signals.append(signal)
            p99 = reading.p99_s if reading.p99_s is not None else p99
            problems += [reading.problem] if reading.problem else []
    signal = combine(signals)
    decision = decide(current, signal, policy, state, now)
    # Merged into status.autoscaler: "alert" is the webhook's, and is left as it is there now.
    summary = {
        **decision.state.to_status(),
        "desiredReplicas": decision.replicas,
        "lastP99Seconds": p99,
        "signal": signal.value,
    }
    if decision.changed(current):
        summary["lastScaleReason"] = decision.reason
    return Scaling(decision.replicas, decision.reason, summary, signal, tuple(problems))
