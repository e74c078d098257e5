"""End to end: a real service, real Prometheus (and Alertmanager), the real operator.

The espeak service runs as a process on 127.0.0.1; Prometheus scrapes it every second
with the labels a ServiceMonitor would give it (namespace, service) and evaluates the
operator's own p99 rule (built by the same function as the PrometheusRule, with a
10 s window instead of 1 m so the test takes seconds).  Long texts from a few
concurrent clients push p99 far above the target; the operator, running against the real
control plane as the chart's ServiceAccount, must raise the Deployment's replicas (the
controller-manager then creates the pods and kwok makes them ready), and bring them back down
after the load stops and the stabilization window passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request

import pytest
import yaml
from kube_cluster import tts
from monitoring import ALERTMANAGER, PROMETHEUS, PROMTOOL, alertmanager, firing_alerts, prometheus
from operator_harness import running_operator, tts_object, wait_for
from service_process import running_service
from tts_operator.builders import rule_group
from tts_operator.spec import parse_spec

# Skipped only outside CI: in CI (./dev test installs them) a missing binary is a failure.
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS and ALERTMANAGER and PROMTOOL) and not os.environ.get("CI"),
    reason="Prometheus/Alertmanager not installed (./dev test installs them as root)",
)

NAME, WINDOW = "demo", "10s"
NS = "default"  # for the promtool rule unit test (no cluster)
LONG_TEXT = "This sentence makes the service work hard for its answer. " * 30


def autoscaled_spec(mode: str, **extra) -> dict:
    return {
        "replicas": 1,
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 3,
            "p99TargetSeconds": 0.3,
            "for": "2s",
            "cooldownSeconds": 0,
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


def replicas(cluster, ns) -> int:
    return cluster.plane.get("deployment", NAME, "-n", ns)["spec"]["replicas"]


def run_scenario(cluster, tmp_path, mode: str) -> None:
    ns = cluster.namespace("scaling")
    with running_service(TTS_MAX_BATCH_SIZE="1", TTS_MAX_WAIT_MS="0", TTS_MAX_QUEUE_SIZE="64") as service:
        target = service.url.removeprefix("http://")
        labels = {"namespace": ns, "service": NAME}
        groups = [rule_group(NAME, ns, parse_spec(autoscaled_spec(mode)), WINDOW)]
        with running_operator(
            tmp_path, kubeconfig=cluster.operator_kubeconfig, env={"KUBETTS_OPERATOR_P99_WINDOW": WINDOW}
        ) as op:
            if mode == "alerts":
                with (
                    alertmanager(tmp_path, op.webhook_url) as am,
                    prometheus(tmp_path, target, labels, groups, am) as prom,
                ):
                    drive(cluster, ns, service, prom, autoscaled_spec(mode))
            else:
                with prometheus(tmp_path, target, labels, groups) as prom:
                    drive(cluster, ns, service, prom, autoscaled_spec(mode, prometheusURL=prom))


def drive(cluster, ns, service, prom, spec) -> None:
    cluster.plane.apply(tts_object(NAME, spec, ns))
    wait_for(lambda: cluster.plane.get("deployment", NAME, "-n", ns), what="the Deployment")
    assert replicas(cluster, ns) == 1
    load = Load(service.url)
    try:
        wait_for(lambda: replicas(cluster, ns) == 3, timeout=90, what="scale-out to maxReplicas under load")
        if spec["autoscaling"]["mode"] == "alerts":
            assert firing_alerts(prom), "the p99 alert should be firing"
        status = tts(cluster, NAME, ns)["status"]["autoscaler"]
        assert "scaled out" in status["lastScaleReason"]
        # The controller-manager made the pods and the fake node made them ready: the status says so.
        wait_for(
            lambda: tts(cluster, NAME, ns)["status"].get("readyReplicas") == 3, what="three ready replicas"
        )
    finally:
        load.stop()
    wait_for(lambda: replicas(cluster, ns) == 1, timeout=120, what="scale-in after the load stopped")
    status = tts(cluster, NAME, ns)["status"]["autoscaler"]
    assert "scaled in" in status["lastScaleReason"]


def test_alertmanager_driven_scaling(cluster, tmp_path):
    run_scenario(cluster, tmp_path, "alerts")


def test_poll_driven_scaling(cluster, tmp_path):
    run_scenario(cluster, tmp_path, "poll")


# -- promtool ------------------------------------------------------------------------------


def test_promtool_checks_and_unit_tests_the_p99_rule(tmp_path):
    spec = parse_spec({"autoscaling": {"p99TargetSeconds": 1.2, "for": "2m"}})
    group = rule_group(NAME, NS, spec)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    def bucket(le: str, series: str, service: str = NAME) -> dict:
        labels = f'namespace="{NS}",service="{service}",route="/v1/audio/speech",le="{le}"'
        return {"series": f"tts_request_duration_seconds_bucket{{{labels}}}", "values": series}

    # Slow: every request lands between 1 s and 2 s (p99 ~2 s); fast: all under 0.5 s.
    slow = [
        bucket("0.5", "0+0x20"),
        bucket("1.0", "0+0x20"),
        bucket("2.0", "0+60x20"),
        bucket("+Inf", "0+60x20"),
    ]
    fast = [bucket(le, "0+60x20") for le in ("0.5", "1.0", "2.0", "+Inf")]
    alert_labels = {
        "alertname": "TTSServiceP99LatencyHigh",
        "severity": "warning",
        "tts_namespace": NS,
        "tts_name": NAME,
    }
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": slow,
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "TTSServiceP99LatencyHigh", "exp_alerts": []},  # pending
                    {
                        "eval_time": "4m",
                        "alertname": "TTSServiceP99LatencyHigh",
                        "exp_alerts": [
                            {"exp_labels": alert_labels, "exp_annotations": group["rules"][0]["annotations"]}
                        ],
                    },
                ],
            },
            {
                "interval": "15s",
                "input_series": fast,
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "TTSServiceP99LatencyHigh", "exp_alerts": []}
                ],
            },
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
