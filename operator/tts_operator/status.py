"""Status of a TTSService: phase and conditions that tell the truth about its rollout.

Conditions follow the Kubernetes API conventions: ``type``, ``status`` ("True"/"False"),
a CamelCase ``reason``, a human ``message``, ``lastTransitionTime`` (kept while the status
stays the same) and ``observedGeneration`` (the TTSService generation they describe).

* **Ready** only when the Deployment has rolled out the current template completely: its
  controller observed its latest generation, and every desired replica is updated, ready
  and available, with no old pod left.
* **Progressing** while a rollout is under way; False when it cannot progress.
* **Degraded** when the operator cannot bring the service up by itself: an invalid spec, a
  child the API server refused (with its message), or a rollout stuck past its
  ``progressDeadlineSeconds`` or unable to create pods (with the Deployment's own reason).
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import Any


class Phase(str, enum.Enum):
    PENDING = "Pending"  # children applied, the rollout not complete yet
    RUNNING = "Running"  # the current generation is rolled out and every replica ready
    DEGRADED = "Degraded"  # something the operator cannot fix by itself


class ConditionType(str, enum.Enum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    METRICS = "MetricsAvailable"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(
    kind: ConditionType, ok: bool, reason: str, message: str, generation: int | None = None
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind.value,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso(),
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


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


@dataclass(frozen=True)
class Rollout:
    """How far the Deployment got with the current template."""

    desired: int
    replicas: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    observed: bool = False  # the Deployment controller has seen the latest Deployment spec
    stuck_reason: str | None = None  # a Deployment condition saying it cannot progress
    stuck_message: str = ""

    @property
    def complete(self) -> bool:
        return (
            self.observed
            and self.desired > 0
            and self.updated == self.ready == self.available == self.replicas == self.desired
        )

    @classmethod
    def of(cls, deployment: dict[str, Any] | None, desired: int) -> Rollout:
        if not deployment:
            return cls(desired)
        status = deployment.get("status") or {}
        generation = (deployment.get("metadata") or {}).get("generation")
        observed = generation is not None and int(status.get("observedGeneration") or 0) >= int(generation)
        stuck = None
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("status") == "False":
                stuck = cond  # ProgressDeadlineExceeded
            elif cond.get("type") == "ReplicaFailure" and cond.get("status") == "True" and stuck is None:
                stuck = cond  # e.g. FailedCreate: a quota or admission refused the pods
        return cls(
            desired=desired,
            replicas=int(status.get("replicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            observed=observed,
            stuck_reason=(stuck or {}).get("reason") or ("Stuck" if stuck else None),
            stuck_message=(stuck or {}).get("message", ""),
        )


def workload_status(
    rollout: Rollout, generation: int | None
) -> tuple[Phase, list[dict[str, Any]], dict[str, int]]:
    """Phase, conditions and replica counts from the Deployment's rollout."""
    counts = {
        "replicas": rollout.replicas,
        "readyReplicas": rollout.ready,
        "updatedReplicas": rollout.updated,
    }
    progress = (
        f"{rollout.updated}/{rollout.desired} updated, {rollout.ready} ready, {rollout.available} available"
    )
    if rollout.stuck_reason:
        message = f"the rollout cannot progress: {rollout.stuck_message or rollout.stuck_reason}"
        conditions = [
            condition(ConditionType.READY, False, rollout.stuck_reason, message, generation),
            condition(ConditionType.PROGRESSING, False, rollout.stuck_reason, message, generation),
            condition(ConditionType.DEGRADED, True, rollout.stuck_reason, message, generation),
        ]
        return Phase.DEGRADED, conditions, counts
    if rollout.complete:
        conditions = [
            condition(
                ConditionType.READY,
                True,
                "RolloutComplete",
                f"all {rollout.desired} replicas ready",
                generation,
            ),
            condition(ConditionType.PROGRESSING, False, "RolloutComplete", progress, generation),
        ]
    elif rollout.desired == 0:
        conditions = [
            condition(ConditionType.READY, False, "ScaledToZero", "no replicas are desired", generation),
            condition(ConditionType.PROGRESSING, False, "ScaledToZero", progress, generation),
        ]
    else:
        conditions = [
            condition(
                ConditionType.READY, False, "RollingOut", f"waiting for the rollout: {progress}", generation
            ),
            condition(ConditionType.PROGRESSING, True, "RollingOut", progress, generation),
        ]
    conditions.append(condition(ConditionType.DEGRADED, False, "Reconciled", "children applied", generation))
    return (Phase.RUNNING if rollout.complete else Phase.PENDING), conditions, counts


def degraded(reason: str, message: str, generation: int | None) -> list[dict[str, Any]]:
    return [
        condition(ConditionType.DEGRADED, True, reason, message, generation),
        condition(ConditionType.READY, False, reason, message, generation),
    ]


def same_status(old: Any, new: Any) -> bool:
    """Whether merge-patching ``new`` into ``old`` would change nothing (steady state writes nothing)."""
    if isinstance(new, dict):
        old = old if isinstance(old, dict) else {}
        return all(same_status(old.get(key), value) for key, value in new.items())
    return old == new
