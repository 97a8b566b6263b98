"""The head of every notebook (setup cell, parameters cell) runs where the package is not installed.

As on Kaggle or Colab: a fresh kernel whose current folder is an unzipped submission
folder outside the repository, and whose Python has every library of .venv but not the
editable install of contest_study. The setup cell must find the folder's own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPOSITORY = Path(__file__).resolve().parents[1]
TWINS = sorted((REPOSITORY / "ISTRATI_LUCIAN").glob("[0-9][0-9]_*.py"))
KERNEL_NAME = "without-contest-study"

CHECK = """\
import json
import contest_study
from contest_study.config import study_context
from contest_study.study import open_study
context = study_context(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed)
print(json.dumps({"package": contest_study.__file__, "workdir": str(context.workdir),
                  "profile": context.profile.name, "open_study": callable(open_study)}))
"""


def head_cells(twin: Path) -> tuple[str, str]:
    """The setup cell and the parameters cell (tagged ``parameters``, right after the setup cell)."""
    cells = jupytext.read(twin).cells
    for index, cell in enumerate(cells):
        if "parameters" in cell.metadata.get("tags", []):
            assert index > 0 and cells[index - 1].cell_type == "code", f"{twin.name}: no setup cell before the parameters"
            return cells[index - 1].source, cell.source
    raise AssertionError(f"{twin.name}: no cell tagged 'parameters'")


@pytest.mark.parametrize("twin", TWINS, ids=lambda path: path.stem)
def test_every_twin_starts_with_the_same_head(twin):
    assert head_cells(twin) == head_cells(TWINS[0])


def unzipped_submission(parent: Path) -> Path:
    """The ISTRATI_LUCIAN folder of the zip: the twins and the package beside them."""
    folder = parent / "ISTRATI_LUCIAN"
    folder.mkdir(parents=True)
    for twin in TWINS:
        shutil.copy(twin, folder)
    shutil.copytree(REPOSITORY / "src" / "contest_study", folder / "contest_study",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def kernel_without_the_package(root: Path) -> KernelManager:
    """A kernel on a virtual environment that sees .venv's libraries through a .pth line.

    A directory named in a .pth file is not a site directory, so the .pth files inside it,
    among them the editable install's, are not read: contest_study is not importable.
    """
    environment = root / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True)
    site_packages = Path(subprocess.run(
        [str(environment / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (site_packages / "venv_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(environment / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL_NAME, "language": "python",
    }))
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(root / "kernels")]))


def run_cells(sources: list[str], cwd: Path, kernel: KernelManager) -> list[str]:
    """Run ``sources`` in a fresh kernel started in ``cwd``; the stdout of each cell."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    environment["PYTHONNOUSERSITE"] = "1"
    NotebookClient(notebook, km=kernel, timeout=300, resources={"metadata": {"path": str(cwd)}}).execute(env=environment)
    return ["".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stdout")
            for cell in notebook.cells]


# What the kernel finds on its path once the current folder is left out.
BEYOND_THE_CURRENT_FOLDER = (
    "import importlib.machinery, os, sys; print(importlib.machinery.PathFinder.find_spec("
    "'contest_study', [p for p in sys.path if p not in ('', os.getcwd())]))"
)


@pytest.mark.slow
def test_head_runs_in_an_unzipped_folder_outside_the_repository(tmp_path):
    folder = unzipped_submission(tmp_path / "upload")
    setup, parameters = head_cells(TWINS[0])
    before, _, _, check = run_cells([BEYOND_THE_CURRENT_FOLDER, setup, parameters, CHECK],
                                    folder, kernel_without_the_package(tmp_path))
    assert before.strip() == "None"  # the kernel cannot see the installed package
    seen = json.loads(check)
    assert Path(seen["package"]) == folder / "contest_study" / "__init__.py"
    assert Path(seen["workdir"]) == folder  # outside a checkout: the current folder
    assert seen["profile"] == "default" and seen["open_study"]


@pytest.mark.slow
def test_head_finds_the_folder_among_kaggle_inputs(tmp_path):
    """Kaggle: the folder is a dataset under /kaggle/input (here a tmp folder), the notebook runs in /kaggle/working."""
    inputs = tmp_path / "kaggle" / "input"
    folder = unzipped_submission(inputs / "istrati-lucian-study")
    working = tmp_path / "kaggle" / "working"
    working.mkdir()
    setup, parameters = head_cells(TWINS[0])
    assert '"/kaggle/input"' in setup
    check = "import contest_study.config as config; print(config.__file__); print(config.study_context().workdir)"
    *_, seen = run_cells([setup.replace('"/kaggle/input"', repr(str(inputs))), parameters, check],
                         working, kernel_without_the_package(tmp_path))
    package, workdir = seen.split()
    assert Path(package) == folder / "contest_study" / "config.py"
    assert Path(workdir) == working


def test_setup_cell_says_what_to_upload_when_the_folder_is_missing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    setup, _ = head_cells(TWINS[0])
    with pytest.raises(CellExecutionError, match=r"upload the ISTRATI_LUCIAN folder of the submission zip"):
        run_cells([setup], empty, kernel_without_the_package(tmp_path))
