"""Reconcile one TTSService: its children by server-side apply, its status from their state.

kopf's handlers (create, spec change, resume, a child changed by someone else) and the
resync loop all call :func:`reconcile`; a per-object lock keeps two of them from racing.

* **Children** are applied whole (``kubetts-operator`` owns exactly what it sets; see
  :meth:`~tts_operator.kube.KubeClient.apply`).  The API server writes nothing when an apply
  changes nothing, so a converged TTSService costs one no-op PATCH per child per resync and
  no child's resourceVersion moves.  Whether an apply *did* change something is read off what
  only a changing apply moves -- the object's ``generation`` and the time of this manager's
  ``Apply`` entry in ``managedFields`` -- not off the resourceVersion, which the Deployment
  controller's status writes move all the time; only then is an Event posted.
* **Replicas** have one writer: this module, from ``spec.replicas`` or -- with autoscaling
  on -- the autoscaler's decision recorded in ``status.autoscaler.desiredReplicas``.
* **Permanent refusals** (422 invalid, 403 forbidden, e.g. a ResourceQuota) make the
  TTSService Degraded with the API server's message, post one Warning, and are retried
  with a doubling delay until the spec changes -- never in a hot loop.
* **Status** is written only when it changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .builders import (
    build_deployment,
    build_hpa,
    build_prometheus_rule,
    build_scaled_object,
    build_service,
    build_service_monitor,
    endpoint,
    label_selector,
    monitoring_labels,
    owned,
)
from .config import OperatorConfig
from .kube import FIELD_MANAGER, HANDOVER_MANAGER, ApiError, KubeClient, manifest_path, object_path
from .scaling import autoscale
from .spec import API_VERSION, KIND, InvalidSpec, parse_spec, tts_path
from .status import (
    ConditionType,
    Phase,
    Rollout,
    degraded,
    merge_conditions,
    same_status,
    workload_status,
)

log = logging.getLogger("tts_operator")

# A TTSService's name is its Service's name: a DNS-1035 label (the CRD enforces it too).
SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
EventFn = Callable[..., Awaitable[None]]  # (obj, *, type, reason, message): see events.EventPoster


@dataclass
class Backoff:
    """Retry schedule of a TTSService whose children the API server refused for good."""

    generation: int | None
    attempts: int
    retry_at: float


@dataclass
class Operator:
    """What the handlers and the resync loop share; kept in kopf's memo."""

    client: KubeClient
    config: OperatorConfig
    event: EventFn
    monitoring: bool = False
    namespaces: tuple[str, ...] = ()  # empty: the whole cluster
    keda: bool = False  # the cluster serves KEDA's ScaledObjects
    seen: dict[str, tuple[int, tuple]] = field(
        default_factory=dict
    )  # child path -> (resourceVersion, apply_mark)
    backoff: dict[str, Backoff] = field(default_factory=dict)  # TTSService uid -> schedule
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)  # TTSService uid -> lock
    absent: set[str] = field(default_factory=set)  # optional child paths known deleted
    tasks: set[asyncio.Task] = field(default_factory=set)  # evaluations started by alerts

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def observe(self, path: str, obj: dict[str, Any]) -> None:
        """Remember a child as last seen -- from an apply's answer or kopf's watch -- unless what
        is remembered is newer (watch events can arrive after the answer to a later apply)."""
        version = (obj.get("metadata") or {}).get("resourceVersion") or ""
        number = int(version) if version.isdigit() else 0  # etcd revisions, in practice
        known = self.seen.get(path)
        if known is None or number >= known[0]:
            self.seen[path] = (number, apply_mark(obj))

    def forget(self, path: str) -> None:
        """A child was deleted: the next apply recreates it."""
        self.seen.pop(path, None)


# Kinds whose status a controller keeps writing: their resourceVersion moves without any change
# of ours, so whether an apply changed them is read off generation and managedFields instead.
CHURNING_STATUS = frozenset({"Deployment"})


def apply_mark(obj: dict[str, Any] | None) -> tuple | None:
    """What changes when, and only when, an apply by this operator changed ``obj``.

    For most children that is simply the resourceVersion (nobody else writes them).  For a
    Deployment, whose status the controller writes all the time, it is the generation (a spec
    change) and this manager's Apply entry in managedFields -- its time and the fields it owns
    (another manager that changed one took it over; the forced re-apply takes it back).
    """
    if not obj:
        return None
    meta = obj.get("metadata") or {}
    if obj.get("kind") not in CHURNING_STATUS:
        return (meta.get("resourceVersion"),)
    ours = [
        (m.get("time"), json.dumps(m.get("fieldsV1"), sort_keys=True))
        for m in meta.get("managedFields") or []
        if m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
    ]
    return (meta.get("generation"), tuple(ours))


