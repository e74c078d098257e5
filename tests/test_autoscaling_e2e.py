"""End to end: a real service, real Prometheus and Alertmanager, the real operator and control plane.

The espeak service runs as one process on 127.0.0.1.  The Deployment's pods are kwok's: they become
ready but run nothing, so the one real process stands in for every ready pod -- the test keeps a
file_sd target list with one target per ready pod (labels ``namespace``, ``service``, ``pod``, as a
ServiceMonitor gives them), all scraping that process.  Prometheus evaluates the operator's own rule
group (built by the same function as the PrometheusRule, with a 10 s rate window instead of 1 m so
the test takes seconds); in alerts mode its alerts go through a real Alertmanager, with the bearer
token the chart configures, to the operator's webhook, which evaluates the TTSService as soon as it
records an alert (the operator's resync is set beyond the test's length, so nothing else could
scale it); in poll mode the operator queries the same demand itself at every resync.

A few closed-loop clients keep the one engine busy and make requests wait for it (the default
``queueWait`` signal): demand rises -> the High alert fires (or poll mode reads it) -> the operator
raises the replicas -> the controller-manager creates pods -> kwok makes them ready -> the status
shows them.  Since the load does not spread over pods that serve nothing, demand keeps rising with
each pod until ``maxReplicas``.  The load stops -> demand falls to 0 -> the Low alert fires -> after
the stabilization window the replicas return to ``minReplicas``.

The time from the breach (the High alert's ``activeAt``: the first evaluation over the threshold)
to the replica change is measured and printed, against ``for`` plus the evaluation interval; it is
never asserted (tests do not assert timings), only that in alerts mode the change did not come
before ``for``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from kube_cluster import tts
from monitoring import ALERTMANAGER, PROMETHEUS, PROMTOOL, alertmanager, alerts, prometheus, query
from operator_harness import running_operator, tts_object, wait_for
from service_process import running_service
from tts_operator.promql import DEMAND_RECORD, HIGH_ALERT, LOW_ALERT, rule_group
from tts_operator.spec import duration_seconds, parse_spec

# Skipped only outside CI: in CI (./dev test installs them) a missing binary is a failure.
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS and ALERTMANAGER and PROMTOOL) and not os.environ.get("CI"),
    reason="Prometheus/Alertmanager not installed (./dev test installs them as root)",
)

NAME, WINDOW, TOKEN = "demo", "10s", "e2e-token"
EVALUATION_INTERVAL_S = 1.0  # monitoring.prometheus evaluates rules every second
LONG_TEXT = "This sentence makes the service work hard for its answer. " * 30


def autoscaled_spec(mode: str, **extra) -> dict:
    return {
        "replicas": 1,
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 3,
            "signal": "queueWait",
            "queueWaitTargetSeconds": 0.02,  # espeak: a sentence takes ~5 ms, a turn behind 7 others ~35 ms
            "for": "2s",
            "scaleDownStabilizationSeconds": 3,
            "mode": mode,
            **extra,
        },
    }


class Load:
    """A few closed-loop clients sending long texts until stopped (bounded by ``max_requests``)."""

    def __init__(self, url: str, clients: int = 4, max_requests: int = 2000) -> None:
        self._stop = threading.Event()
        self._count = 0
        self._max = max_requests
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(url,), daemon=True) for _ in range(clients)
        ]
        for t in self._threads:
            t.start()

    def _client(self, url: str) -> None:
        body = json.dumps({"input": LONG_TEXT, "response_format": "pcm"}).encode()
        while not self._stop.is_set():
            with self._lock:
                if self._count >= self._max:
                    return
                self._count += 1
            request = urllib.request.Request(
                url + "/v1/audio/speech", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    resp.read()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


class ReadyPodTargets:
    """Keeps a file_sd file listing one scrape target per ready pod of the TTSService, each the
    real service process (kwok's pods run nothing), labelled as a ServiceMonitor would label it."""

    def __init__(self, cluster, ns: str, address: str, path: Path) -> None:
        self.cluster, self.ns, self.address, self.path = cluster, ns, address, path
        self._stop = threading.Event()
        self.write([])
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def ready_pods(self) -> list[str]:
        pods = self.cluster.plane.get("pods", "-n", self.ns, "-l", f"app.kubernetes.io/instance={NAME}")
        return sorted(
            p["metadata"]["name"]
            for p in (pods or {}).get("items", [])
            if not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions", [])
            )
        )

    def write(self, pods: list[str]) -> None:
        groups = [
            {"targets": [self.address], "labels": {"namespace": self.ns, "service": NAME, "pod": pod}}
            for pod in pods
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.path)  # atomically: Prometheus never reads half a file

    def _follow(self) -> None:
        written = None
        while not self._stop.wait(0.5):
            pods = self.ready_pods()
            if pods != written:
                self.write(pods)
                written = pods

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def replicas(cluster, ns) -> int:
    return cluster.plane.get("deployment", NAME, "-n", ns)["spec"]["replicas"]


