"""kopf handlers: thin glue between kopf's events and the pure parts of the operator.

* create / update / resume of a TTSService -> validate the spec, build, apply children,
  write status (Degraded + a Warning event for an invalid spec; never crash on it);
* a timer per TTSService -> repair drifted or deleted children, then run the autoscaler;
* a deleted or edited child -> reconcile its owner at once;
* start-up / clean-up -> the API client and the Alertmanager webhook receiver.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf
from aiohttp import web

from . import kube, login
from .autoscaler import Decision, Policy, Signal, State, classify_p99, decide
from .builders import endpoint
from .config import OperatorConfig
from .prometheus import query_p99
from .reconcile import desired_replicas, reconcile_children
from .spec import GROUP, PLURAL, VERSION, InvalidSpec, parse_spec
from .status import ConditionType, Phase, condition, degraded, merge_conditions, workload_status
from .webhook import make_app

CONFIG = OperatorConfig.from_env()
MANAGED = {"app.kubernetes.io/managed-by": "kubetts-operator"}
log = logging.getLogger("tts_operator")


class Runtime:
    """Process-wide objects created at start-up (kept in kopf's memo)."""

    client: kube.KubeClient
    monitoring: bool = False
    webhook: web.AppRunner | None = None


RUNTIME = Runtime()


@kopf.on.login()
def login_handler(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return login.connection_info(CONFIG, **kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    settings.persistence.finalizer = "kubetts.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetts.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetts.io")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    RUNTIME.client = kube.KubeClient(login.credentials(CONFIG), timeout_s=CONFIG.api_timeout_s)
    try:
        RUNTIME.monitoring = CONFIG.monitoring and await RUNTIME.client.has_resource(
            "monitoring.coreos.com/v1", "servicemonitors"
        )
    except kube.ApiError:
        RUNTIME.monitoring = False
    logger.info(
        "prometheus-operator CRDs %s",
        "found: creating ServiceMonitor and PrometheusRule" if RUNTIME.monitoring else "absent",
    )
    runner = web.AppRunner(make_app(RUNTIME.client, CONFIG.webhook_token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, CONFIG.webhook_host, CONFIG.webhook_port).start()
    RUNTIME.webhook = runner
    logger.info(
        "Alertmanager webhook listening on %s:%d/alertmanager", CONFIG.webhook_host, CONFIG.webhook_port
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if RUNTIME.webhook is not None:
        await RUNTIME.webhook.cleanup()
    await RUNTIME.client.close()


def _mark_degraded(body: Any, patch: kopf.Patch, status: dict[str, Any], error: InvalidSpec) -> None:
    message = "invalid spec: " + "; ".join(error.problems)
    already = any(
        c.get("type") == ConditionType.DEGRADED.value
        and c.get("status") == "True"
        and c.get("message") == message
        for c in status.get("conditions") or []
    )
    patch.status["phase"] = Phase.DEGRADED.value
    patch.status["conditions"] = merge_conditions(status.get("conditions"), degraded("InvalidSpec", message))
    patch.status["observedGeneration"] = body.get("metadata", {}).get("generation")
    if not already:
        kopf.event(body, type="Warning", reason="InvalidSpec", message=message)


async def _reconcile(
    body: Any, name: str, namespace: str, status: dict[str, Any], patch: kopf.Patch
) -> dict | None:
    """Validate, apply children, write status; returns the parsed spec (None if invalid)."""
    try:
        spec = parse_spec(body.get("spec"))
    except InvalidSpec as error:
        _mark_degraded(body, patch, status, error)
        return None
    replicas = desired_replicas(spec, status)
    result = await reconcile_children(
        RUNTIME.client,
        body,
        name,
        namespace,
        spec,
        replicas,
        monitoring=RUNTIME.monitoring,
        window=CONFIG.p99_window,
    )
    for action in result.actions:
        kopf.event(body, type="Normal", reason="Reconciled", message=action)
    phase, conditions, counts = workload_status(result.deployment, replicas)
    patch.status["phase"] = phase.value
    patch.status["observedGeneration"] = body.get("metadata", {}).get("generation")
    patch.status["endpoint"] = endpoint(name, namespace)
    patch.status["conditions"] = merge_conditions(status.get("conditions"), conditions)
    patch.status.update(counts)
    if spec["autoscaling"]["enabled"]:
        patch.status.setdefault("autoscaler", {})["desiredReplicas"] = replicas
    return spec


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_handler(
    body: kopf.Body, name: str, namespace: str, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    try:
        await _reconcile(body, name, namespace, dict(status), patch)
    except kube.ApiError as exc:
        raise _retry(exc) from exc


def _retry(exc: kube.ApiError) -> kopf.TemporaryError:
    """API conflicts, 5xx, timeouts: kopf retries the handler after a short delay."""
    return kopf.TemporaryError(f"Kubernetes API error, will retry: {exc}", delay=CONFIG.retry_delay_s)


def _alert_signal(status: dict[str, Any], now: float) -> tuple[Signal, str | None]:
    alert = ((status.get("autoscaler") or {}).get("alert")) or None
    if alert is None:
        return Signal.UNKNOWN, "no p99 alert received from Alertmanager yet"
    if not alert.get("firing"):
        return Signal.OK, None
    age = now - float(alert.get("receivedAt") or 0)
    if age > CONFIG.alert_stale_s:
        return Signal.UNKNOWN, (
            f"the firing p99 alert was last confirmed {age:.0f}s ago (Alertmanager silent?); "
            f"its repeat_interval must be below {CONFIG.alert_stale_s:g}s"
        )
    return Signal.HIGH, None


def _combine(signals: list[Signal]) -> Signal:
    if Signal.HIGH in signals:
        return Signal.HIGH
    known = [s for s in signals if s is not Signal.UNKNOWN]
    if not known:
        return Signal.UNKNOWN
    return Signal.OK if all(s is Signal.OK for s in known) else Signal.HOLD


async def _autoscale(
    body: Any, name: str, namespace: str, spec: dict[str, Any], status: dict[str, Any], patch: kopf.Patch
) -> None:
    autoscaling = spec["autoscaling"]
    policy = Policy.from_spec(autoscaling)
    stored = status.get("autoscaler") or {}
    state = State.from_status(stored)
    now = time.time()
    signals: list[Signal] = []
    problems: list[str] = []
    p99 = stored.get("lastP99Seconds")
    if autoscaling["mode"] in ("alerts", "both"):
        signal, problem = _alert_signal(status, now)
        signals.append(signal)
        problems += [problem] if problem else []
    if autoscaling["mode"] in ("poll", "both"):
        url = autoscaling.get("prometheusURL") or CONFIG.prometheus_url
        if not url:
            signals.append(Signal.UNKNOWN)
            problems.append("poll mode needs autoscaling.prometheusURL (or KUBETTS_OPERATOR_PROMETHEUS_URL)")
        else:
            reading = await query_p99(url, name, namespace, CONFIG.p99_window)
            signal, state = classify_p99(reading.p99_s, policy, state, now)
            signals.append(signal)
            p99 = reading.p99_s if reading.p99_s is not None else p99
            problems += [reading.problem] if reading.problem else []
    signal = _combine(signals)
    current = desired_replicas(spec, status)
    decision: Decision = decide(current, signal, policy, state, now)
    summary = {
        **decision.state.to_status(),
        "desiredReplicas": decision.replicas,
        "lastP99Seconds": p99,
        "signal": signal.value,
    }
    if decision.changed(current):
        await RUNTIME.client.patch(
            "apps/v1", "Deployment", namespace, name, {"spec": {"replicas": decision.replicas}}
        )
        summary["lastScaleReason"] = decision.reason
        kopf.event(body, type="Normal", reason="Scaled", message=decision.reason)
        log.info("%s/%s: %s", namespace, name, decision.reason)
    patch.status["autoscaler"] = summary
    metrics_ok = signal is not Signal.UNKNOWN
    metrics_condition = condition(
        ConditionType.METRICS,
        metrics_ok,
        "SignalAvailable" if metrics_ok else "NoData",
        "latency signal available" if metrics_ok else "not scaling: " + "; ".join(problems or ["no data"]),
    )
    patch.status["conditions"] = merge_conditions(
        patch.status.get("conditions") or status.get("conditions"), [metrics_condition]
    )


@kopf.timer(
    GROUP, VERSION, PLURAL, interval=CONFIG.autoscale_interval_s, initial_delay=CONFIG.autoscale_interval_s
)
async def resync(
    body: kopf.Body, name: str, namespace: str, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    """Repair drift and run the autoscaler, every ``KUBETTS_OPERATOR_AUTOSCALE_INTERVAL_S``."""
    status_dict = dict(status)
    try:
        spec = await _reconcile(body, name, namespace, status_dict, patch)
        if spec is not None and spec["autoscaling"]["enabled"]:
            await _autoscale(body, name, namespace, spec, status_dict, patch)
    except kube.ApiError as exc:
        raise _retry(exc) from exc


async def _reconcile_owner(body: Any, logger: logging.Logger) -> None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") != "TTSService" or not ref.get("apiVersion", "").startswith(GROUP + "/"):
            continue
        namespace, name = body["metadata"]["namespace"], ref["name"]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
        owner = await RUNTIME.client.get_path(path)
        if owner is None or owner.get("metadata", {}).get("deletionTimestamp"):
            return  # the owner is gone: garbage collection removes the rest
        try:
            spec = parse_spec(owner.get("spec"))
        except InvalidSpec:
            return
        result = await reconcile_children(
            RUNTIME.client,
            owner,
            name,
            namespace,
            spec,
            desired_replicas(spec, owner.get("status")),
            monitoring=RUNTIME.monitoring,
            window=CONFIG.p99_window,
        )
        for action in result.actions:
            kopf.event(owner, type="Normal", reason="Repaired", message=action)
            logger.info("repaired %s/%s: %s", namespace, name, action)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
async def child_changed(event: dict[str, Any], body: kopf.Body, logger: logging.Logger, **_: Any) -> None:
    """A child was deleted or edited by hand: put it back right away (the timer would, later)."""
    if event.get("type") in ("DELETED", "MODIFIED"):
        try:
            await _reconcile_owner(body, logger)
        except kube.ApiError as exc:
            logger.warning("could not repair at once (the resync timer will): %s", exc)
