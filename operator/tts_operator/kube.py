"""A small async Kubernetes API client for the operator's children.

kopf watches and patches the TTSService itself; the Deployment, Service and monitoring
objects are read and written here, with the same credentials kopf logged in with (see
``login.py``).  Only what the operator needs: get, create, merge-patch, delete, and
API discovery -- every call the operator makes is one of these, which keeps its RBAC
small and auditable.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from . import __version__

USER_AGENT = f"kubetts-operator/{__version__}"

# Plural resource path segments, by (apiVersion, kind), for the kinds the operator writes.
_PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
}


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str | None = None
    ca_path: str | None = None
    insecure: bool = False


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = _PLURALS[(api_version, kind)]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """get/create/patch/delete for namespaced objects, by their manifest's apiVersion and kind."""

    def __init__(self, credentials: Credentials, timeout_s: float = 30.0) -> None:
        self._credentials = credentials
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
            if self._credentials.token:
                headers["Authorization"] = f"Bearer {self._credentials.token}"
            if self._credentials.insecure:
                ssl_context: ssl.SSLContext | bool = False
            elif self._credentials.ca_path:
                ssl_context = ssl.create_default_context(cafile=self._credentials.ca_path)
            else:
                ssl_context = True
            self._session = aiohttp.ClientSession(
                base_url=self._credentials.server,
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=ssl_context),
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            )
        return self._session

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Any:
        session = self._ensure_session()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type or "application/json"} if body is not None else {}
        try:
            async with session.request(method, path, data=data, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Status 0: no answer at all (connection refused, reset, timed out).
            raise ApiError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            raise ApiError(status, str(message)[:500])
        return json.loads(text) if text else None

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", object_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        return await self._request("POST", path, manifest)

    async def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        path = object_path(api_version, kind, namespace, name)
        return await self._request("PATCH", path, patch, "application/merge-patch+json")

    async def patch_custom(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch any path (used for a TTSService's status subresource)."""
        return await self._request("PATCH", path, patch, "application/merge-patch+json")

    async def get_path(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def has_resource(self, api_version: str, plural: str) -> bool:
        """Whether the cluster serves ``plural`` in ``api_version`` (e.g. prometheus-operator CRDs)."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        listing = await self.get_path(prefix)
        return bool(listing) and any(r.get("name") == plural for r in listing.get("resources", []))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
