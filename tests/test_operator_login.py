"""The operator starts as users start it, on a real API server: from a kubeconfig with a client
certificate, a token or an exec plugin, with nothing but ``KUBECONFIG`` telling it where and who;
and in a pod, from the mounted service-account token, re-read when the kubelet rotates it.

Each test runs its own operator (no other one is running meanwhile) and proves it acts by
reconciling a TTSService created after it started.
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kube_cluster import OPERATOR_ACCOUNT, RELEASE_NAMESPACE, tts
from operator_harness import OPERATOR, running_operator, tts_object, wait_for


def reconciles(cluster, ns: str, name: str) -> None:
    cluster.plane.apply(tts_object(name, {}, ns))
    wait_for(lambda: cluster.plane.get("deployment", name, "-n", ns), what=f"{ns}/{name} to be reconciled")
    wait_for(
        lambda: ((tts(cluster, name, ns) or {}).get("status") or {}).get("phase") == "Running", what="Running"
    )


def test_only_kubeconfig_set_as_a_newcomer_would(cluster, tmp_path):
    """No server, token or credential settings of ours: KUBECONFIG alone (plus where the webhook
    may listen, because a test's servers listen on 127.0.0.1 only)."""
    ns = cluster.namespace("login")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "KUBECONFIG": str(cluster.operator_kubeconfig),
        "KUBETTS_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
        "KUBETTS_OPERATOR_WEBHOOK_PORT": "0",
    }
    log = open(tmp_path / "operator.log", "w")
    process = subprocess.Popen([OPERATOR], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        cluster.plane.apply(tts_object("newcomer", {}, ns))
        wait_for(
            lambda: cluster.plane.get("deployment", "newcomer", "-n", ns), timeout=60, what="the Deployment"
        )
    finally:
        process.terminate()
        code = process.wait(timeout=30)
        log.close()
    output = (tmp_path / "operator.log").read_text()
    assert code == 0, output[-4000:]
    assert "TypeError" not in output and "Traceback" not in output, output[-4000:]


def rejected(plane, token: str) -> bool:
    """Whether the API server answers 401 to ``token`` now."""
    context = ssl.create_default_context(cafile=str(plane.ca))
    request = urllib.request.Request(plane.server + "/api", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=5):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 401


def _exec_plugin(tmp_path: Path, token: str) -> dict:
    """An exec credential plugin, as cloud CLIs are (it prints an ExecCredential)."""
    plugin = tmp_path / "credential-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token},
    }
    plugin.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({credential!r}))\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }


@pytest.mark.parametrize("credential", ["client-certificate", "token", "exec-plugin"])
def test_every_kind_of_kubeconfig_credential(cluster, tmp_path, credential):
    ns = cluster.namespace("login")
    if credential == "client-certificate":  # the admin certificate, as kind and minikube kubeconfigs carry
        pair = cluster.plane.certificates["admin"]
        user = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
    else:
        token = cluster.plane.service_account_token(RELEASE_NAMESPACE, OPERATOR_ACCOUNT)
        user = {"token": token} if credential == "token" else _exec_plugin(tmp_path, token)
    kubeconfig = cluster.user_kubeconfig(tmp_path / "kubeconfig", user)
    with running_operator(tmp_path, kubeconfig=kubeconfig):
        reconciles(cluster, ns, f"via-{credential}")


def test_in_a_pod_the_mounted_token_is_used_and_rereads_as_it_rotates(cluster, tmp_path):
    """What a pod has: the token, CA and namespace mounted, and the service host and port in its env.
    The kubelet replaces the token file before the old token expires; here the old token is also
    revoked (it is bound to a Secret that is deleted), so only a re-read token keeps it working."""
    plane = cluster.plane
    ns = cluster.namespace("login")
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "ca.crt").write_bytes(plane.ca.read_bytes())
    (mount / "namespace").write_text(RELEASE_NAMESPACE)

    def bound_token(secret: str) -> str:
        plane.kubectl("create", "secret", "generic", secret, "-n", RELEASE_NAMESPACE)
        return plane.service_account_token(RELEASE_NAMESPACE, OPERATOR_ACCOUNT, bound_secret=secret)

    old_token = bound_token("token-one")
    (mount / "token").write_text(old_token)
    host, port = plane.server.removeprefix("https://").rsplit(":", 1)
    env = {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBETTS_OPERATOR_SERVICE_ACCOUNT_DIR": str(mount),
    }
    with running_operator(tmp_path, kubeconfig=None, env=env) as operator:
        reconciles(cluster, ns, "before-rotation")
        # The kubelet rotates the token (atomically, as it writes projected volumes) ...
        fresh = mount / "token.new"
        fresh.write_text(bound_token("token-two"))
        fresh.replace(mount / "token")
        # ... and the old one stops working (once the API server's authentication cache lets go of it).
        plane.kubectl("delete", "secret", "token-one", "-n", RELEASE_NAMESPACE)
        wait_for(lambda: rejected(plane, old_token), what="the API server to reject the revoked token")
        reconciles(cluster, ns, "after-rotation")
        assert operator.leading
    # The revoked token was refused and the rotated one read again -- no restart, no other identity.
    assert "answered 401" in operator.log() and "loading the credentials again" in operator.log()
    assert "cannot be used" not in operator.log() and "LoginError" not in operator.log()
