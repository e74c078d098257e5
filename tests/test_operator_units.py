"""The operator's pure parts: arguments and settings, the Lease decision, rollout truth, change
detection, and a pod template that does not depend on the operator's version."""

from __future__ import annotations

import datetime

import pytest
from tts_operator import builders
from tts_operator.cli import parse_args
from tts_operator.config import OperatorConfig
from tts_operator.events import build_event
from tts_operator.leader import Step, Timing, claimed, next_step
from tts_operator.reconcile import apply_mark, desired_replicas
from tts_operator.spec import parse_spec
from tts_operator.status import Phase, Rollout, workload_status

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
TIMING = Timing(lease_duration_s=15, renew_deadline_s=10, retry_period_s=2)


def test_cli_arguments():
    args = parse_args([])
    assert args.namespace == [] and args.leader_election and args.leader_election_id == "kubetts-operator"
    args = parse_args(
        [
            "-n",
            "tts",
            "--namespace",
            "voice",
            "--no-leader-election",
            "--liveness",
            "http://0.0.0.0:8080/healthz",
        ]
    )
    assert (
        args.namespace == ["tts", "voice"] and not args.leader_election and args.liveness.endswith("/healthz")
    )
    with pytest.raises(SystemExit):
        parse_args(["--all-namespaces", "--namespace", "tts"])


def test_operator_config_from_env():
    config = OperatorConfig.from_env(
        {"KUBETTS_OPERATOR_AUTOSCALE_INTERVAL_S": "2.5", "KUBETTS_OPERATOR_MONITORING": "off"}
    )
    assert config.autoscale_interval_s == 2.5 and config.monitoring is False
    assert OperatorConfig.from_env({}) == OperatorConfig()
    with pytest.raises(ValueError, match="KUBETTS_OPERATOR_WEBHOOK_PORT"):
        OperatorConfig.from_env({"KUBETTS_OPERATOR_WEBHOOK_PORT": "eighty"})


def lease(holder: str | None, renewed: datetime.datetime, duration: int = 15) -> dict:
    return {"metadata": {"name": "l", "namespace": "n", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     "leaseDurationSeconds": duration, "leaseTransitions": 2}}  # fmt: skip


@pytest.mark.parametrize(
    ("existing", "step"),
    [
        (None, Step.ACQUIRE),  # no Lease yet
        (lease(None, NOW), Step.ACQUIRE),  # released
        (lease("me", NOW - datetime.timedelta(seconds=1)), Step.RENEW),  # ours
        (lease("other", NOW - datetime.timedelta(seconds=14)), Step.WAIT),  # another's, still valid
        (lease("other", NOW - datetime.timedelta(seconds=15)), Step.ACQUIRE),  # expired
    ],
)
def test_the_lease_decision(existing, step):
    assert next_step(existing, "me", NOW) is step


def test_taking_over_a_lease_counts_a_transition_and_keeps_the_resource_version():
    taken = claimed(lease("other", NOW), "me", NOW, TIMING, "n", "l")
    assert taken["spec"]["holderIdentity"] == "me" and taken["spec"]["leaseTransitions"] == 3
    assert taken["metadata"]["resourceVersion"] == "7"  # the write fails if someone else wrote first
    renewed = claimed(taken, "me", NOW + datetime.timedelta(seconds=2), TIMING, "n", "l")
    assert (
        renewed["spec"]["leaseTransitions"] == 3
        and renewed["spec"]["acquireTime"] == taken["spec"]["acquireTime"]
    )
    first = claimed(None, "me", NOW, TIMING, "n", "l")
    assert first["spec"]["leaseTransitions"] == 0 and first["metadata"] == {"name": "l", "namespace": "n"}
    with pytest.raises(ValueError):
        Timing(lease_duration_s=10, renew_deadline_s=10, retry_period_s=2)


def deployment(generation=2, observed=2, replicas=2, updated=2, ready=2, available=2, conditions=()):
    return {"metadata": {"generation": generation},
            "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": available, "conditions": list(conditions)}}  # fmt: skip


