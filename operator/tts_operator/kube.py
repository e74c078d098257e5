"""The operator's own Kubernetes API calls, through the ``kubernetes`` client's asyncio port.

kopf watches the TTSServices (and the children, with server-side label selectors); everything the
operator writes goes through here: children by **server-side apply** (field manager
``kubetts-operator``, conflicts forced on the fields it owns), a TTSService's status by merge
patch, the leader-election Lease, and discovery.  Configuration and credentials come from
:mod:`.login`, the same source kopf logs in with.  On a 401 the configuration is loaded again
and the call retried once: that is how a rotated service-account token (or an expired exec-plugin
token) is picked up at once rather than at the next timed refresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from . import __version__

log = logging.getLogger("tts_operator.kube")
FIELD_MANAGER = "kubetts-operator"
# Holds Deployment.spec.replicas between the operator letting go of it and an HPA's first write.
HANDOVER_MANAGER = "kubetts-operator-replicas-handover"
USER_AGENT = f"kubetts-operator/{__version__}"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"

# Plural resource path segments, by (apiVersion, kind), for the kinds the operator writes.
_PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
    ("coordination.k8s.io/v1", "Lease"): "leases",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
}
# Answers that the same request will get again: retrying soon is pointless (see is_permanent).
PERMANENT_STATUSES = frozenset({400, 403, 404, 405, 413, 415, 422})
ANY_JSON = {status: "object" for status in (200, 201, 202)}  # decoded, not turned into models


class ApiError(Exception):
    """A non-2xx answer from the API server (status 0: no answer at all)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """The request itself is refused (invalid, forbidden): repeating it changes nothing."""
        return self.status in PERMANENT_STATUSES


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = _PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def manifest_path(manifest: dict[str, Any]) -> str:
    meta = manifest["metadata"]
    return object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


def _error(exc: ApiException) -> ApiError:
    try:
        body = json.loads(exc.body or "")
        message, reason = str(body.get("message", exc.body)), str(body.get("reason", ""))
    except (ValueError, AttributeError, TypeError):
        message, reason = str(exc.body or exc.reason), ""
    return ApiError(exc.status or 0, message[:1000], reason)


class KubeClient:
    """Requests by path, with the configuration ``load`` returns (reloaded after a 401)."""

    def __init__(self, load: Callable[[], Awaitable[Configuration]], timeout_s: float = 30.0) -> None:
        self._load = load
        self._timeout_s = timeout_s
        self._api: ApiClient | None = None
        self._lock = asyncio.Lock()

    async def _client(self, reload: bool = False) -> ApiClient:
        async with self._lock:
            if self._api is None or reload:
                if self._api is not None:
                    await self._api.close()
                self._api = ApiClient(configuration=await self._load())
                self._api.user_agent = USER_AGENT
            return self._api

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Any:
        """One call; the decoded JSON answer (None if empty), or :class:`ApiError`."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        for attempt in (1, 2):
            api = await self._client(reload=attempt == 2)
            try:
                return await api.call_api(
                    path,
                    method,
                    query_params=list((query or {}).items()),
                    header_params=dict(headers),
                    body=body,
                    auth_settings=["BearerToken"],
                    response_types_map=ANY_JSON,
                    _return_http_data_only=True,
                    _request_timeout=self._timeout_s,
                )
            except ApiException as exc:
                if exc.status == 401 and attempt == 1:
                    log.info(
                        "the API server answered 401 to %s %s: loading the credentials again", method, path
                    )
                    continue  # credentials rotated or expired: load them again, once
                raise _error(exc) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ApiError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        return (await self.request("GET", path, query=query) or {}).get("items", [])

    async def apply(self, manifest: dict[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply ``manifest`` as ``field_manager`` (creating it if absent).

        The manager owns exactly the fields in ``manifest``: fields it set before and left out
        now are removed, fields other managers set are kept, and a conflict over a field it
        sets is forced in its favour.  The API server writes nothing when nothing changes.
        """
        query = {"fieldManager": field_manager, "force": "true"}
        return await self.request(
            "PATCH", manifest_path(manifest), body=manifest, content_type=APPLY, query=query
        )

    async def delete(self, path: str, *, uid: str | None = None) -> bool:
        """Delete the object at ``path`` (only if its uid is still ``uid``, when given); False when
        it did not exist (or was replaced meanwhile)."""
        body = {"preconditions": {"uid": uid}} if uid else None
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT: fails with 409 unless ``body``'s resourceVersion is the current one."""
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=patch, content_type=MERGE)

    async def has_resource(self, api_version: str, plural: str) -> bool:
        """Whether the cluster serves ``plural`` in ``api_version`` (e.g. prometheus-operator CRDs)."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        listing = await self.get(prefix)
        return bool(listing) and any(r.get("name") == plural for r in listing.get("resources", []))

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None
