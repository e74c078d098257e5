"""Status of a TTSService: phase, conditions (Ready, Progressing, Degraded) and their reasons."""

from __future__ import annotations

import datetime
import enum
from typing import Any


class Phase(str, enum.Enum):
    PENDING = "Pending"  # children created, pods not ready yet
    RUNNING = "Running"  # all desired replicas ready
    DEGRADED = "Degraded"  # invalid spec, or something the operator cannot fix by itself


class ConditionType(str, enum.Enum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    METRICS = "MetricsAvailable"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(kind: ConditionType, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind.value,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso(),
    }


def merge_conditions(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace conditions by type, keeping lastTransitionTime when the status did not change."""
    by_type = {c["type"]: c for c in old or []}
    for cond in new:
        previous = by_type.get(cond["type"])
        if previous is not None and previous.get("status") == cond["status"]:
            cond = {
                **cond,
                "lastTransitionTime": previous.get("lastTransitionTime", cond["lastTransitionTime"]),
            }
        by_type[cond["type"]] = cond
    order = [t.value for t in ConditionType]
    return sorted(
        by_type.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else len(order)
    )


def workload_status(
    deployment: dict[str, Any] | None, desired: int
) -> tuple[Phase, list[dict[str, Any]], dict]:
    """Phase, conditions and replica counts from the Deployment the operator owns."""
    status = (deployment or {}).get("status", {})
    ready = int(status.get("readyReplicas", 0) or 0)
    replicas = int(status.get("replicas", 0) or 0)
    counts = {"replicas": replicas, "readyReplicas": ready}
    all_ready = ready >= desired
    conditions = [
        condition(
            ConditionType.READY,
            all_ready and desired > 0,
            "ReplicasReady" if all_ready else "ReplicasNotReady",
            f"{ready}/{desired} replicas ready",
        ),
        condition(
            ConditionType.PROGRESSING,
            not all_ready,
            "RollingOut" if not all_ready else "Stable",
            "waiting for replicas to become ready" if not all_ready else "all replicas ready",
        ),
        condition(ConditionType.DEGRADED, False, "Reconciled", "spec is valid and children are in place"),
    ]
    return (Phase.RUNNING if all_ready else Phase.PENDING), conditions, counts


def degraded(reason: str, message: str) -> list[dict[str, Any]]:
    return [
        condition(ConditionType.DEGRADED, True, reason, message),
        condition(ConditionType.READY, False, reason, message),
    ]
