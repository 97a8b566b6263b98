"""pyproject.toml declares every import; the lock pins each declared package inside its range;
environment.yml is the lock's list."""

from __future__ import annotations

import ast
import importlib.util
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["project"]
FOLDERS = ("src", "scripts", "tests", "ISTRATI_LUCIAN")
SOURCES = sorted(path for folder in FOLDERS for path in (REPOSITORY / folder).rglob("*.py"))
# The package and the helper modules beside the tests and scripts.
LOCAL_MODULES = {"contest_study", *(path.stem for path in SOURCES)}

_spec = importlib.util.spec_from_file_location("write_environment", REPOSITORY / "scripts" / "write_environment.py")
write_environment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(write_environment)


def declared_requirements() -> list[Requirement]:
    extras = PYPROJECT["optional-dependencies"]
    return [Requirement(text) for text in [*PYPROJECT["dependencies"], *extras["cpu"], *extras["test"]]]


def locked_versions() -> dict[str, str]:
    pins = write_environment.pinned_requirements(write_environment.LOCK.read_text(encoding="utf-8"))
    return {canonicalize_name(name): version for name, version in (pin.split("==") for pin in pins)}


def imported_top_level_modules() -> dict[str, Path]:
    """Every absolute import of the package, the scripts, the tests and the notebook twins."""
    modules = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.split(".")[0], path)
    return modules


def test_every_import_is_declared():
    declared = {canonicalize_name(requirement.name) for requirement in declared_requirements()}
    distributions = packages_distributions()
    undeclared = []
    for module, path in imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in LOCAL_MODULES or module == "__future__":
            continue
        providers = {canonicalize_name(name) for name in distributions.get(module, [module])}
        if not providers & declared:
            undeclared.append(f"{module} (imported in {path.relative_to(REPOSITORY)})")
    assert not undeclared, f"imported but not in pyproject.toml: {', '.join(undeclared)}"


def test_the_lock_pins_every_declared_package_inside_its_range():
    locked = locked_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if name == "tensorflow":
            # The lock installs the CPU build (extra "cpu"), which provides the tensorflow module.
            assert "tensorflow" not in locked and requirement.specifier.contains(locked["tensorflow-cpu"])
            continue
        assert name in locked, f"{name} is declared in pyproject.toml but missing from the lock: run `make lock`"
        assert requirement.specifier.contains(locked[name]), (
            f"lock pins {name}=={locked[name]} outside pyproject.toml's {requirement.specifier}: run `make lock`"
        )


def test_environment_file_is_written_from_the_lock():
    expected = write_environment.environment_text(write_environment.LOCK.read_text(encoding="utf-8"))
    assert write_environment.ENVIRONMENT.read_text(encoding="utf-8") == expected, (
        "environment.yml is out of date: python scripts/write_environment.py"
    )


def test_a_lock_line_that_is_not_a_pin_is_named():
    with pytest.raises(ValueError, match=r"lock.txt line 2: expected name==version, got '-e \.'"):
        write_environment.pinned_requirements("numpy==2.4.6\n-e .\n")
