"""``kubetts-operator``: wait to be the leader, then run kopf with kubetts' handlers.

It starts as any Kubernetes client does: in a pod from its service account, elsewhere from
``$KUBECONFIG`` (see :mod:`.login`).  With several replicas, exactly one acts: the holder of
the Lease ``--leader-election-id`` in ``--leader-election-namespace`` (the pod's namespace by
default; outside a pod, the kubeconfig context's).  If it loses the Lease it stops and exits 1,
so Kubernetes restarts it as a follower; on SIGTERM it stops handling, releases the Lease and
exits 0.  ``--liveness`` serves ``GET /healthz`` for the whole life of the process, leader or
follower.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import urllib.parse
from pathlib import Path

import kopf
from aiohttp import web

from . import __version__, login
from .config import OperatorConfig
from .kube import KubeClient
from .leader import LeaderElector, Timing, default_identity

log = logging.getLogger("tts_operator")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubetts-operator", description="The kubetts TTSService operator.")
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument(
        "--leader-election", action=argparse.BooleanOptionalAction, default=True,
        help="act only while holding the Lease (default: on)",
    )  # fmt: skip
    parser.add_argument(
        "--leader-election-namespace", help="the Lease's namespace (default: the operator's own)"
    )
    parser.add_argument("--leader-election-id", default="kubetts-operator", help="the Lease's name")
    parser.add_argument("--liveness", help="serve GET /healthz at this URL, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--version", action="version", version=f"kubetts-operator {__version__}")
    args = parser.parse_args(argv)
    if args.all_namespaces and args.namespace:
        parser.error("--all-namespaces and --namespace exclude each other")
    return args


async def _liveness(url: str) -> web.AppRunner:
    parsed = urllib.parse.urlsplit(url)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get(parsed.path or "/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parsed.hostname or "0.0.0.0", parsed.port or 8080).start()
    return runner


async def run(args: argparse.Namespace, config: OperatorConfig) -> int:
    """Run until SIGTERM/SIGINT (0) or until the Lease is lost (1)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    source = login.Source(Path(config.service_account_dir))
    health = await _liveness(args.liveness) if args.liveness else None
    client = KubeClient(source.load, timeout_s=config.api_timeout_s)
    elector: LeaderElector | None = None
    holding: asyncio.Task | None = None
    try:
        if args.leader_election:
            timing = Timing(
                config.lease_duration_s, config.lease_renew_deadline_s, config.lease_retry_period_s
            )
            namespace = args.leader_election_namespace or source.namespace()
            elector = LeaderElector(client, namespace, args.leader_election_id, default_identity(), timing)
            acquiring = loop.create_task(elector.acquire())
            stopping = loop.create_task(stop.wait())
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not acquiring.done():
                acquiring.cancel()
                return 0  # stopped while a follower
            acquiring.result()
            holding = loop.create_task(elector.hold())
            holding.add_done_callback(lambda _: stop.set())  # leadership lost: stop acting at once
        from . import handlers  # noqa: F401 -- registers the handlers with kopf

        memo = kopf.Memo(config=config, namespaces=tuple(args.namespace))
        await kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
            memo=memo,
            stop_flag=stop,
        )
        lost = holding is not None and holding.done()
        if lost:
            log.error("stopped: leadership lost; exiting so that this replica restarts as a follower")
        return 1 if lost else 0
    finally:
        if holding is not None and not holding.done():
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
        if elector is not None:
            await elector.release()
        await client.close()
        if health is not None:
            await health.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose, debug=args.debug)
    # At DEBUG the client logs every response body: noise, and Secrets would be among them.
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    try:
        config = OperatorConfig.from_env()
    except ValueError as exc:
        print(f"kubetts-operator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(run(args, config)))