def desired_replicas(spec: dict[str, Any], status: dict[str, Any] | None) -> int:
    """spec.replicas, or -- with autoscaling on -- the autoscaler's last decision within [min, max]."""
    autoscaling = spec["autoscaling"]
    if not autoscaling["enabled"]:
        return spec["replicas"]
    decided = ((status or {}).get("autoscaler") or {}).get("desiredReplicas")
    replicas = spec["replicas"] if decided is None else int(decided)
    return max(autoscaling["minReplicas"], min(autoscaling["maxReplicas"], replicas))


def replicas_owner(spec: dict[str, Any]) -> str:
    """Who writes Deployment.spec.replicas: the operator (``builtin``), or an HPA (``hpa``, also what a
    ``keda`` ScaledObject drives)."""
    autoscaling = spec["autoscaling"]
    return autoscaling["provider"] if autoscaling["enabled"] else "builtin"


def children(
    op: Operator, owner: dict[str, Any], spec: dict[str, Any], replicas: int
) -> tuple[list[dict], list[str]]:
    """Every child manifest of ``owner`` (with its controller reference), and the paths of optional
    children it must not have (an HPA or ScaledObject of another provider)."""
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    provider = replicas_owner(spec)
    manifests = [
        build_deployment(name, namespace, spec, replicas if provider == "builtin" else None),
        build_service(name, namespace, spec),
    ]
    if op.monitoring:
        extra = monitoring_labels(spec, op.config.monitoring_labels)
        manifests += [
            build_service_monitor(name, namespace, spec, extra),
            build_prometheus_rule(name, namespace, spec, extra, op.config.signal_window),
        ]
    optional = {
        "hpa": object_path("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name),
        "keda": object_path("keda.sh/v1alpha1", "ScaledObject", namespace, name),
    }
    if provider == "hpa":
        manifests.append(build_hpa(name, namespace, spec))
    elif provider == "keda":
        manifests.append(
            build_scaled_object(name, namespace, spec, op.config.prometheus_url, op.config.signal_window)
        )
    unwanted = [path for kind, path in optional.items() if kind != provider and (kind != "keda" or op.keda)]
    return [owned(m, owner) for m in manifests], unwanted


def _owns_replicas(mark: tuple | None) -> bool:
    """Whether this operator's Apply entry (in a Deployment's apply_mark) owns spec.replicas."""
    return bool(mark) and any('"f:replicas"' in fields for _, fields in mark[1])


async def _hand_over_replicas(op: Operator, manifest: dict[str, Any]) -> None:
    """Before leaving spec.replicas to an HPA: pin today's value under a hand-over manager, so
    dropping it from our apply does not reset it to 1 (server-side apply would: nobody else owns
    it yet); the HPA takes it over with its first write."""
    live = await op.client.get(manifest_path(manifest))
    if not live or "replicas" not in (live.get("spec") or {}):
        return
    meta = manifest["metadata"]
    pin = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": live["spec"]["replicas"]},
    }
    await op.client.apply(pin, field_manager=HANDOVER_MANAGER)


async def apply_children(
    op: Operator, manifests: list[dict[str, Any]], unwanted: list[str], owner_uid: str
) -> tuple[dict[str, Any], list[str]]:
    """Apply each child and delete the unwanted ones this TTSService controls; return the
    Deployment as the API server has it, and what changed."""
    actions, deployment = [], {}
    for manifest in manifests:
        path = manifest_path(manifest)
        label = f"{manifest['kind']}/{manifest['metadata']['name']}"
        known = op.seen.get(path)
        # First sight since start-up (or it was deleted): what is there?
        before = known[1] if known is not None else apply_mark(await op.client.get(path))
        if manifest["kind"] == "Deployment" and "replicas" not in manifest["spec"] and _owns_replicas(before):
            await _hand_over_replicas(op, manifest)
            actions.append(f"left {label}'s replicas to its autoscaler")
        result = await op.client.apply(manifest)
        if before is None:
            actions.append(f"created {label}")
        elif apply_mark(result) != before:
            actions.append(f"updated {label}")
        op.observe(path, result)
        op.absent.discard(path)
        if manifest["kind"] == "Deployment":
            deployment = result
    for path in unwanted:
        if path in op.absent:
            continue
        # Only what this TTSService controls: a user's own HPA of the same name is left alone.
        live = await op.client.get(path)
        if (
            live
            and _controlled_by(live, owner_uid)
            and await op.client.delete(path, uid=live["metadata"]["uid"])
        ):
            plural, child = path.rsplit("/", 2)[-2:]
            actions.append(f"deleted {plural}/{child}")
        op.forget(path)
        op.absent.add(path)
    return deployment, actions


