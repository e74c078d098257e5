"""The Alertmanager webhook receiver: ``POST /alertmanager`` records p99 alerts in status.

It does not scale by itself.  It validates the payload, keeps only the operator's own
p99 alert for TTSServices that exist, and writes the alert's state into the TTSService's
``status.autoscaler.alert``; the resync loop's autoscaler acts on it.  Recording by
the alert's own timestamps makes it idempotent under duplicate notifications and immune
to out-of-order ones: an older notification never overwrites a newer one.  A repeated
firing notification only refreshes ``receivedAt``, so a firing alert that Alertmanager
stops confirming (it is down) goes stale instead of scaling forever.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from aiohttp import web

from .builders import ALERT_NAME_LABEL, ALERT_NAMESPACE_LABEL, P99_ALERT
from .kube import ApiError, KubeClient
from .spec import tts_path

log = logging.getLogger("tts_operator.webhook")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "unset" endsAt


class PayloadError(ValueError):
    pass


def parse_alerts(payload: Any) -> list[dict[str, Any]]:
    """The p99 alerts in an Alertmanager webhook payload (version 4), validated."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadError("expected an Alertmanager webhook payload with an 'alerts' list")
    alerts = []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise PayloadError("every alert needs a 'labels' object")
        if alert.get("status") not in ("firing", "resolved"):
            raise PayloadError("every alert needs status 'firing' or 'resolved'")
        labels = alert["labels"]
        if labels.get("alertname") != P99_ALERT:
            continue  # not ours
        if not labels.get(ALERT_NAMESPACE_LABEL) or not labels.get(ALERT_NAME_LABEL):
            continue  # not about a TTSService
        alerts.append(alert)
    return alerts


def alert_record(alert: dict[str, Any]) -> dict[str, Any]:
    firing = alert["status"] == "firing"
    return {
        "firing": firing,
        "startsAt": alert.get("startsAt") or "",
        "endsAt": "" if firing else (alert.get("endsAt") or ""),
        "fingerprint": alert.get("fingerprint", ""),
    }


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
    """What to write into ``status.autoscaler.alert`` for a received ``record``, or None.

    A newer notification replaces the old record; a repeat of the same firing alert only
    refreshes ``receivedAt`` (so duplicates change nothing the autoscaler acts on); a
    duplicate or older notification otherwise writes nothing.
    """
    if is_newer(record, old):
        return record
    if old and old.get("firing") and record["firing"] and record["startsAt"] == old.get("startsAt"):
        return {"receivedAt": record["receivedAt"]}
    return None


def make_app(client: KubeClient, token: str = "") -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        if token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        try:
            alerts = parse_alerts(await request.json())
        except (ValueError, PayloadError) as exc:
            return web.json_response({"error": f"invalid payload: {exc}"}, status=400)
        recorded = 0
        for alert in alerts:
            namespace, name = alert["labels"][ALERT_NAMESPACE_LABEL], alert["labels"][ALERT_NAME_LABEL]
            path = tts_path(namespace, name)
            try:
                obj = await client.get(path)
                if obj is None:
                    log.info("ignoring alert for %s/%s: no such TTSService", namespace, name)
                    continue
                record = {**alert_record(alert), "receivedAt": time.time()}
                old = ((obj.get("status") or {}).get("autoscaler") or {}).get("alert")
                change = alert_change(record, old)
                if change is None:
                    continue
                await client.merge_patch(path + "/status", {"status": {"autoscaler": {"alert": change}}})
                recorded += 1
                log.info("alert %s for %s/%s recorded", alert["status"], namespace, name)
            except ApiError as exc:
                log.warning("could not record alert for %s/%s: %s", namespace, name, exc)
                return web.json_response({"error": str(exc)}, status=503)  # Alertmanager retries
        return web.json_response({"received": len(alerts), "recorded": recorded})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/alertmanager", receive)
    app.router.add_get("/healthz", healthz)
    return app
