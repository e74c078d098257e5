"""Credentials: one source for kopf's login and for the operator's own API client.

Loaded by the ``kubernetes`` client's asyncio port (``kubernetes_asyncio``), never by hand:

* **in a pod** (a service-account token is mounted and ``KUBERNETES_SERVICE_HOST`` is set): the
  mounted token and CA.  The kubelet rotates that token; the client re-reads it every minute, and
  both kopf and :class:`~tts_operator.kube.KubeClient` load it again as soon as the API server
  answers 401.
* **elsewhere**: ``$KUBECONFIG`` (or ``~/.kube/config``), with whatever it uses -- client
  certificates (kind, minikube), bearer tokens, or exec plugins (cloud CLIs).

kopf logs in with a :class:`kopf.ConnectionInfo` made from the same loaded configuration, the
way kopf's own ``login_via_async_client`` does it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import kopf
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import Configuration

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class Source:
    """Where credentials come from: a mounted service account, or a kubeconfig."""

    service_account_dir: Path

    @property
    def in_pod(self) -> bool:
        return (self.service_account_dir / "token").is_file() and bool(
            os.environ.get("KUBERNETES_SERVICE_HOST")
        )

    @property
    def kubeconfig(self) -> str:
        return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")

    async def load(self) -> Configuration:
        """A fresh client configuration (re-reading token files and re-running exec plugins)."""
        configuration = Configuration()
        if self.in_pod:
            kube_config.load_incluster_config(
                client_configuration=configuration,
                token_filename=str(self.service_account_dir / "token"),
                cert_filename=str(self.service_account_dir / "ca.crt"),
            )
        else:
            try:
                await kube_config.load_kube_config(
                    config_file=self.kubeconfig, client_configuration=configuration, persist_config=False
                )
            except (kube_config.ConfigException, OSError) as exc:
                raise kopf.LoginError(
                    f"no Kubernetes credentials: not in a pod, and the kubeconfig {self.kubeconfig} "
                    f"cannot be used ({exc})"
                ) from exc
        return configuration

    def namespace(self) -> str:
        """The namespace the operator lives in: the pod's, else the kubeconfig context's, else default."""
        if os.environ.get("POD_NAMESPACE"):
            return os.environ["POD_NAMESPACE"]
        namespace_file = self.service_account_dir / "namespace"
        if self.in_pod and namespace_file.is_file():
            return namespace_file.read_text().strip()
        try:
            _, active = kube_config.list_kube_config_contexts(config_file=self.kubeconfig)
            return (active or {}).get("context", {}).get("namespace") or "default"
        except (kube_config.ConfigException, OSError):
            return "default"


async def connection_info(source: Source, settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """What kopf logs in with, from the same configuration the operator's client uses."""
    configuration = await source.load()
    header = configuration.get_api_key_with_prefix("BearerToken")
    if hasattr(header, "__await__"):
        header = await header
    scheme, _, token = (header or "").partition(" ")
    if not token:  # a bare token without a scheme
        scheme, token = "", scheme
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        trust_env=settings.networking.trust_env,
    )