def _controlled_by(obj: dict[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == owner_uid for ref in refs)


def _provider_problem(op: Operator, spec: dict[str, Any]) -> str | None:
    """Why the chosen autoscaling provider cannot work here, if it cannot."""
    autoscaling = spec["autoscaling"]
    if replicas_owner(spec) == "keda":
        if not op.keda:
            return "autoscaling.provider keda needs KEDA: this cluster does not serve keda.sh/v1alpha1 ScaledObjects"
        if not (autoscaling.get("prometheusURL") or op.config.prometheus_url):
            return "autoscaling.provider keda needs autoscaling.prometheusURL (or KUBETTS_OPERATOR_PROMETHEUS_URL)"
    return None


async def reconcile(op: Operator, obj: dict[str, Any], *, autoscale_now: bool = False) -> None:
    """Bring one TTSService's children in line with its spec and write its status.

    ``obj`` only says which TTSService: it is read again once the lock is held, because the
    caller's copy may predate what the previous holder of the lock decided and wrote (acting on
    it would undo a scaling decision).  Raises :class:`~tts_operator.kube.ApiError` only for
    transient errors (the caller retries); everything the operator cannot fix by itself ends up
    in the status instead.
    """
    meta = obj["metadata"]
    async with op.lock(meta["uid"]):
        fresh = await op.client.get(tts_path(meta["namespace"], meta["name"]))
        if (
            fresh is None
            or fresh["metadata"].get("uid") != meta["uid"]
            or fresh["metadata"].get("deletionTimestamp")
        ):
            return  # deleted meanwhile: the garbage collector takes the children
        await _reconcile(op, {"apiVersion": API_VERSION, "kind": KIND, **fresh}, autoscale_now)


async def _reconcile(op: Operator, obj: dict[str, Any], autoscale_now: bool) -> None:
    meta = obj["metadata"]
    name, namespace, uid, generation = meta["name"], meta["namespace"], meta["uid"], meta.get("generation")
    status = obj.get("status") or {}
    new: dict[str, Any] = {
        "observedGeneration": generation,
        "endpoint": endpoint(name, namespace),
        "selector": label_selector(name),
    }

    async def refuse(reason: str, message: str) -> dict[str, Any]:
        previous = next(
            (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.DEGRADED.value), {}
        )
        if not (previous.get("status") == "True" and previous.get("message") == message):
            await op.event(obj, type="Warning", reason=reason, message=message)
        new["phase"] = Phase.DEGRADED.value
        new["conditions"] = merge_conditions(status.get("conditions"), degraded(reason, message, generation))
        return new

    if not SERVICE_NAME.fullmatch(name) or len(name) > 63:
        await _write_status(
            op, obj, await refuse("InvalidName", f"{name!r} cannot be a Service name (a DNS-1035 label)")
        )
        return
    try:
        spec = parse_spec(obj.get("spec"))
    except InvalidSpec as error:
        await _write_status(
            op, obj, await refuse("InvalidSpec", "invalid spec: " + "; ".join(error.problems))
        )
        return
    waiting = op.backoff.get(uid)
    if waiting is not None and waiting.generation == generation and time.monotonic() < waiting.retry_at:
        return  # refused for good last time; its status says so; retried at retry_at
    problem = _provider_problem(op, spec)
    if problem:
        await _write_status(op, obj, await refuse("ProviderUnavailable", problem))
        return
    replicas = desired_replicas(spec, status)
    extra_conditions: list[dict[str, Any]] = []
    builtin = spec["autoscaling"]["enabled"] and replicas_owner(spec) == "builtin"
    if builtin and autoscale_now:
        decision = await autoscale(op, obj, spec, status, replicas)
        if decision.replicas != replicas:
            await op.event(obj, type="Normal", reason="Scaled", message=decision.reason)
            log.info("%s/%s: %s", namespace, name, decision.reason)
        replicas = decision.replicas
        new["autoscaler"] = decision.summary
        extra_conditions.append(decision.metrics_condition(generation))
    elif builtin:
        new["autoscaler"] = {"desiredReplicas": replicas}  # merged: the rest of status.autoscaler stays
    manifests, unwanted = children(op, obj, spec, replicas)
    try:
        deployment, actions = await apply_children(op, manifests, unwanted, uid)
    except ApiError as exc:
        if not exc.permanent:
            raise
        schedule = _back_off(op, uid, generation)
        log.warning(
            "%s/%s: the API server refused a child (%s); retrying in %.0fs", namespace, name, exc, schedule
        )
        await _write_status(
            op, obj, await refuse("ApplyFailed", f"the API server refused a child: {exc.message}")
        )
        return
    op.backoff.pop(uid, None)
    for action in actions:
        await op.event(obj, type="Normal", reason="Reconciled", message=action)
    if not builtin and spec["autoscaling"]["enabled"]:  # an HPA decides: roll-out against its count
        replicas = int((deployment.get("spec") or {}).get("replicas") or replicas)
    phase, conditions, counts = workload_status(Rollout.of(deployment, replicas), generation)
    new.update(phase=phase.value, **counts)
    new["conditions"] = merge_conditions(status.get("conditions"), conditions + extra_conditions)
    await _write_status(op, obj, new)


def _back_off(op: Operator, uid: str, generation: int | None) -> float:
    previous = op.backoff.get(uid)
    attempts = previous.attempts + 1 if previous and previous.generation == generation else 1
    delay = min(op.config.permanent_retry_max_s, op.config.permanent_retry_s * 2 ** (attempts - 1))
    op.backoff[uid] = Backoff(generation, attempts, time.monotonic() + delay)
    return delay


async def _write_status(op: Operator, obj: dict[str, Any], new: dict[str, Any]) -> None:
    if same_status(obj.get("status"), new):
        return
    meta = obj["metadata"]
    await op.client.merge_patch(tts_path(meta["namespace"], meta["name"]) + "/status", {"status": new})


async def list_ttsservices(op: Operator) -> list[dict[str, Any]]:
    namespaces = op.namespaces or (None,)
    found: list[dict[str, Any]] = []
    for namespace in namespaces:
        for item in await op.client.list(tts_path(namespace)):
            found.append({"apiVersion": API_VERSION, "kind": KIND, **item})
    return found


def evaluate_soon(op: Operator, obj: dict[str, Any]) -> None:
    """Reconcile ``obj`` and run its autoscaler now, in the background (the webhook just recorded an
    alert for it): the decision need not wait up to a resync interval.  Failures are logged; the
    next resync tries again."""
    meta = obj.get("metadata") or {}

    async def run() -> None:
        try:
            await reconcile(op, obj, autoscale_now=True)  # it reads the TTSService again itself
        except Exception as exc:  # noqa: BLE001 -- a background task: log, the resync retries
            log.warning(
                "evaluating %s/%s after an alert failed (retried next resync): %s",
                meta.get("namespace"),
                meta.get("name"),
                exc,
            )

    task = asyncio.get_running_loop().create_task(run(), name=f"kubetts-alert-{meta.get('uid')}")
    op.tasks.add(task)
    task.add_done_callback(op.tasks.discard)


async def resync_forever(op: Operator) -> None:
    """Every ``autoscale_interval_s``: reconcile every TTSService and run its autoscaler."""
    while True:
        await asyncio.sleep(op.config.autoscale_interval_s)
        try:
            objects = await list_ttsservices(op)
        except ApiError as exc:
            log.warning(
                "resync: cannot list TTSServices (next try in %gs): %s", op.config.autoscale_interval_s, exc
            )
            continue
        live = {o["metadata"]["uid"] for o in objects}
        for uid in set(op.locks) - live:  # deleted TTSServices: forget them
            op.locks.pop(uid, None)
            op.backoff.pop(uid, None)
        for obj in objects:
            try:
                await reconcile(op, obj, autoscale_now=True)
            except ApiError as exc:
                meta = obj["metadata"]
                log.warning(
                    "resync of %s/%s failed (retried next resync): %s", meta["namespace"], meta["name"], exc
                )