def _epoch(rfc3339: str) -> float:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def run_scenario(cluster, tmp_path, mode: str) -> dict[str, float]:
    ns = cluster.namespace("scaling")
    spec = autoscaled_spec(mode)
    with running_service(TTS_MAX_BATCH_SIZE="1", TTS_MAX_WAIT_MS="0", TTS_MAX_QUEUE_SIZE="64") as service:
        groups = [rule_group(NAME, ns, parse_spec(spec), WINDOW)]
        env = {"KUBETTS_OPERATOR_SIGNAL_WINDOW": WINDOW, "KUBETTS_OPERATOR_WEBHOOK_TOKEN": TOKEN}
        if mode == "alerts":
            # No resync within the test: every decision is taken when the webhook records an alert
            # (Alertmanager's repeats bring the later ones).
            env["KUBETTS_OPERATOR_AUTOSCALE_INTERVAL_S"] = "3600"
        targets_file = tmp_path / "targets.json"
        with running_operator(tmp_path, kubeconfig=cluster.operator_kubeconfig, env=env) as op:
            targets = ReadyPodTargets(cluster, ns, service.url.removeprefix("http://"), targets_file)
            try:
                if mode == "alerts":
                    with (
                        alertmanager(tmp_path, op.webhook_url, token=TOKEN) as am,
                        prometheus(tmp_path, targets_file, groups, am) as prom,
                    ):
                        return drive(cluster, ns, service, prom, spec)
                with prometheus(tmp_path, targets_file, groups) as prom:
                    return drive(cluster, ns, service, prom, autoscaled_spec(mode, prometheusURL=prom))
            finally:
                targets.stop()


def active_at(prom: str, alertname: str) -> float | None:
    times = [_epoch(a["activeAt"]) for a in alerts(prom) if a["labels"]["alertname"] == alertname]
    return min(times) if times else None


def drive(cluster, ns, service, prom, spec) -> dict[str, float]:
    for_s = duration_seconds(spec["autoscaling"]["for"])
    cluster.plane.apply(tts_object(NAME, spec, ns))
    wait_for(lambda: cluster.plane.get("deployment", NAME, "-n", ns), what="the Deployment")
    wait_for(lambda: query(prom, f'{DEMAND_RECORD}{{namespace="{ns}"}}'), what="the idle pod scraped")
    assert replicas(cluster, ns) == 1
    # Eight clients: with fair turns each request waits ~7 segments (~35 ms) per turn, over the target.
    load = Load(service.url, clients=8)
    try:
        wait_for(lambda: replicas(cluster, ns) >= 2, timeout=90, what="the first scale-out under load")
        changed_at = time.time()
        breach_at = wait_for(lambda: active_at(prom, HIGH_ALERT), what="the High alert's activeAt")
        if spec["autoscaling"]["mode"] == "alerts":
            # Prometheus held the breach for `for` before it sent anything to act on.  (Poll mode
            # applies `for` to its own queries, which may see the breach up to an evaluation
            # interval before the rule does.)
            assert changed_at >= breach_at + for_s, (breach_at, changed_at)
        wait_for(lambda: replicas(cluster, ns) == 3, timeout=90, what="scale-out to maxReplicas")
        status = wait_for(
            lambda: (
                "scaled out"
                in (s := tts(cluster, NAME, ns)["status"]["autoscaler"]).get("lastScaleReason", "")
                and s
            ),
            what="the scale-out reason in status",
        )
        assert status["demand"] is None or status["demand"] > 1  # poll mode reads it; alerts carry it
        # The controller-manager made the pods and the fake node made them ready: the status says so.
        wait_for(
            lambda: tts(cluster, NAME, ns)["status"].get("readyReplicas") == 3, what="three ready replicas"
        )
    finally:
        load.stop()
    stopped_at = time.time()
    wait_for(lambda: replicas(cluster, ns) == 1, timeout=120, what="scale-in after the load stopped")
    scaled_in_at = time.time()
    wait_for(
        lambda: "scaled in" in tts(cluster, NAME, ns)["status"]["autoscaler"].get("lastScaleReason", ""),
        what="the scale-in reason in status",
    )
    low_at = active_at(prom, LOW_ALERT)  # still active, or gone once one pod is left
    figures = {
        "breach_to_scale_out_s": round(changed_at - breach_at, 2),
        "for_plus_evaluation_s": for_s + EVALUATION_INTERVAL_S,
        "load_stop_to_scale_in_s": round(scaled_in_at - stopped_at, 2),
        "low_alert_active_to_scale_in_s": round(scaled_in_at - low_at, 2) if low_at else None,
    }
    print(f"\nautoscaling e2e ({spec['autoscaling']['mode']}): {json.dumps(figures)}")
    return figures


def test_alertmanager_driven_scaling(cluster, tmp_path, record_property):
    record_property("figures", run_scenario(cluster, tmp_path, "alerts"))


def test_poll_driven_scaling(cluster, tmp_path, record_property):
    record_property("figures", run_scenario(cluster, tmp_path, "poll"))
