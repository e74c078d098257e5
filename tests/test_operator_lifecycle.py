"""The operator's life on a real control plane: one leader among replicas, upgrades that restart no
TTS pod, and an uninstall that completes.
"""

from __future__ import annotations

import datetime
import sys

from kube_cluster import RELEASE_NAMESPACE, tts
from operator_harness import OperatorProcess, running_operator, tts_object, wait_for
from tts_operator.leader import parse_time

LEASE = ("lease", "kubetts-operator", "-n", RELEASE_NAMESPACE)
LEASE_DURATION_S = 4.0  # operator_harness.FAST


def lease_spec(cluster) -> dict:
    return (cluster.plane.get(*LEASE) or {}).get("spec") or {}


def reconciled(cluster, ns, name) -> None:
    cluster.plane.apply(tts_object(name, {}, ns))
    wait_for(lambda: cluster.plane.get("deployment", name, "-n", ns), timeout=60, what=f"{name} reconciled")


def test_of_two_replicas_exactly_one_acts_and_a_dead_leader_is_replaced(cluster, tmp_path):
    ns = cluster.namespace("leader")
    started: list[OperatorProcess] = []

    def replica(name: str) -> OperatorProcess:
        started.append(OperatorProcess(tmp_path, kubeconfig=cluster.operator_kubeconfig, name=name))
        return started[-1]

    try:
        first = replica("first").wait_leading()
        second = replica("second")
        wait_for(lambda: "waiting for the Lease" in second.log(), what="the second replica to wait")
        reconciled(cluster, ns, "while-first-leads")
        assert first.leading and not second.leading
        assert "Creation is processed" not in second.log()  # the follower handled nothing
        held = lease_spec(cluster)
        assert held["holderIdentity"] and held["holderIdentity"] in first.log()

        # The leader dies without a word (a crashed or evicted pod): the Lease must expire first.
        last_renewed = parse_time(lease_spec(cluster)["renewTime"])
        first.kill()
        second.wait_leading(timeout=60)
        taken = lease_spec(cluster)
        assert taken["holderIdentity"] != held["holderIdentity"]
        assert taken["leaseTransitions"] == held.get("leaseTransitions", 0) + 1
        # Never two leaders: the new one took over only after the old one's lease ran out.
        acquired = parse_time(taken["acquireTime"])
        assert acquired >= last_renewed + datetime.timedelta(seconds=LEASE_DURATION_S)
        print(
            f"handover after a crash: {(acquired - last_renewed).total_seconds():.1f}s after the last renewal"
        )
        reconciled(cluster, ns, "after-the-crash")

        # A clean stop hands the Lease back: the next replica does not wait for it to expire.
        third = replica("third")
        wait_for(lambda: "waiting for the Lease" in third.log(), what="the third replica to wait")
        assert second.stop() == 0
        stopped = datetime.datetime.now(datetime.UTC)
        third.wait_leading(timeout=60)
        handed = parse_time(lease_spec(cluster)["acquireTime"]) - stopped
        print(f"handover after a clean stop: {handed.total_seconds():.1f}s after the old leader exited")
        assert handed < datetime.timedelta(seconds=LEASE_DURATION_S)  # without the release: at least that
        reconciled(cluster, ns, "after-the-handover")
    finally:
        for operator in started:
            if operator.process.poll() is None:
                operator.stop()


def test_an_operator_upgrade_does_not_restart_tts_pods(cluster, tmp_path):
    ns = cluster.namespace("upgrade")
    with running_operator(tmp_path, kubeconfig=cluster.operator_kubeconfig):
        cluster.plane.apply(tts_object("demo", {}, ns))
        wait_for(
            lambda: ((tts(cluster, "demo", ns) or {}).get("status") or {}).get("phase") == "Running",
            what="Running",
        )
    before = cluster.plane.get("deployment", "demo", "-n", ns)
    pods = {p["metadata"]["name"] for p in cluster.plane.get("pods", "-n", ns)["items"]}
    # The next operator version takes over the same objects.
    upgraded = (
        sys.executable,
        "-c",
        "import tts_operator; tts_operator.__version__ = '9.9.9'; from tts_operator.cli import main; main()",
    )
    with running_operator(tmp_path, kubeconfig=cluster.operator_kubeconfig, command=upgraded):
        wait_for(
            lambda: cluster.plane.get("deployment", "demo", "-n", ns)["metadata"]["labels"]["app.kubernetes.io/version"] == "9.9.9",
            what="the new version's labels on the Deployment",
        )  # fmt: skip
    after = cluster.plane.get("deployment", "demo", "-n", ns)
    assert (
        after["metadata"]["generation"] == before["metadata"]["generation"]
    )  # the pod template did not change
    assert after["spec"]["template"] == before["spec"]["template"]
    assert {p["metadata"]["name"] for p in cluster.plane.get("pods", "-n", ns)["items"]} == pods


def test_uninstall_then_deleting_the_crd_and_namespaces_completes(cluster, tmp_path):
    """The README's uninstall: delete the TTSServices (the garbage collector takes their children),
    helm uninstall, delete the CRD, delete the namespaces -- each step completes.  A TTSService left
    behind when the CRD goes is deleted with it (no finalizer needs the operator); its children,
    whose owner's kind no longer exists, are then removed with their namespace."""
    tidy, left = cluster.namespace("uninstall"), cluster.namespace("leftover")
    with running_operator(tmp_path, kubeconfig=cluster.operator_kubeconfig):
        for ns in (tidy, left):
            cluster.plane.apply(tts_object("demo", {}, ns))
            wait_for(lambda ns=ns: cluster.plane.get("deployment", "demo", "-n", ns), what="the Deployment")
    assert not tts(cluster, "demo", left)["metadata"].get(
        "finalizers"
    )  # nothing that would need the operator
    cluster.plane.kubectl("delete", "tts", "--all", "-n", tidy, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: cluster.plane.get("deployment", "demo", "-n", tidy) is None,
        what="the children to be collected",
    )
    cluster.helm("uninstall", "kubetts", "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "60s")
    # Helm keeps CRDs from crds/; deleting it deletes the TTSService left behind, operator or not.
    cluster.plane.kubectl("delete", "crd", "ttsservices.kubetts.io", "--wait=true", "--timeout=60s")
    assert cluster.plane.get("crd", "ttsservices.kubetts.io") is None
    for namespace in (tidy, left, RELEASE_NAMESPACE):
        cluster.plane.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s")
        assert cluster.plane.get("namespace", namespace) is None
    # Installed again for whatever runs next.
    cluster.install_chart()
    assert cluster.plane.get("crd", "ttsservices.kubetts.io") is not None