@pytest.mark.parametrize(
    ("dep", "desired", "phase"),
    [
        (deployment(), 2, Phase.RUNNING),
        (deployment(observed=1), 2, Phase.PENDING),  # the controller has not seen the new spec yet
        (deployment(updated=1, replicas=3), 2, Phase.PENDING),  # an old pod still runs
        (deployment(ready=1, available=1), 2, Phase.PENDING),
        (None, 1, Phase.PENDING),
        (
            deployment(
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "x" has timed out progressing.',
                    }
                ]
            ),
            2,
            Phase.DEGRADED,
        ),  # fmt: skip
        (
            deployment(
                conditions=[
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": "exceeded quota",
                    }
                ]
            ),
            2,
            Phase.DEGRADED,
        ),  # fmt: skip
    ],
)
def test_ready_only_when_the_current_generation_is_rolled_out(dep, desired, phase):
    got, conditions, _ = workload_status(Rollout.of(dep, desired), generation=5)
    assert got is phase
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert (ready["status"] == "True") is (phase is Phase.RUNNING) and ready["observedGeneration"] == 5
    if phase is Phase.DEGRADED:
        degraded = next(c for c in conditions if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] in (
            "ProgressDeadlineExceeded",
            "FailedCreate",
        )


def test_a_controllers_status_write_is_no_change_of_ours_but_a_spec_or_ownership_change_is():
    ours = {
        "manager": "kubetts-operator",
        "operation": "Apply",
        "time": "2026-12-01T12:00:00Z",
        "fieldsV1": {"f:spec": {}},
    }
    dep = {
        "kind": "Deployment",
        "metadata": {"generation": 3, "resourceVersion": "10", "managedFields": [ours]},
    }
    status_written = {**dep, "metadata": {**dep["metadata"], "resourceVersion": "11"}}
    assert apply_mark(status_written) == apply_mark(dep)
    assert apply_mark({**dep, "metadata": {**dep["metadata"], "generation": 4}}) != apply_mark(dep)
    taken_over = {**dep, "metadata": {**dep["metadata"], "managedFields": [{**ours, "fieldsV1": {}}]}}
    assert apply_mark(taken_over) != apply_mark(dep)
    service = {"kind": "Service", "metadata": {"resourceVersion": "10"}}
    assert apply_mark(service) != apply_mark({**service, "metadata": {"resourceVersion": "12"}})
    assert apply_mark(None) is None


def test_an_operator_upgrade_leaves_the_pod_template_alone(monkeypatch):
    spec = parse_spec({})
    before = builders.build_deployment("demo", "ns", spec, 1)
    monkeypatch.setattr(builders, "__version__", "9.9.9")
    after = builders.build_deployment("demo", "ns", spec, 1)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["labels"]["app.kubernetes.io/version"] == "9.9.9"  # the object says who wrote it


def test_replicas_come_from_one_source():
    manual = parse_spec({"replicas": 3})
    assert desired_replicas(manual, {"autoscaler": {"desiredReplicas": 7}}) == 3  # autoscaling off: the spec
    scaled = parse_spec({"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}})
    assert desired_replicas(scaled, None) == 1
    assert desired_replicas(scaled, {"autoscaler": {"desiredReplicas": 3}}) == 3
    assert desired_replicas(scaled, {"autoscaler": {"desiredReplicas": 9}}) == 4  # within [min, max]


def test_events_name_the_object_they_are_about():
    obj = {
        "apiVersion": "kubetts.io/v1alpha1",
        "kind": "TTSService",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "u1"},
    }
    event = build_event(obj, type="Warning", reason="ApplyFailed", message="x" * 5000)
    assert event["involvedObject"] == {
        "apiVersion": "kubetts.io/v1alpha1",
        "kind": "TTSService",
        "name": "demo",
        "namespace": "ns",
        "uid": "u1",
    }
    assert event["metadata"] == {"generateName": "demo.", "namespace": "ns"} and len(event["message"]) == 1024
