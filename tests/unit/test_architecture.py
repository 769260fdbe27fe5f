"""The house rules, read from the imports by import-linter (contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("exchange", "partners", "settlement")


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_of_the_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_imports_keep_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("exchange/ledger/engine.py", "import partners.service", "ledger core"),
        ("exchange/ledger/operations.py", "import exchange.http.problems", "ledger core"),
        ("partners/client.py", "import exchange.ledger.engine", "SDK"),
        ("settlement/statements.py", "import exchange.http.signatures", "Settlement"),
        ("exchange/contract/schemas.py", "import exchange.errors", "contract"),
        ("settlement/controllers.py", "import exchange.app", "wire features"),
        ("exchange/reporting/metrics.py", "import exchange.http.problems", "Reporting"),
        ("exchange/console/web.py", "import exchange.http.signatures", "no part of the signed"),
        ("settlement/views.py", "import exchange.console.audit", "imports the console"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _copy_of_the_tree(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    # a row ends "BROKEN", or "BROKEN (2 ignored imports)" when the contract has exceptions
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout
