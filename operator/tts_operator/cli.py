"""``kubetts-operator``: ``kopf run`` with kubetts' handlers and sensible flags.

Arguments are passed on to ``kopf run`` (e.g. ``--namespace tts`` to watch one
namespace, ``--all-namespaces`` for the whole cluster, ``--peering``); without
namespace flags it watches all namespaces.  ``--standalone`` is added unless a peering
flag is given, so a single replica needs no peering objects.
"""

from __future__ import annotations

import sys

import kopf.cli


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith(("--namespace", "-n", "--all-namespaces", "-A")) for a in args):
        args.append("--all-namespaces")
    if not any(a.startswith(("--peering", "--standalone")) for a in args):
        args.append("--standalone")
    sys.argv = ["kopf", "run", "--module", "tts_operator.handlers", *args]
    kopf.cli.main()
