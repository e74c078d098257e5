"""Render the plain manifests from the chart (called by render-manifests.sh and the tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kubetts"
NAMESPACE = "kubetts-system"
RELEASE = "kubetts"
WEBHOOK_TOKEN_SECRET = "kubetts-webhook-token"
HEADER = "# Generated from charts/kubetts by scripts/render-manifests.sh -- do not edit by hand.\n"
NAMESPACE_DOC = f"""---
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/name: kubetts
"""


def render(helm: str) -> dict[str, str]:
    """{file name: content} for manifests/."""
    crds = subprocess.run(
        [helm, "show", "crds", str(CHART)], check=True, capture_output=True, text=True
    ).stdout
    operator = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--set",
            "monitoring.dashboard.enabled=false",
            # No generated token in a committed file (everyone would share it): the README has the
            # one command that creates this Secret; until then the webhook refuses every alert.
            "--set",
            f"operator.webhook.tokenSecret={WEBHOOK_TOKEN_SECRET}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {"crd.yaml": HEADER + crds, "operator.yaml": HEADER + NAMESPACE_DOC + operator}


if __name__ == "__main__":
    for name, content in render(sys.argv[1]).items():
        (ROOT / "manifests" / name).write_text(content)
        print(f"wrote manifests/{name}")
