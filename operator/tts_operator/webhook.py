"""The Alertmanager webhook receiver: ``POST /alertmanager`` records scaling alerts in status.

It does not scale by itself.  It validates the payload, keeps only the operator's own alerts
(:data:`~tts_operator.promql.ALERTS`) for TTSServices that exist, and writes each alert's state and
demand into the TTSService's ``status.autoscaler.alerts.<alertname>``; the autoscaler acts on them
-- at once when the operator passes ``on_recorded`` (it evaluates that TTSService without waiting
for its next resync), else at the next resync.  Recording by the alert's own timestamps makes it
idempotent under duplicate notifications and immune to out-of-order ones: an older notification
never overwrites a newer one.
A repeated firing notification refreshes ``receivedAt`` (and the demand), so an alert that
Alertmanager stops confirming (it is down) goes stale instead of scaling forever.

It is an attack surface -- whoever can post to it could push every TTSService to maxReplicas GPUs --
so it requires a bearer token (refusing everything when none is configured, unless explicitly told
to accept unauthenticated alerts), takes label values only when they are valid Kubernetes names
before they reach an API path, and acts on an alert only when the namespace Prometheus evaluated it
in is the TTSService's own.  What the API server refuses for good (403, 404) is answered 200 with
the reason, so Alertmanager does not retry it forever; only transient failures get a 503.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .kube import ApiError, KubeClient
from .promql import ALERT_NAME_LABEL, ALERT_NAMESPACE_LABEL, ALERTS, DEMAND_ANNOTATION
from .spec import tts_path

log = logging.getLogger("tts_operator.webhook")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "unset" endsAt
NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label
SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1035 label (a TTSService's name)


class PayloadError(ValueError):
    pass


def parse_alerts(payload: Any) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The operator's alerts in an Alertmanager webhook payload (version 4), validated; and the
    ones left out, each with the reason."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadError("expected an Alertmanager webhook payload with an 'alerts' list")
    alerts, ignored = [], []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise PayloadError("every alert needs a 'labels' object")
        if alert.get("status") not in ("firing", "resolved"):
            raise PayloadError("every alert needs status 'firing' or 'resolved'")
        labels = alert["labels"]
        if labels.get("alertname") not in ALERTS:
            continue  # not ours
        problem = label_problem(labels)
        if problem:
            ignored.append({"alert": str(labels.get("alertname")), "reason": problem})
            continue
        alerts.append(alert)
    return alerts, ignored


def label_problem(labels: dict[str, Any]) -> str | None:
    """Why an alert's labels cannot name a TTSService it may scale, if they cannot."""
    namespace, name = labels.get(ALERT_NAMESPACE_LABEL), labels.get(ALERT_NAME_LABEL)
    if not isinstance(namespace, str) or not NAMESPACE_NAME.fullmatch(namespace) or len(namespace) > 63:
        return f"label {ALERT_NAMESPACE_LABEL} is not a namespace name"
    if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name) or len(name) > 63:
        return f"label {ALERT_NAME_LABEL} is not a TTSService name"
    if labels.get("namespace") != namespace:
        return (
            f"the alert's namespace label ({labels.get('namespace')!r}) is not its {ALERT_NAMESPACE_LABEL} "
            f"({namespace!r}): an alert may only scale a TTSService in the namespace it was evaluated in"
        )
    return None


def alert_record(alert: dict[str, Any]) -> dict[str, Any]:
    firing = alert["status"] == "firing"
    return {
        "firing": firing,
        "startsAt": alert.get("startsAt") or "",
        "endsAt": "" if firing else (alert.get("endsAt") or ""),
        "fingerprint": alert.get("fingerprint", ""),
        "demand": _demand((alert.get("annotations") or {}).get(DEMAND_ANNOTATION)),
    }


def _demand(value: Any) -> float | None:
    try:
        demand = float(value)
    except (TypeError, ValueError):
        return None
    return demand if math.isfinite(demand) and demand >= 0 else None


