"""Bring a TTSService's children in line with its spec: create what is missing, patch what drifted.

Comparison is "is the built manifest contained in the live object": the API server adds
defaults and status to live objects, so only fields the operator sets are compared.
A differing child is merge-patched with the full manifest (lists are replaced whole).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kopf

from .builders import (
    build_deployment,
    build_prometheus_rule,
    build_service,
    build_service_monitor,
)
from .kube import ApiError, KubeClient


def contains(live: Any, wanted: Any) -> bool:
    """Whether every field of ``wanted`` is present with the same value in ``live``."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    if isinstance(wanted, (int, float)) and isinstance(live, (int, float)) and not isinstance(wanted, bool):
        return float(live) == float(wanted)
    return live == wanted


@dataclass
class ReconcileResult:
    deployment: dict[str, Any] | None = None
    actions: list[str] = field(default_factory=list)  # "created Deployment/x", "repaired Service/x"


def desired_replicas(spec: dict[str, Any], status: dict[str, Any] | None) -> int:
    """spec.replicas, or -- with autoscaling on -- the autoscaler's last decision within [min, max]."""
    autoscaling = spec["autoscaling"]
    if not autoscaling["enabled"]:
        return spec["replicas"]
    decided = ((status or {}).get("autoscaler") or {}).get("desiredReplicas")
    replicas = spec["replicas"] if decided is None else int(decided)
    return max(autoscaling["minReplicas"], min(autoscaling["maxReplicas"], replicas))


async def apply_child(
    client: KubeClient, manifest: dict[str, Any], owner: Any, *, created_verb: str = "created"
) -> str | None:
    """Create or repair one child; return what was done (None if it was already right)."""
    kopf.adopt(manifest, owner=owner)
    meta = manifest["metadata"]
    label = f"{manifest['kind']}/{meta['name']}"
    live = await client.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    if live is None:
        try:
            await client.create(manifest)
            return f"{created_verb} {label}"
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Created meanwhile (by a concurrent repair): fall through and make it right.
            live = await client.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
            if live is None:
                raise
    if contains(live, {k: v for k, v in manifest.items() if k != "status"}):
        return None
    await client.patch(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"], manifest)
    return f"updated {label}"


async def reconcile_children(
    client: KubeClient,
    owner: Any,
    name: str,
    namespace: str,
    spec: dict[str, Any],
    replicas: int,
    *,
    monitoring: bool,
    window: str,
) -> ReconcileResult:
    result = ReconcileResult()
    children = [build_deployment(name, namespace, spec, replicas), build_service(name, namespace, spec)]
    if monitoring:
        children += [
            build_service_monitor(name, namespace, spec),
            build_prometheus_rule(name, namespace, spec, window),
        ]
    for manifest in children:
        action = await apply_child(client, manifest, owner)
        if action:
            result.actions.append(action)
    result.deployment = await client.get("apps/v1", "Deployment", namespace, name)
    return result
