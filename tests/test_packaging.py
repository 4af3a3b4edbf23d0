"""What ``pip install surgewatch`` installs: the one ``surgewatch`` import package, every
sub-package of the source tree (they are listed by hand in pyproject.toml), the report templates,
and no test doubles."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"surgewatch.collectors": "collectors", "surgewatch.detector": "detector", "surgewatch.notifier": "notifier"}


def _source_packages() -> set[str]:
    """Every folder with an __init__.py under surgewatch/ and the mapped top-level folders."""
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "surgewatch").rglob("__init__.py")}
    for package, folder in MAPPED.items():
        found |= {package + "".join("." + part for part in p.parent.relative_to(ROOT / folder).parts)
                  for p in (ROOT / folder).rglob("__init__.py")}
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = out.glob("surgewatch-*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.slow
def test_the_wheel_installs_only_the_surgewatch_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"surgewatch"}


@pytest.mark.slow
def test_the_wheel_holds_every_package_of_the_tree_and_its_templates(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    packaged = {name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith("/__init__.py")}
    assert packaged == _source_packages()
    templates = {n for n in names if n.startswith("surgewatch/reports/templates/")}
    assert {Path(n).name for n in templates} == {p.name for p in (ROOT / "surgewatch/reports/templates").iterdir()}


@pytest.mark.slow
def test_the_wheel_holds_no_test_doubles(wheel: zipfile.ZipFile) -> None:
    doubles = [n for n in wheel.namelist() if "fake" in n.lower() or n.startswith("tests/") or "/tests/" in n]
    assert doubles == []


def test_no_code_reaches_the_mapped_folders_by_their_bare_names() -> None:
    """From a checkout, ``collectors``, ``detector`` and ``notifier`` are importable as top-level
    packages too -- as second copies of the modules.  A patch or an import through such a name
    acts on the copy the code never uses, so every reference goes through ``surgewatch.``."""
    imports = re.compile(r"^\s*(from|import)\s+(collectors|detector|notifier)\b")
    named = re.compile(r"""["'](collectors|detector|notifier)\.([a-z_]+)""")  # a patch target, say
    offenders = []
    for folder in ("surgewatch", "collectors", "detector", "notifier", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                modules = [m for m in named.finditer(line) if (ROOT / m[1] / f"{m[2]}.py").exists()]
                if imports.search(line) or modules:  # (config keys such as "detector.bucket_seconds" pass)
                    offenders.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert offenders == []