def is_newer(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether ``new`` should replace ``old`` (RFC 3339 UTC strings compare in time order)."""
    if not old:
        return True
    new_time = new["endsAt"] if not new["firing"] else new["startsAt"]
    old_time = old.get("endsAt") if not old.get("firing") else old.get("startsAt")
    if new_time == old_time:
        return new["firing"] != old.get("firing") and not new["firing"]  # same instant: resolved wins
    return (new_time or "") > (old_time or "")


def alert_change(record: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any] | None:
    """What to write into ``status.autoscaler.alerts.<alertname>`` for a received ``record``, or None.

    A newer notification replaces the old record; a repeat of the same firing alert only
    refreshes ``receivedAt`` (so duplicates change nothing the autoscaler acts on); a
    duplicate or older notification otherwise writes nothing.
    """
    if is_newer(record, old):
        return record
    if old and old.get("firing") and record["firing"] and record["startsAt"] == old.get("startsAt"):
        return {"receivedAt": record["receivedAt"], "demand": record["demand"]}
    return None


def make_app(
    client: KubeClient,
    token: str = "",
    *,
    insecure: bool = False,
    on_recorded: Callable[[dict[str, Any]], None] | None = None,
) -> web.Application:
    """``on_recorded(ttsservice)``: told once per TTSService whose alerts changed, after the answer's
    records are written (it must not block: it schedules the evaluation)."""

    async def receive(request: web.Request) -> web.Response:
        if not token and not insecure:
            log.warning("refused an alert: no webhook token is configured (KUBETTS_OPERATOR_WEBHOOK_TOKEN)")
            return web.json_response(
                {"error": "this webhook has no token configured: set KUBETTS_OPERATOR_WEBHOOK_TOKEN "
                 "(the chart does), or KUBETTS_OPERATOR_WEBHOOK_INSECURE=true to accept unauthenticated alerts"},
                status=401,
            )  # fmt: skip
        if token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        try:
            alerts, ignored = parse_alerts(await request.json())
        except (ValueError, PayloadError) as exc:
            return web.json_response({"error": f"invalid payload: {exc}"}, status=400)
        recorded = 0
        changed: dict[str, dict[str, Any]] = {}  # path -> the TTSService as patched
        for alert in alerts:
            labels = alert["labels"]
            namespace, name = labels[ALERT_NAMESPACE_LABEL], labels[ALERT_NAME_LABEL]
            path = tts_path(namespace, name)
            try:
                obj = await client.get(path)
                if obj is None:
                    ignored.append(
                        {"alert": labels["alertname"], "reason": f"no TTSService {namespace}/{name}"}
                    )
                    continue
                record = {**alert_record(alert), "receivedAt": time.time()}
                alerts_status = ((obj.get("status") or {}).get("autoscaler") or {}).get("alerts") or {}
                change = alert_change(record, alerts_status.get(labels["alertname"]))
                if change is None:
                    continue
                patch = {"status": {"autoscaler": {"alerts": {labels["alertname"]: change}}}}
                changed[path] = await client.merge_patch(path + "/status", patch)
                recorded += 1
                log.info("%s %s for %s/%s recorded", labels["alertname"], alert["status"], namespace, name)
            except ApiError as exc:
                if exc.permanent:  # e.g. 403: retrying cannot help; say why and let Alertmanager move on
                    ignored.append(
                        {"alert": labels["alertname"], "reason": f"the API server refused it: {exc}"}
                    )
                    continue
                log.warning("could not record alert for %s/%s: %s", namespace, name, exc)
                return web.json_response({"error": str(exc)}, status=503)  # Alertmanager retries
        for item in ignored:
            log.info("ignored an alert: %s: %s", item["alert"], item["reason"])
        if on_recorded is not None:
            for obj in changed.values():
                on_recorded(obj)
        return web.json_response(
            {"received": len(alerts) + len(ignored), "recorded": recorded, "ignored": ignored}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/alertmanager", receive)
    app.router.add_get("/healthz", healthz)
    return app
