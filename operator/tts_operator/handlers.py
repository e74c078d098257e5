"""kopf handlers: thin glue between kopf's events and :mod:`.reconcile`.

* login -> the credentials of :mod:`.login` (the same source the operator's client uses);
* start-up -> the API client, server-side label selectors for the children's watches, the
  Alertmanager webhook receiver and the resync loop, all kept in kopf's ``memo``;
* a TTSService created, resumed or with a changed spec -> reconcile it;
* a child deleted or changed by someone else -> reconcile its owner at once.

There are no kopf timers or daemons on purpose: they make kopf put a finalizer on every
TTSService, which nothing removes once the operator is uninstalled, so deleting the CRD or the
namespace would hang.  Periodic resync is one loop of the operator's own (:func:`.reconcile.resync_forever`),
and deleting a TTSService is left to the garbage collector (the children's owner references).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import kopf
from aiohttp import web

from . import kube, login
from .builders import MANAGED_BY, MANAGED_SELECTOR
from .config import OperatorConfig
from .events import EventPoster
from .reconcile import Operator, evaluate_soon, reconcile, resync_forever
from .spec import GROUP, PLURAL, VERSION
from .webhook import make_app

log = logging.getLogger("tts_operator")
# The children kopf watches, named as kopf's decorators name them (group, version, plural).
CHILD_RESOURCES = (("apps", "v1", "deployments"), ("", "v1", "services"))


def _config(memo: kopf.Memo) -> OperatorConfig:
    """The operator's settings: given by the CLI through the memo, else read from the environment."""
    config = memo.get("config")
    if config is None:
        config = memo["config"] = OperatorConfig.from_env()
    return config


def _source(memo: kopf.Memo) -> login.Source:
    return login.Source(Path(_config(memo).service_account_dir))


@kopf.on.login()
async def login_handler(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    return await login.connection_info(_source(memo), settings)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    config = _config(memo)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetts.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetts.io")
    settings.posting.enabled = False  # the operator posts its own Events (events.py), kopf none
    settings.watching.server_timeout = 60
    # The operator serves one resource it knows: no cluster-wide CRD scanning (and no RBAC for it).
    settings.scanning.disabled = True
    # Watch only what the operator owns: the API server filters the children's watch streams.
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = MANAGED_SELECTOR
    client = kube.KubeClient(_source(memo).load, timeout_s=config.api_timeout_s)
    try:
        monitoring = config.monitoring and await client.has_resource(
            "monitoring.coreos.com/v1", "servicemonitors"
        )
        keda = await client.has_resource("keda.sh/v1alpha1", "scaledobjects")
    except kube.ApiError:
        monitoring = keda = False
    logger.info(
        "prometheus-operator CRDs %s",
        "found: creating ServiceMonitor and PrometheusRule" if monitoring else "absent",
    )
    operator = Operator(
        client, config, EventPoster(client), monitoring, tuple(memo.get("namespaces") or ()), keda=keda
    )
    memo["operator"] = operator
    app = make_app(
        client,
        config.webhook_token,
        insecure=config.webhook_insecure,
        on_recorded=lambda obj: evaluate_soon(operator, obj),
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.webhook_host, config.webhook_port).start()
    memo["webhook"] = runner
    logger.info(
        "Alertmanager webhook listening on %s:%d/alertmanager", config.webhook_host, config.webhook_port
    )
    memo["resync"] = asyncio.get_running_loop().create_task(resync_forever(operator), name="kubetts-resync")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    resync = memo.get("resync")
    if resync is not None:
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await resync
    if memo.get("webhook") is not None:
        await memo["webhook"].cleanup()
    operator = memo.get("operator")
    if operator is not None:
        for task in list(operator.tasks):  # evaluations an alert started
            task.cancel()
        await asyncio.gather(*operator.tasks, return_exceptions=True)
        await operator.client.close()


def _retry(exc: kube.ApiError, config: OperatorConfig) -> kopf.TemporaryError:
    """Conflicts, 5xx, timeouts: kopf retries the handler after a short delay."""
    return kopf.TemporaryError(f"Kubernetes API error, will retry: {exc}", delay=config.retry_delay_s)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_handler(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    operator: Operator = memo["operator"]
    try:
        await reconcile(operator, dict(body))
    except kube.ApiError as exc:
        raise _retry(exc, operator.config) from exc


@kopf.on.event(*CHILD_RESOURCES[0], labels=MANAGED_BY)
@kopf.on.event(*CHILD_RESOURCES[1], labels=MANAGED_BY)
async def child_changed(
    event: dict[str, Any], body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    """A child was deleted, or changed (its status, or by someone else): reconcile its owner.

    An apply that changes nothing writes nothing, so reacting to the operator's own writes is
    harmless; reacting to the Deployment's status keeps the TTSService's status current, and
    a hand edit of a field the operator owns is put back at once.
    """
    operator: Operator = memo["operator"]
    meta = body.get("metadata", {})
    path = kube.object_path(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])
    if event.get("type") == "DELETED":
        operator.forget(path)
    elif event.get("type") == "MODIFIED":
        operator.observe(path, dict(body))
    else:
        return
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") != "TTSService" or not ref.get("apiVersion", "").startswith(GROUP + "/"):
            continue
        owner = {"metadata": {"name": ref["name"], "namespace": meta["namespace"], "uid": ref.get("uid")}}
        try:
            await reconcile(operator, owner)  # reads the owner itself; gone: the GC takes the rest
        except kube.ApiError as exc:
            logger.warning("could not reconcile the owner at once (the resync will): %s", exc)
