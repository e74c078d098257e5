"""End to end: a real service, real Prometheus (and Alertmanager), the real operator.

The espeak service runs as a process on 127.0.0.1; Prometheus scrapes it every second
with the labels a ServiceMonitor would give it (namespace, service) and evaluates the
operator's own p99 rule (built by the same function as the PrometheusRule, with a
10 s window instead of 1 m so the test takes seconds).  Long texts from a few
concurrent clients push p99 far above the target; the operator, reconciling against
the API double, must raise the Deployment's replicas, and bring them back down after
the load stops and the stabilization window passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.request

import pytest
import yaml
from kube_api import RunningAPI
from monitoring import ALERTMANAGER, PROMETHEUS, PROMTOOL, alertmanager, firing_alerts, prometheus
from operator_harness import DEPLOYMENTS, TTS, running_operator, tts_object, wait_for
from service_process import running_service
from tts_operator.builders import rule_group
from tts_operator.spec import parse_spec

# Skipped only outside CI: in CI (./dev test installs them) a missing binary is a failure.
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS and ALERTMANAGER and PROMTOOL) and not os.environ.get("CI"),
    reason="Prometheus/Alertmanager not installed (./dev test installs them as root)",
)

NS, NAME, WINDOW = "default", "demo", "10s"
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


def replicas(api) -> int:
    return api.get(f"{DEPLOYMENTS.format(ns=NS)}/{NAME}")["spec"]["replicas"]


def run_scenario(tmp_path, mode: str) -> None:
    api = RunningAPI()
    try:
        with running_service(TTS_MAX_BATCH_SIZE="1", TTS_MAX_WAIT_MS="0", TTS_MAX_QUEUE_SIZE="64") as service:
            target = service.url.removeprefix("http://")
            labels = {"namespace": NS, "service": NAME}
            groups = [rule_group(NAME, NS, parse_spec(autoscaled_spec(mode)), WINDOW)]
            with running_operator(api, KUBETTS_OPERATOR_P99_WINDOW=WINDOW) as op:
                if mode == "alerts":
                    with (
                        alertmanager(tmp_path, op.webhook_url) as am,
                        prometheus(tmp_path, target, labels, groups, am) as prom,
                    ):
                        drive(api, service, prom, autoscaled_spec(mode))
                else:
                    with prometheus(tmp_path, target, labels, groups) as prom:
                        drive(api, service, prom, autoscaled_spec(mode, prometheusURL=prom))
    finally:
        api.stop()


def drive(api, service, prom, spec) -> None:
    api.create(TTS.format(ns=NS), tts_object(NAME, spec))
    wait_for(lambda: api.get(f"{DEPLOYMENTS.format(ns=NS)}/{NAME}"), what="the Deployment")
    assert replicas(api) == 1
    load = Load(service.url)
    try:
        wait_for(lambda: replicas(api) == 3, timeout=90, what="scale-out to maxReplicas under load")
        if spec["autoscaling"]["mode"] == "alerts":
            assert firing_alerts(prom), "the p99 alert should be firing"
        status = api.get(f"{TTS.format(ns=NS)}/{NAME}")["status"]["autoscaler"]
        assert "scaled out" in status["lastScaleReason"]
    finally:
        load.stop()
    wait_for(lambda: replicas(api) == 1, timeout=120, what="scale-in after the load stopped")
    status = api.get(f"{TTS.format(ns=NS)}/{NAME}")["status"]["autoscaler"]
    assert "scaled in" in status["lastScaleReason"]


def test_alertmanager_driven_scaling(tmp_path):
    run_scenario(tmp_path, "alerts")


def test_poll_driven_scaling(tmp_path):
    run_scenario(tmp_path, "poll")


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
