"""Kubernetes Events about a TTSService, posted through the operator's own client.

Not ``kopf.event``: that works only inside kopf's own tasks, and the resync loop is not one.
An Event that cannot be posted is logged and dropped: it never fails a reconcile.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from .kube import ApiError, KubeClient

log = logging.getLogger("tts_operator.events")
COMPONENT = "kubetts-operator"


def build_event(obj: dict[str, Any], *, type: str, reason: str, message: str) -> dict[str, Any]:
    meta = obj["metadata"]
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventPoster:
    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def __call__(self, obj: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        event = build_event(obj, type=type, reason=reason, message=message)
        try:
            await self._client.create(f"/api/v1/namespaces/{event['metadata']['namespace']}/events", event)
        except ApiError as exc:
            log.warning("could not post the %s event %r: %s", reason, message, exc)
