"""One acting operator among its replicas: a ``coordination.k8s.io`` Lease, as client-go's
leader election uses one.

A replica acts only while it holds the Lease.  It takes the Lease when it is free or its
holder stopped renewing it for ``leaseDurationSeconds``, renews it every ``retry_period_s``,
and gives up -- the operator stops, the process exits, Kubernetes restarts it as a follower --
when it could not renew for ``renew_deadline_s`` (shorter than the lease duration, so two
replicas never act at once).  On a clean shutdown it releases the Lease, so a follower takes
over at once instead of after the lease duration.  Writes use the Lease's resourceVersion:
of two replicas racing for it, the API server lets exactly one win.

:func:`next_step` is the decision, pure; :class:`LeaderElector` does the I/O.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from .kube import ApiError, KubeClient, object_path

log = logging.getLogger("tts_operator.leader")
LEASE_API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class Timing:
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("leader election needs 0 < retry period < renew deadline < lease duration")


class Step(enum.Enum):
    ACQUIRE = "acquire"  # free, or its holder stopped renewing: take it
    RENEW = "renew"  # ours: renew it
    WAIT = "wait"  # another replica holds it


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(moment: datetime.datetime) -> str:
    """A Lease MicroTime."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_step(lease: dict[str, Any] | None, identity: str, now: datetime.datetime) -> Step:
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if holder == identity:
        return Step.RENEW
    if not holder:
        return Step.ACQUIRE
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if renewed is None or now >= renewed + datetime.timedelta(seconds=duration):
        return Step.ACQUIRE
    return Step.WAIT


def claimed(
    lease: dict[str, Any] | None,
    identity: str,
    now: datetime.datetime,
    timing: Timing,
    namespace: str,
    name: str,
) -> dict[str, Any]:
    """The Lease as written to take or renew it (keeping its resourceVersion, if it exists)."""
    spec = dict((lease or {}).get("spec") or {})
    taking_over = spec.get("holderIdentity") != identity
    spec.update(
        holderIdentity=identity,
        leaseDurationSeconds=round(timing.lease_duration_s),
        renewTime=format_time(now),
    )
    if taking_over:
        spec["acquireTime"] = format_time(now)
        spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
    metadata = dict((lease or {}).get("metadata") or {"name": name, "namespace": namespace})
    return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": metadata, "spec": spec}


def default_identity() -> str:
    """The pod's name in a pod (POD_NAME), else host and process; plus a random part."""
    base = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{uuid.uuid4().hex[:6]}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """Acquire, hold and release one Lease for this process."""

    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str, timing: Timing) -> None:
        self._client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing
        self._path = object_path(LEASE_API, "Lease", namespace, name)
        self.leading = False

    async def try_once(self) -> bool:
        """One attempt to take or renew the Lease; True while this process holds it."""
        lease = await self._client.get(self._path)
        now = _now()
        if next_step(lease, self.identity, now) is Step.WAIT:
            self.leading = False
            return False
        body = claimed(lease, self.identity, now, self.timing, self.namespace, self.name)
        try:
            if lease is None:
                await self._client.create(object_path(LEASE_API, "Lease", self.namespace), body)
            else:
                await self._client.replace(self._path, body)
        except ApiError as exc:
            if exc.status in (409, 422):  # another replica wrote it first
                self.leading = False
                return False
            raise
        if not self.leading:
            log.info("became the leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        self.leading = True
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        waiting_logged = False
        while True:
            try:
                if await self.try_once():
                    return
            except ApiError as exc:
                log.warning("leader election: %s", exc)
            if not waiting_logged:
                log.info(
                    "waiting for the Lease %s/%s: another replica is the leader", self.namespace, self.name
                )
                waiting_logged = True
            await asyncio.sleep(self.timing.retry_period_s)

    async def hold(self) -> None:
        """Renew the Lease until renewal fails for ``renew_deadline_s``; then return (leadership lost)."""
        last_renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.timing.retry_period_s)
            try:
                if await self.try_once():
                    last_renewed = asyncio.get_running_loop().time()
                    continue
                log.error("lost the Lease %s/%s to another replica", self.namespace, self.name)
                return
            except ApiError as exc:
                log.warning("could not renew the Lease: %s", exc)
            if asyncio.get_running_loop().time() - last_renewed >= self.timing.renew_deadline_s:
                log.error("could not renew the Lease for %.0fs: stepping down", self.timing.renew_deadline_s)
                self.leading = False
                return

    async def release(self) -> None:
        """Hand the Lease back on a clean shutdown, so a follower need not wait for it to expire."""
        if not self.leading:
            return
        try:
            lease = await self._client.get(self._path)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"] = {**lease["spec"], "holderIdentity": None, "leaseDurationSeconds": 1}
                await self._client.replace(self._path, lease)
                log.info("released the Lease %s/%s", self.namespace, self.name)
        except ApiError as exc:
            log.warning("could not release the Lease (it expires by itself): %s", exc)
        self.leading = False
