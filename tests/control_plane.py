"""A real Kubernetes control plane on 127.0.0.1 for the tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, and kwok running fake nodes.

The binaries are built from their Go modules by ``scripts/install-control-plane.sh`` (``./dev test``
runs it) into ``.cache/control-plane/bin``.  Everything here is the real thing, configured as a
small cluster is: a CA and certificates (an admin client certificate, as kind and minikube
kubeconfigs carry), RBAC on (``--authorization-mode=Node,RBAC``), service-account tokens signed
by the API server, admission plugins including ``OwnerReferencesPermissionEnforcement`` (as
OpenShift enables it), an audit log of every request (the operator's RBAC is checked against what
it really used), and two kwok nodes -- one CPU node, one GPU node with ``nvidia.com/gpu`` capacity
and the usual ``nvidia.com/gpu:NoSchedule`` taint -- on which scheduled pods become Running and Ready.

Every server listens on 127.0.0.1 on a free port, start-up is bounded, logs are kept in the work
directory, and :meth:`ControlPlane.stop` ends every process.

Run by hand, it starts a cluster and prints its kubeconfig until Ctrl-C::

    .venv/bin/python tests/control_plane.py
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(os.environ.get("KUBETTS_CONTROL_PLANE_BIN", ROOT / ".cache" / "control-plane" / "bin"))
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
KWOK_STAGES = "kwok-stages.yaml"  # written next to the binaries by the install script
SERVICE_CIDR = "10.96.0.0/16"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,"
    "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,NodeRestriction,"
    "OwnerReferencesPermissionEnforcement"
)
GPU_RESOURCE = "nvidia.com/gpu"
CPU_NODE = "kwok-cpu"
GPU_NODE = "kwok-gpu"
START_TIMEOUT_S = 120.0


MONITORING_CRDS = BIN_DIR / "crds"  # prometheus-operator's, written by the install script


def missing_binaries() -> list[str]:
    return [name for name in (*BINARIES, KWOK_STAGES, "crds") if not (BIN_DIR / name).exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _write_certificates(directory: Path) -> dict[str, KeyPair | Path]:
    """A CA, the API server's serving certificate, client certificates, the SA signing key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=2)

    def name(common: str, org: str | None = None) -> x509.Name:
        parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
        if org:
            parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(parts)

    def save(stem: str, key, cert) -> KeyPair:
        key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return KeyPair(cert_path, key_path)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kubetts-test-ca"))
        .issuer_name(name("kubetts-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca = save("ca", ca_key, ca_cert)

    def issue(stem: str, subject: x509.Name, *, server: bool = False, sans: list | None = None) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return save(stem, key, builder.sign(ca_key, hashes.SHA256()))

    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    serving = issue(
        "apiserver",
        name("kube-apiserver"),
        server=True,
        sans=[x509.DNSName(d) for d in dns]
        + [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private, sa_public = directory / "sa.key", directory / "sa.pub"
    sa_private.write_bytes(
        sa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return {
        "ca": ca.cert,
        "ca_key": ca.key,
        "apiserver": serving,
        "admin": issue("admin", name("kubetts-admin", "system:masters")),
        "controller-manager": issue("controller-manager", name("system:kube-controller-manager")),
        "scheduler": issue("scheduler", name("system:kube-scheduler")),
        "kwok": issue("kwok", name("kwok", "system:masters")),
        "sa_private": sa_private,
        "sa_public": sa_public,
    }


def kubeconfig(server: str, ca: Path, *, user: dict[str, Any], name: str = "kubetts-test") -> dict[str, Any]:
    """A kubeconfig document for ``server`` with the given ``user`` entry (cert, token or exec)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


# -- processes ----------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    workdir: Path
    server: str
    certificates: dict[str, Any]
    admin_kubeconfig: Path
    audit_log: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.certificates["ca"]

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """The environment a user's shell would have: KUBECONFIG set, kubectl on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.admin_kubeconfig),
            "PATH": f"{BIN_DIR}:{os.environ['PATH']}",
        }

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(BIN_DIR / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def get(self, *args: str, kubeconfig: Path | None = None) -> dict[str, Any] | None:
        """``kubectl get ... -o json``, or None when it does not exist."""
        result = self.kubectl("get", *args, "-o", "json", check=False, kubeconfig=kubeconfig)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {' '.join(args)}: {result.stderr}")
        return json.loads(result.stdout)

    def apply(self, document: dict[str, Any] | str, *extra: str) -> str:
        text = document if isinstance(document, str) else json.dumps(document)
        return self.kubectl("apply", *extra, "-f", "-", input=text).stdout

    def raw(
        self,
        path: str,
        method: str = "GET",
        data: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        """One HTTP request to the API server as the admin; the body of the answer."""
        context = ssl.create_default_context(cafile=str(self.ca))
        pair = self.certificates["admin"]
        context.load_cert_chain(str(pair.cert), str(pair.key))
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return response.read()

    def api(
        self, path: str, method: str = "GET", body: Any = None, content_type: str = "application/json"
    ) -> Any:
        """A JSON API call as the admin (for what kubectl has no verb for)."""
        text = self.raw(path, method, None if body is None else json.dumps(body).encode(), content_type)
        return json.loads(text) if text else None

    def service_account_token(
        self, namespace: str, name: str, *, seconds: int = 3600, bound_secret: str | None = None
    ) -> str:
        """A TokenRequest token for a ServiceAccount (optionally bound to a Secret, which revokes it when deleted)."""
        spec: dict[str, Any] = {"audiences": [], "expirationSeconds": seconds}
        if bound_secret:
            secret = self.get("secret", bound_secret, "-n", namespace)
            assert secret is not None, bound_secret
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "name": bound_secret,
                "uid": secret["metadata"]["uid"],
            }
        result = self.api(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            "POST",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
        )
        return result["status"]["token"]

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """Audit events of requests made by ``user`` (e.g. system:serviceaccount:NS:NAME): one per
        request -- its completion, or for a watch (which runs on) its start."""
        events = []
        if self.audit_log.exists():
            for line in self.audit_log.read_text().splitlines():
                event = json.loads(line)
                if event.get("user", {}).get("username") != user:
                    continue
                started_watch = event.get("stage") == "ResponseStarted" and event.get("verb") == "watch"
                if event.get("stage") == "ResponseComplete" and event.get("verb") != "watch" or started_watch:
                    events.append(event)
        return events

    def log(self, component: str) -> str:
        path = self.workdir / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _wait(what: str, check: Callable[[], bool], plane: ControlPlane, deadline: float) -> None:
    while time.monotonic() < deadline:
        for name, process in plane.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} while waiting for {what}:\n{plane.log(name)[-4000:]}"
                )
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError, AssertionError):
            pass
        time.sleep(0.2)  # polling a condition, bounded by the deadline
    raise TimeoutError(f"the control plane did not get {what} within {START_TIMEOUT_S:g}s")


def _start(plane: ControlPlane, name: str, args: list[str]) -> None:
    log = open(plane.workdir / f"{name}.log", "w")  # noqa: SIM115 -- closed with the process
    plane.processes[name] = subprocess.Popen(
        [str(BIN_DIR / name), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=plane.workdir,
        start_new_session=True,
    )


AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


def node_manifest(name: str, *, gpus: int = 0) -> dict[str, Any]:
    capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }
    if gpus:
        node["metadata"]["labels"]["nvidia.com/gpu.present"] = "true"
        node["spec"]["taints"] = [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}]
    return node


def start_control_plane(workdir: Path) -> ControlPlane:
    """Start everything and wait until two nodes are Ready, the default ServiceAccount exists and
    prometheus-operator's CRDs are established."""
    workdir.mkdir(parents=True, exist_ok=True)
    certs = _write_certificates(workdir)
    ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    admin = write_kubeconfig(
        workdir / "admin.kubeconfig",
        kubeconfig(
            server,
            certs["ca"],
            user={"client-certificate": str(certs["admin"].cert), "client-key": str(certs["admin"].key)},
        ),
    )
    component_configs = {}
    for component in ("controller-manager", "scheduler", "kwok"):
        pair = certs[component]
        component_configs[component] = write_kubeconfig(
            workdir / f"{component}.kubeconfig",
            kubeconfig(
                server, certs["ca"], user={"client-certificate": str(pair.cert), "client-key": str(pair.key)}
            ),
        )
    (workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    plane = ControlPlane(workdir, server, certs, admin, workdir / "audit.log")
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        _start(plane, "etcd", [
            "--name=default", f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ])  # fmt: skip
        _wait(
            "etcd healthy",
            lambda: b'"true"' in urllib.request.urlopen(etcd_url + "/health", timeout=2).read(),
            plane,
            deadline,
        )
        _start(plane, "kube-apiserver", [
            f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}", f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--tls-cert-file={certs['apiserver'].cert}", f"--tls-private-key-file={certs['apiserver'].key}",
            f"--client-ca-file={certs['ca']}", "--authorization-mode=Node,RBAC",
            f"--service-account-key-file={certs['sa_public']}",
            f"--service-account-signing-key-file={certs['sa_private']}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}", f"--enable-admission-plugins={ADMISSION_PLUGINS}",
            "--allow-privileged=false", "--profiling=false", "--endpoint-reconciler-type=none",
            f"--audit-policy-file={workdir / 'audit-policy.yaml'}", f"--audit-log-path={plane.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
        ])  # fmt: skip
        _wait("the API server ready", lambda: plane.raw("/readyz") == b"ok", plane, deadline)
        _start(plane, "kube-controller-manager", [
            f"--kubeconfig={component_configs['controller-manager']}",
            f"--authentication-kubeconfig={component_configs['controller-manager']}",
            f"--authorization-kubeconfig={component_configs['controller-manager']}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['kcm']}", "--leader-elect=false",
            f"--service-account-private-key-file={certs['sa_private']}", f"--root-ca-file={certs['ca']}",
            "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cluster-signing-cert-file={certs['ca']}", f"--cluster-signing-key-file={certs['ca_key']}",
            "--controllers=*,-nodeipam", "--concurrent-deployment-syncs=5", "--concurrent-gc-syncs=5",
            "--horizontal-pod-autoscaler-sync-period=2s",  # HPAs (users' and provider hpa) act in seconds
        ])  # fmt: skip
        _start(plane, "kube-scheduler", [
            f"--kubeconfig={component_configs['scheduler']}",
            f"--authentication-kubeconfig={component_configs['scheduler']}",
            f"--authorization-kubeconfig={component_configs['scheduler']}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}", "--leader-elect=false",
        ])  # fmt: skip
        _start(plane, "kwok", [
            f"--kubeconfig={component_configs['kwok']}", f"--config={BIN_DIR / KWOK_STAGES}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{ports['kwok']}", "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16", "--node-ip=127.0.0.1",
        ])  # fmt: skip
        for node in (node_manifest(CPU_NODE), node_manifest(GPU_NODE, gpus=2)):
            plane.apply(node)

        def nodes_ready() -> bool:
            nodes = plane.get("nodes") or {"items": []}
            ready = [
                n for n in nodes["items"]
                if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
            ]  # fmt: skip
            return len(ready) == 2

        _wait("two Ready nodes", nodes_ready, plane, deadline)
        _wait(
            "the default ServiceAccount",
            lambda: plane.get("serviceaccount", "default", "-n", "default") is not None,
            plane,
            deadline,
        )
        # prometheus-operator's CRDs, as a kube-prometheus-stack cluster has them (server-side: they are large).
        plane.kubectl("apply", "--server-side", "-f", str(MONITORING_CRDS))

        def crds_established() -> bool:
            crds = (plane.get("crd") or {"items": []})["items"]
            return len(crds) == len(list(MONITORING_CRDS.glob("*.yaml"))) and all(
                any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in (crd.get("status") or {}).get("conditions") or []
                )
                for crd in crds
            )

        _wait("prometheus-operator's CRDs established", crds_established, plane, deadline)
    except BaseException:
        plane.stop()
        raise
    return plane


def main() -> None:
    missing = missing_binaries()
    if missing:
        raise SystemExit(f"missing {', '.join(missing)} in {BIN_DIR}: run scripts/install-control-plane.sh")
    workdir = Path(tempfile.mkdtemp(prefix="kubetts-control-plane-"))
    plane = start_control_plane(workdir)
    print(f"control plane up: export KUBECONFIG={plane.admin_kubeconfig}  (kubectl: {BIN_DIR / 'kubectl'})")
    print(f"logs in {workdir}; Ctrl-C stops it")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
