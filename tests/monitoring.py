"""Real Prometheus and Alertmanager (Debian packages) on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from operator_harness import wait_for
from service_process import free_port

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
PROMTOOL = shutil.which("promtool")


class Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _serving(args: list[str], log: Path, port: int, what: str) -> Iterator[str]:
    """Start a server process, wait for its /-/ready, stop it afterwards."""
    process = Process(args, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ok(url + "/-/ready"), timeout=30, what=what)
        yield url
    finally:
        process.stop()


@contextlib.contextmanager
def alertmanager(tmp: Path, webhook_url: str, token: str | None = None) -> Iterator[str]:
    """Alertmanager routing every alert to ``webhook_url``, with ``token`` as its bearer token (as the
    chart's AlertmanagerConfig does); grouped and repeated within seconds."""
    port = free_port()
    webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
    if token:
        webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
    config = {
        "route": {
            "receiver": "kubetts",
            "group_by": ["alertname", "tts_namespace", "tts_name"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "5s",
        },
        "receivers": [{"name": "kubetts", "webhook_configs": [webhook]}],
    }
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    args = [
        ALERTMANAGER,
        f"--config.file={tmp / 'alertmanager.yml'}",
        f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # otherwise it listens on 0.0.0.0:9094 for gossip
    ]
    with _serving(args, tmp / "alertmanager.log", port, "Alertmanager") as url:
        yield url


@contextlib.contextmanager
def prometheus(
    tmp: Path,
    targets: list[dict[str, Any]] | Path,
    rule_groups: list[dict[str, Any]],
    alertmanager_url: str | None = None,
) -> Iterator[str]:
    """Prometheus scraping every second and evaluating ``rule_groups`` every second.

    ``targets``: static target groups (``[{"targets": [...], "labels": {...}}]``), or the path of a
    file_sd JSON file the test rewrites as its targets change (Prometheus re-reads it on change).
    """
    port = free_port()
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}))
    scrape: dict[str, Any] = {"job_name": "tts"}
    if isinstance(targets, Path):
        scrape["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "1s"}]
    else:
        scrape["static_configs"] = targets
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp / "rules.yml")],
        "scrape_configs": [scrape],
    }
    if alertmanager_url:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}]
        }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    args = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with _serving(args, tmp / "prometheus.log", port, "Prometheus") as url:
        yield url


def alerts(prometheus_url: str) -> list[dict[str, Any]]:
    """Prometheus' active alerts (pending and firing), each with its ``activeAt``."""
    with urllib.request.urlopen(prometheus_url + "/api/v1/alerts", timeout=5) as resp:
        return json.loads(resp.read())["data"]["alerts"]


def firing_alerts(prometheus_url: str) -> list[dict[str, Any]]:
    return [a for a in alerts(prometheus_url) if a["state"] == "firing"]


def query(prometheus_url: str, expression: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    url = prometheus_url + "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())["data"]["result"]
