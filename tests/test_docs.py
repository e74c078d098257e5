"""The README stays true: its settings and metrics tables and its two commands."""

from __future__ import annotations

import re
from pathlib import Path

from tts_service.metrics import METRIC_NAMES, Metrics
from tts_service.settings import settings_markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block(name: str) -> str:
    match = re.search(rf"<!-- {name}:start[^>]*-->\n(.*?)\n<!-- {name}:end -->", README, re.S)
    assert match, f"README lacks the {name} block"
    return match.group(1)


def test_settings_table_is_generated_from_the_settings_object():
    assert block("settings-table") == settings_markdown_table()


def exported_metric_names() -> set[str]:
    suffix = {"counter": "_total", "info": "_info"}
    registry = Metrics(engine="espeak", version="0").registry
    return {f.name + suffix.get(f.type, "") for f in registry.collect() if f.name.startswith("tts_")}


def test_metrics_table_matches_what_the_service_exports():
    documented = set(re.findall(r"^\| `(tts_[a-z_]+)`", block("metrics-table"), re.M))
    assert documented == set(METRIC_NAMES) == exported_metric_names()


def test_ci_runs_the_readme_test_command():
    assert "./dev serve" in README and "./dev test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./dev test$", ci, re.M)


def test_reliability_doc_names_only_tests_that_exist():
    """docs/reliability.md cites a test for each guarantee; every citation must resolve."""
    doc = (ROOT / "docs" / "reliability.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", doc)
    assert len(cited) > 20
    for path, name in cited:
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} does not exist"
    # Bare names listed after a citation (`test_x`, `test_y`) must exist somewhere in tests/.
    all_tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for name in set(re.findall(r"`(test_\w+)`", doc)):
        assert re.search(rf"^(async )?def {name}\(", all_tests, re.M), f"{name} does not exist"
