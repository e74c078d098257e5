"""The autoscaling signal's PromQL, evaluated by the real ``promtool test rules``.

Every case feeds synthetic scrapes of the service's own metrics (with the labels a ServiceMonitor
gives them) and asserts what the operator's rule group computes from them: the ratio, the demand,
which alert fires, and the labels and annotations the alert carries to Alertmanager -- including
``namespace``, which a namespaced AlertmanagerConfig matches on.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml
from monitoring import PROMTOOL
from tts_operator.promql import (
    DEMAND_RECORD,
    HIGH_ALERT,
    LOW_ALERT,
    RATIO_RECORD,
    rule_group,
)
from tts_operator.spec import parse_spec

pytestmark = pytest.mark.skipif(
    not PROMTOOL and not os.environ.get("CI"),
    reason="promtool not installed (./dev test installs it as root)",
)

NS, NAME = "voice", "demo"
STEPS = 40  # samples at 15 s: ten minutes
ROUTE = "/v1/audio/speech"


def _series(metric: str, values: str, pod: str, **labels: str) -> dict[str, str]:
    all_labels = {"namespace": NS, "service": NAME, "pod": pod, **labels}
    text = ",".join(f'{k}="{v}"' for k, v in all_labels.items())
    return {"series": f"{metric}{{{text}}}", "values": values}


def _histogram(metric: str, pod: str, seconds: float, per_step: int, **labels: str) -> list[dict[str, str]]:
    """Every observation lands in the bucket ending at ``seconds``; ``per_step`` per 15 s."""
    out = []
    for le in ("0.01", "0.5", "1", "2", "4", "+Inf"):
        count = per_step if float(le) >= seconds else 0
        out.append(_series(f"{metric}_bucket", f"0+{count}x{STEPS}", pod, le=le, **labels))
    out.append(_series(f"{metric}_count", f"0+{per_step}x{STEPS}", pod, **labels))
    return out


def pod(
    name: str,
    *,
    wait_s: float = 0.01,
    synthesis_s: float = 0.5,
    served: int = 60,
    busy: float = 0,
    refused: int = 0,
) -> list[dict[str, str]]:
    """One pod's scrapes: ``served`` requests per 15 s waiting ``wait_s`` and taking ``synthesis_s``,
    the engine busy ``busy`` of the time, ``refused`` queue-full rejections per 15 s."""
    return [
        _series("tts_build_info", f"1x{STEPS}", name, engine="espeak", version="test"),
        *_histogram("tts_queue_wait_seconds", name, wait_s, served),
        *_histogram("tts_synthesis_duration_seconds", name, synthesis_s, served, route=ROUTE),
        _series("tts_inference_duration_seconds_sum", f"0+{busy * 15:g}x{STEPS}", name),
        _series("tts_rejected_total", f"0+{refused}x{STEPS}", name, reason="queue_full"),
    ]


def recorded(ratio: float | None, pods: int = 1) -> list[dict[str, Any]]:
    """promtool expectations for the two recorded series, to 4 decimals (none at all when ``ratio``
    is None)."""
    labels = f'{{namespace="{NS}",service="{NAME}"}}'
    cases = []
    for record, value in ((RATIO_RECORD, ratio), (DEMAND_RECORD, None if ratio is None else ratio * pods)):
        samples = [] if value is None else [{"labels": labels, "value": round(value, 4)}]
        cases.append({"expr": f"round({record}, 0.0001)", "eval_time": "5m", "exp_samples": samples})
    return cases


def promtool_test(tmp_path, spec: dict[str, Any], cases: list[dict[str, Any]]) -> dict[str, Any]:
    group = rule_group(NAME, NS, parse_spec(spec))
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", **case} for case in cases],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return group


SPEC = {"autoscaling": {"enabled": True, "for": "2m"}}  # queueWait, 0.5 s target, 80 % utilization
LATENCY_SPEC = {"autoscaling": {"enabled": True, "for": "2m", "signal": "latency", "p99TargetSeconds": 1.2}}


def test_the_ratio_is_the_largest_of_its_terms(tmp_path):
    promtool_test(
        tmp_path,
        SPEC,
        [
            # Short waits, engine busy 40 %: utilization 0.4 / 0.8.
            {"input_series": pod("a", busy=0.4), "promql_expr_test": recorded(0.5)},
            # Every request waits 1-2 s for the engine (p99 1.99 s > 0.5 s): one replica more (2 / 1),
            # over the engine's 1.0 / 0.8.
            {"input_series": pod("a", wait_s=2, busy=1.0), "promql_expr_test": recorded(2.0)},
            # The same with three pods: 4 / 3, not 1.99 / 0.5 = 3.98 times as many.
            {
                "input_series": pod("a", wait_s=2, busy=1.0)
                + pod("b", wait_s=2, busy=1.0)
                + pod("c", busy=1.0),
                "promql_expr_test": recorded(4 / 3, pods=3),
            },
            # As many refused as served: demand is twice what was served.
            {"input_series": pod("a", busy=0.5, refused=60), "promql_expr_test": recorded(2.0)},
            # Two pods, busy 40 % and 80 %: utilization is their mean; demand is for both pods.
            {
                "input_series": pod("a", busy=0.4) + pod("b", busy=0.8),
                "promql_expr_test": recorded(0.75, pods=2),
            },
            # Scraped but idle: no request in the window (the wait's p99 is NaN and left out): 0.
            {"input_series": pod("a", served=0), "promql_expr_test": recorded(0.0)},
            # Not scraped: another TTSService's pods only -- no value at all (blind, not idle).
            {
                "input_series": [
                    {**s, "series": s["series"].replace(f'service="{NAME}"', 'service="other"')}
                    for s in pod("a", busy=0.9)
                ],
                "promql_expr_test": recorded(None),
            },
        ],
    )


def test_queue_wait_ignores_input_length_and_latency_does_not(tmp_path):
    # Long inputs: every synthesis takes 2-4 s, but nobody waits for the engine (busy 40 %).
    series = pod("a", synthesis_s=4, busy=0.4)
    promtool_test(tmp_path, SPEC, [{"input_series": series, "promql_expr_test": recorded(0.5)}])
    # The latency signal reads the same series as a 3.98 s p99, over 1.2 s: one replica more.
    promtool_test(tmp_path, LATENCY_SPEC, [{"input_series": series, "promql_expr_test": recorded(2.0)}])


def fires(rule: dict[str, Any], eval_time: str, labels: dict[str, str], value: str) -> dict[str, Any]:
    """promtool expectation: ``rule``'s alert firing at ``eval_time`` with exactly ``labels`` (plus
    its name) and its annotations rendered with ``value``."""
    annotations = {k: v.replace("{{ $value }}", value) for k, v in rule["annotations"].items()}
    return {
        "eval_time": eval_time,
        "alertname": rule["alert"],
        "exp_alerts": [
            {"exp_labels": {**labels, "alertname": rule["alert"]}, "exp_annotations": annotations}
        ],
    }


def test_alerts_keep_the_namespace_and_fire_only_after_for(tmp_path):
    group = rule_group(NAME, NS, parse_spec(SPEC))
    high, low = (next(r for r in group["rules"] if r.get("alert") == a) for a in (HIGH_ALERT, LOW_ALERT))
    labels = {"namespace": NS, "severity": "warning", "tts_namespace": NS, "tts_name": NAME}
    promtool_test(
        tmp_path,
        SPEC,
        [
            {
                "input_series": pod("a", wait_s=2, busy=1.0),
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": HIGH_ALERT, "exp_alerts": []},  # still pending
                    fires(high, "5m", labels, "2"),
                    {"eval_time": "5m", "alertname": LOW_ALERT, "exp_alerts": []},
                ],
            },
            {
                # Two idle pods: one fewer would still be far below target.
                "input_series": pod("a", served=0) + pod("b", served=0),
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": HIGH_ALERT, "exp_alerts": []},
                    fires(low, "5m", labels, "0"),
                ],
            },
            {
                # Two pods at ratio 0.5 (busy 40 %): one pod would be at 1.0, over 0.9 -- no Low alert;
                # within the tolerance band of neither alert, nothing fires.
                "input_series": pod("a", busy=0.4) + pod("b", busy=0.4),
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": LOW_ALERT, "exp_alerts": []},
                    {"eval_time": "5m", "alertname": HIGH_ALERT, "exp_alerts": []},
                ],
            },
            {
                # A single idle pod: there is no fewer to go to.
                "input_series": pod("a", served=0),
                "alert_rule_test": [{"eval_time": "5m", "alertname": LOW_ALERT, "exp_alerts": []}],
            },
        ],
    )


def test_the_write_ups_rule_stays_expressible(tmp_path):
    """p99 > 1.2 s for 2 minutes: signal latency, p99TargetSeconds 1.2, for 2m."""
    group = rule_group(NAME, NS, parse_spec(LATENCY_SPEC))
    high = next(r for r in group["rules"] if r.get("alert") == HIGH_ALERT)
    assert high["for"] == "2m"
    labels = {"namespace": NS, "severity": "warning", "tts_namespace": NS, "tts_name": NAME}
    promtool_test(
        tmp_path,
        LATENCY_SPEC,
        [
            {
                # p99 1.99 s > 1.2 s from the start; nothing waits and the engine is half busy.
                "input_series": pod("a", synthesis_s=2, busy=0.4),
                "alert_rule_test": [
                    {"eval_time": "1m45s", "alertname": HIGH_ALERT, "exp_alerts": []},
                    fires(high, "3m", labels, "2"),
                ],
            },
            {
                # p99 0.99 s: under 1.2 s, no alert.
                "input_series": pod("a", synthesis_s=1, busy=0.4),
                "alert_rule_test": [{"eval_time": "5m", "alertname": HIGH_ALERT, "exp_alerts": []}],
            },
        ],
    )
