"""A Kubernetes API double for the operator tests that inject faults: kmock's emulator plus what
the operator needs.

The operator's behaviour is tested on a real control plane (tests/control_plane.py); a real API
server cannot be made to answer 500, 503 or 429, stall, or break a watch on demand, so those
tests run against kmock's ``KubernetesEmulator``, extended where kmock 0.8 lacks what they need:

* ``metadata.uid``, ``resourceVersion`` (one counter for the server), ``generation``
  (bumped on spec changes) and ``creationTimestamp``; ``generateName`` (Events);
* create answers 201; a 409 when the name is taken;
* PATCH understands JSON merge patch and JSON patch (RFC 6902; a failing ``test`` op is
  a 422, which kopf's optimistic concurrency depends on), and takes a server-side apply
  (``application/apply-patch+yaml``) as create-if-absent, else a merge -- an approximation
  without field ownership: the real semantics are tested on the real control plane;
* for resources with a status subresource, ``status`` is stored apart: a patch of the
  object ignores it, a patch of ``/status`` changes only it;
* list responses carry ``kind`` and the current ``resourceVersion``; watch streams send
  only objects newer than the ``resourceVersion`` asked for, then new events.

It has no garbage collection, no field ownership, no PUT, no label selectors and no RBAC:
tests must not pretend otherwise.  It serves only the tests that inject faults a real API
server cannot be made to produce (tests/test_operator_faults.py).  It runs in its own thread with its own event loop,
so the operator (a process of its own) and the test talk to it over HTTP only.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import threading
import urllib.error
import urllib.request
import uuid
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import enums, rendering

RESOURCES = {
    "kubetts.io/v1alpha1/ttsservices": dict(
        kind="TTSService", namespaced=True, subresources=["status", "scale"], shortnames=["tts"]
    ),
    "apps/v1/deployments": dict(kind="Deployment", namespaced=True, subresources=["status", "scale"]),
    "v1/services": dict(kind="Service", namespaced=True, subresources=["status"]),
    "v1/events": dict(kind="Event", namespaced=True, subresources=[]),
    "v1/namespaces": dict(kind="Namespace", namespaced=False, subresources=["status"]),
}
MONITORING = {
    "monitoring.coreos.com/v1/servicemonitors": dict(kind="ServiceMonitor", namespaced=True, subresources=[]),
    "monitoring.coreos.com/v1/prometheusrules": dict(kind="PrometheusRule", namespaced=True, subresources=[]),
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
APPLY = "application/apply-patch+yaml"


class KubeAPIDouble(kmock.KubernetesEmulator):
    """kmock's emulator with the Kubernetes semantics listed in the module docstring."""

    def _setup(self, monitoring: bool) -> None:
        self.faults: list[dict[str, Any]] = []  # injected by RunningAPI.inject(); consumed in order
        self._rv = 0
        self._status_subresource: set[str] = set()
        declared = {**RESOURCES, **(MONITORING if monitoring else {})}
        for key, info in declared.items():
            self.resources[key] = dict(verbs=VERBS, **info)
            if "status" in info["subresources"]:
                self._status_subresource.add(key)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _key(self, resource) -> str:
        return f"{resource.group + '/' if resource.group else ''}{resource.version}/{resource.plural}"

    async def _inject_fault(self, request: rendering.Request) -> aiohttp.web.StreamResponse | None:
        """The first matching injected fault: an error status, or a delay before normal service."""
        agent = request.headers.get("User-Agent", "")
        for fault in self.faults:
            if (
                fault["times"] > 0
                and request.method == fault["method"]
                and request.url.path.endswith(fault["path"])
                and not agent.startswith("Python-urllib")  # never fault the test's own client
                and agent.startswith(fault.get("agent") or "")
            ):
                if (
                    fault.get("watch") is not None
                    and (request.action == enums.action.WATCH) != fault["watch"]
                ):
                    continue
                fault["times"] -= 1
                fault["hits"] += 1
                if fault["delay"]:
                    await asyncio.sleep(fault["delay"])
                    return None
                return await self._render_error(
                    kmock.KubernetesError(status=fault["status"], reason="Injected", message="injected fault")
                )
        return None

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        failure = await self._inject_fault(request)
        if failure is not None:
            return failure
        if request.resource is not None and request.action in (
            enums.action.CREATE,
            enums.action.UPDATE,
            enums.action.DELETE,
        ):
            try:
                async with self._lock:
                    status, body = await self._write(request)
            except kmock.KubernetesError as exc:
                return await self._render_error(exc)
            return aiohttp.web.json_response(body, status=status)
        return await super()._handle(request)

    async def _emit(self, resource, event_type: str, obj: dict) -> None:
        await self._buses[resource].put({"type": event_type, "object": copy.deepcopy(obj)})

    async def _write(self, request: rendering.Request) -> tuple[int, dict]:
        resource, key_name = request.resource, self._key(request.resource)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        applying = request.action == enums.action.UPDATE and content_type == APPLY
        absent = (resource, request.namespace, request.name) not in self._objects or self._objects[
            (resource, request.namespace, request.name)
        ].deleted
        if request.action == enums.action.CREATE or (applying and absent):
            obj = copy.deepcopy(request.data or {})
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if not meta.get("name"):
                raise kmock.KubernetesError(status=422, reason="Invalid", message="metadata.name is required")
            namespace = request.namespace or meta.get("namespace")
            if namespace:
                meta["namespace"] = namespace
            key = (resource, namespace, meta["name"])
            if key in self._objects and not self._objects[key].deleted:
                raise kmock.KubernetesError(
                    status=409, reason="AlreadyExists", message=f"{meta['name']} already exists"
                )
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=self._next_rv(),
                generation=1,
                creationTimestamp=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            if key_name in self._status_subresource:
                obj.pop("status", None)
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            await self._emit(resource, "ADDED", obj)
            return 201, obj

        key = (resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        current = copy.deepcopy(self._objects[key].raw)

        if request.action == enums.action.DELETE:
            if current.get("metadata", {}).get("finalizers"):
                if not current["metadata"].get("deletionTimestamp"):
                    current["metadata"]["deletionTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                    current["metadata"]["resourceVersion"] = self._next_rv()
                    self._objects[key].create(current)
                    await self._emit(resource, "MODIFIED", current)
                return 200, current
            self._objects[key].delete()
            current["metadata"]["resourceVersion"] = self._next_rv()
            await self._emit(resource, "DELETED", current)
            return 200, current

        # UPDATE = PATCH (a server-side apply of an existing object is merged: see the docstring)
        if content_type == "application/json-patch+json":
            try:
                patched = jsonpatch.apply_patch(current, request.data or [])
            except jsonpatch.JsonPatchTestFailed as exc:
                raise kmock.KubernetesError(
                    status=422, reason="Invalid", message=f"the test operation failed: {exc}"
                ) from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from None
        else:
            patched = merge_patch(current, request.data or {})
        if key_name in self._status_subresource:
            if request.subresource == "status":
                patched = {**current, "status": patched.get("status", {})}
            else:
                patched["status"] = current.get("status", {})
                if not current.get("status"):
                    patched.pop("status", None)
        patched.setdefault("metadata", {})
        for immutable in ("uid", "creationTimestamp", "name", "namespace"):
            if immutable in current.get("metadata", {}):
                patched["metadata"][immutable] = current["metadata"][immutable]
        generation = current["metadata"].get("generation", 1)
        if patched.get("spec") != current.get("spec"):
            generation += 1
        patched["metadata"]["generation"] = generation
        patched["metadata"]["resourceVersion"] = self._next_rv()
        meta = patched["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._objects[key].delete()
            await self._emit(resource, "DELETED", patched)
            return 200, patched
        self._objects[key].create(patched)
        await self._emit(resource, "MODIFIED", patched)
        return 200, patched

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        listing = await super()._serve_list(request)
        info = self.resources[request.resource]
        group = request.resource.group
        listing["apiVersion"] = f"{group}/{request.resource.version}" if group else request.resource.version
        listing["kind"] = f"{info.kind}List"
        listing["metadata"] = {"resourceVersion": str(self._rv)}
        return listing

    async def _serve_watch(self, request: rendering.Request):
        since = int(request.params.get("resourceVersion") or 0)
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and event.get("type") == "ADDED":
                rv = int(event.get("object", {}).get("metadata", {}).get("resourceVersion") or 0)
                if rv <= since:
                    continue  # already in the list the client watched from
            yield event


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class RunningAPI:
    """The API double on 127.0.0.1 in a background thread, with a small sync client."""

    def __init__(self, monitoring: bool = False) -> None:
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self._monitoring = monitoring
        self._thread = threading.Thread(target=self._run, name="kube-api-double", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the API double did not start")

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with KubeAPIDouble() as handler:
            handler._setup(self._monitoring)
            async with kmock.Server(handler) as server:
                self.handler = handler
                self.url = str(server.url).rstrip("/")
                self._ready.set()
                await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        times: int = 1,
        delay: float = 0.0,
        watch: bool | None = None,
        agent: str = "",
    ) -> dict[str, Any]:
        """Make the next ``times`` operator requests ``method`` on a path ending in ``path`` fail
        (only those whose User-Agent starts with ``agent``, when given)."""
        fault = dict(
            method=method,
            path=path,
            status=status,
            times=times,
            delay=delay,
            watch=watch,
            agent=agent,
            hits=0,
        )
        self._loop.call_soon_threadsafe(self.handler.faults.append, fault)
        return fault

    def kubeconfig(self, path) -> Any:
        """A kubeconfig for the operator: the double over plain HTTP, a token it accepts."""
        import yaml

        document = {
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "double", "user": {"token": "test"}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double"}}],
        }  # fmt: skip
        path.write_text(yaml.safe_dump(document))
        return path

    # -- a kubectl-like client --------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        return body if status == 200 else None

    def create(self, path: str, body: dict) -> dict:
        status, answer = self.request("POST", path, body)
        assert status == 201, answer
        return answer

    def patch(self, path: str, body: dict) -> dict:
        status, answer = self.request("PATCH", path, body, "application/merge-patch+json")
        assert status == 200, answer
        return answer

    def delete(self, path: str) -> int:
        return self.request("DELETE", path)[0]
