"""Credentials: one source for kopf's login and for the operator's own API client.

In a pod the service account is used (token and CA mounted by Kubernetes); outside,
kopf's kubeconfig login.  ``KUBETTS_OPERATOR_API_SERVER`` (+ ``_API_TOKEN``) names an
API server explicitly: for development against a local API and for the test suite's
API double.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from .config import OperatorConfig
from .kube import Credentials

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def connection_info(config: OperatorConfig, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """What kopf logs in with."""
    if config.api_server:
        return kopf.ConnectionInfo(
            server=config.api_server,
            token=config.api_token or None,
            insecure=True,
            default_namespace="default",
        )
    if os.path.exists(os.path.join(SERVICE_ACCOUNT_DIR, "token")):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


def credentials(config: OperatorConfig) -> Credentials:
    """What the operator's own client uses: the same API server and identity as kopf."""
    if config.api_server:
        return Credentials(server=config.api_server, token=config.api_token or None, insecure=True)
    token_path = os.path.join(SERVICE_ACCOUNT_DIR, "token")
    if os.path.exists(token_path):
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        with open(token_path) as f:
            token = f.read().strip()
        return Credentials(
            server=f"https://{host}:{port}", token=token, ca_path=os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt")
        )
    info = kopf.login_with_kubeconfig()
    if info is None:
        raise RuntimeError(
            "no Kubernetes credentials: not in a pod, no kubeconfig, no KUBETTS_OPERATOR_API_SERVER"
        )
    return Credentials(
        server=info.server, token=info.token, ca_path=info.ca_path, insecure=bool(info.insecure)
    )
