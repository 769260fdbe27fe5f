"""The package as it ships: what it imports it declares, the lock files pin what it declares, and
a plain (non-editable) install of the repository into a fresh virtualenv imports the app."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("exchange", "partners", "settlement")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match is not None, requirement
        names.add(_normalise(match.group()))
    return names


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def _runtime() -> set[str]:
    return _names(_project()["dependencies"])  # type: ignore[arg-type]


def _dev() -> set[str]:
    return _names(_project()["optional-dependencies"]["dev"])  # type: ignore[index]


def _third_party_imports() -> dict[str, set[Path]]:
    """Top-level module -> the files that import it, for every import outside the standard
    library and the project, wherever it sits (under TYPE_CHECKING and inside functions too)."""
    found: dict[str, set[Path]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(path.relative_to(ROOT))
    return found


def test_every_third_party_import_of_the_service_is_a_runtime_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _runtime()
    undeclared = {}
    for module, files in _third_party_imports().items():
        owners = {_normalise(name) for name in distributions.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(map(str, files))
    assert undeclared == {}, f"imported but not in [project.dependencies]: {undeclared}"


def _pinned(lock: str) -> dict[str, str]:
    """Name -> the lines of its entry, from a hashed requirements file."""
    entries: dict[str, str] = {}
    name = ""
    for line in (ROOT / lock).read_text().splitlines():
        if match := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line):
            name = _normalise(match.group(1))
            entries[name] = line
        elif name and line.startswith("    --hash="):
            entries[name] += "\n" + line
    return entries


@pytest.mark.parametrize(
    ("lock", "with_dev"), [("requirements.lock", False), ("requirements-dev.lock", True)]
)
def test_the_lock_files_pin_every_declared_dependency_with_its_hashes(
    lock: str, with_dev: bool
) -> None:
    pinned = _pinned(lock)
    wanted = _runtime() | (_dev() if with_dev else set())
    missing = sorted(wanted - pinned.keys())
    assert missing == [], f"{lock} lacks {missing}: run `make lock`"
    unhashed = sorted(name for name, entry in pinned.items() if "--hash=sha256:" not in entry)
    assert unhashed == [], f"{lock} pins without a hash: {unhashed}"


@pytest.mark.slow
def test_a_plain_install_of_the_repository_imports_the_app(tmp_path: Path) -> None:
    """``python -m venv x && x/bin/pip install . && x/bin/python -c "import exchange.app"``,
    from a copy of the working tree (a build leaves files behind), and importing from
    elsewhere, so that what is imported is the installed package, not the sources."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*command: str | Path, cwd: Path) -> str:
        result = subprocess.run(
            [str(part) for part in command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "pip", "install", "--quiet", ".", cwd=source)
    where = run(
        venv / "bin" / "python",
        "-c",
        "import exchange.app, exchange; print(exchange.__file__)",
        cwd=tmp_path,
    )
    assert Path(where.strip()).is_relative_to(venv), where
