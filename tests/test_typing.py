"""The incident domain is typed (surgewatch.incidents.model): a type checker sees every key the
lifecycle, the compare-and-swap updates, routing, evaluation and delivery read or write, so a
misspelt key or a transition missing a field fails here, not in production."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TYPED = ["surgewatch/incidents", "surgewatch/pipeline/routing.py", "surgewatch/pipeline/evaluation.py",
         "surgewatch/pipeline/delivery.py"]


@pytest.mark.slow
def test_the_incident_domain_type_checks() -> None:
    pytest.importorskip("mypy", reason="mypy is a test dependency: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                           "--no-error-summary", *TYPED], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_a_transition_missing_a_field_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a transition built without its verdict is a type error."""
    pytest.importorskip("mypy", reason="mypy is a test dependency: pip install -e '.[test]'")
    bad = tmp_path / "bad.py"
    bad.write_text("from surgewatch.incidents.model import Transition\n"
                   "t: Transition = {'no': 0, 'at': 0.0, 'event': 'opened', 'from': 'quiet', 'to': 'watch', "
                   "'dispatched': False}\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                           str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "verdict" in proc.stdout
