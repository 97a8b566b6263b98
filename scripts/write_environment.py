"""Write environment.yml (conda) from the lock file, so both install the same versions.

    python scripts/write_environment.py          # `make lock` runs it after uv

The pip section lists every pin of requirements/lock.txt; tests/test_dependencies.py
fails when environment.yml is out of date.
"""

from __future__ import annotations

from pathlib import Path

from contest_study.files import write_text_atomic

REPOSITORY = Path(__file__).resolve().parents[1]
LOCK = REPOSITORY / "requirements" / "lock.txt"
ENVIRONMENT = REPOSITORY / "environment.yml"

HEADER = """\
# Written by scripts/write_environment.py from requirements/lock.txt (the versions `make install`
# installs); do not edit by hand: change pyproject.toml, then `make lock`.
#   conda env create -f environment.yml && conda activate contest-study
#   pip install --no-deps -e .     # the package itself; its dependencies are all above
name: contest-study
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  # WeasyPrint lays the PDF report out with Pango; HarfBuzz (with its subset library) embeds the fonts.
  - pango
  - harfbuzz
  - pip:
"""


def pinned_requirements(lock_text: str) -> list[str]:
    """The ``name==version`` lines of a uv/pip-tools lock, without comments."""
    pins = []
    for number, line in enumerate(lock_text.splitlines(), start=1):
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        if "==" not in requirement or requirement.startswith("-"):
            raise ValueError(f"{LOCK.name} line {number}: expected name==version, got {requirement!r}")
        pins.append(requirement)
    return pins


def environment_text(lock_text: str) -> str:
    return HEADER + "".join(f"      - {pin}\n" for pin in pinned_requirements(lock_text))


def main() -> None:
    write_text_atomic(ENVIRONMENT, environment_text(LOCK.read_text(encoding="utf-8")))
    print(f"wrote {ENVIRONMENT.relative_to(REPOSITORY)} from {LOCK.relative_to(REPOSITORY)}")


if __name__ == "__main__":
    main()
