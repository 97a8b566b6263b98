"""JupyterLab started as the README says pairs every notebook with its .py twin.

jupytext's contents manager looks for jupytext.toml in the notebook's folder and its
parents, up to the server root only: the server must be rooted at the repository
(the notebooks/ folder as the starting page), not at notebooks/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import notebook_formats
from jupytext.formats import long_form_multiple_formats
from jupytext.paired_paths import find_base_path_and_format, paired_paths

REPOSITORY = Path(__file__).resolve().parents[1]
# Run from the repository root, which is therefore the server root.
LAB_COMMAND = ".venv/bin/jupyter lab --ContentsManager.preferred_dir=notebooks"
NOTEBOOKS = sorted(path.relative_to(REPOSITORY).as_posix() for path in (REPOSITORY / "notebooks").glob("*.ipynb"))


def server_contents_manager(root: Path) -> jupytext.TextFileContentsManager:
    """The contents manager jupytext's server extension gives JupyterLab, rooted at ``root``."""
    return jupytext.TextFileContentsManager(root_dir=str(root))


def paired_with(manager, path: str) -> list[str]:
    formats = long_form_multiple_formats(notebook_formats(nbformat.v4.new_notebook(), manager.get_config(path), path))
    if len(formats) < 2:
        return []
    _, fmt = find_base_path_and_format(path, formats)
    return [paired for paired, _ in paired_paths(path, fmt, formats) if paired != path]


def test_readme_documents_the_command():
    assert LAB_COMMAND in (REPOSITORY / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_is_paired_with_its_twin(notebook):
    twin = f"ISTRATI_LUCIAN/{Path(notebook).stem}.py"
    assert paired_with(server_contents_manager(REPOSITORY), notebook) == [twin]
    assert (REPOSITORY / twin).is_file()


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_names_its_kernel(notebook):
    kernelspec = nbformat.read(REPOSITORY / notebook, as_version=4).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{notebook} has no python3 kernelspec"


def test_saving_a_notebook_writes_its_twin(tmp_path):
    shutil.copy(REPOSITORY / "jupytext.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A new chapter"),
        nbformat.v4.new_code_cell("answer = 42", metadata={"tags": ["parameters"]}),
    ])
    manager = server_contents_manager(tmp_path)
    manager.save({"type": "notebook", "content": notebook}, "notebooks/09_probe.ipynb")

    twin = (tmp_path / "ISTRATI_LUCIAN" / "09_probe.py").read_text(encoding="utf-8")
    assert '# %% tags=["parameters"]\nanswer = 42' in twin
    assert "# # A new chapter" in twin
    assert "jupyter:" not in twin  # notebook metadata stays out of the twin


def test_a_server_rooted_at_notebooks_would_not_pair():
    """The old command (`jupyter lab notebooks/`): jupytext.toml lies above the server root."""
    manager = server_contents_manager(REPOSITORY / "notebooks")
    assert paired_with(manager, Path(NOTEBOOKS[0]).name) == []
