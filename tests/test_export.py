"""Submission export: notebook/.py sync, headless execution, zip rules, the command line.

Everything runs on a throw-away mini-project in tmp_path, with tiny notebooks whose
kernels start in a second or two.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.paired_paths import paired_paths

from contest_study import export
from contest_study.export import (
    ExportError,
    NotebookExecutionError,
    NotebookPair,
    ProjectLayout,
    RunParameters,
    SyncConflictError,
    ZipCheckError,
    build_zip,
    check_zip,
    execute_all,
    execute_notebook,
    execution_keys,
    inject_parameters,
    load_jupytext_config,
    package_closure,
    select_notebooks,
    sync_all,
    sync_pair,
)

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("export_submission_script", REPO / "scripts" / "export_submission.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()


PARAMETERS_SOURCE = 'profile = "default"\ndata_dir = None\nworkdir = None\nseed = 42'


def _notebook(*sources: str, outputs: dict[int, str] | None = None, parameters: bool = False) -> nbformat.NotebookNode:
    """A notebook of code cells; ``outputs`` maps a cell index to its printed text.

    ``parameters``: a cell tagged ``parameters`` comes first, as in the study's notebooks.
    """
    cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for index, text in (outputs or {}).items():
        cells[index].outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        cells[index].execution_count = index + 1
    if parameters:
        cells.insert(0, nbformat.v4.new_code_cell(PARAMETERS_SOURCE, metadata={"tags": ["parameters"]}))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Tiny notebook"), *cells])
    nb.metadata["kernelspec"] = dict(export.KERNELSPEC)
    return nb


@pytest.fixture
def project(tmp_path) -> ProjectLayout:
    """A mini repository: real jupytext.toml, one notebook, a two-module package, a README."""
    layout = ProjectLayout(tmp_path / "repo")
    layout.notebooks_dir.mkdir(parents=True)
    layout.twins_dir.mkdir()
    shutil.copy(REPO / "jupytext.toml", layout.jupytext_config_file)
    (layout.package_dir / "sub").mkdir(parents=True)
    (layout.package_dir / "__init__.py").write_text('"""mini package"""\n')
    (layout.package_dir / "sub" / "__init__.py").write_text("")
    (layout.package_dir / "sub" / "helpers.py").write_text("def twice(x):\n    return 2 * x\n")
    layout.readme.write_text("# Mini project\n")
    nbformat.write(_notebook("x = 1\nprint(x)", "y = x + 1", outputs={0: "1\n"}), layout.notebooks_dir / "01_tiny.ipynb")
    return layout


@pytest.fixture
def config(project):
    return load_jupytext_config(project.jupytext_config_file)


def _pair(layout: ProjectLayout, name: str = "01_tiny") -> NotebookPair:
    return NotebookPair(name, layout.notebooks_dir / f"{name}.ipynb", layout.twins_dir / f"{name}.py")


def _snapshot(*paths: Path) -> list[bytes | None]:
    return [path.read_bytes() if path.exists() else None for path in paths]


def _code_sources(path: Path) -> list[str]:
    return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


# --------------------------------------------------------------------------- pairing


def test_twin_paths_agree_with_the_repository_jupytext_config():
    # discover_pairs maps names itself; this guards it against jupytext.toml drifting away.
    config = load_jupytext_config(REPO / "jupytext.toml")
    pair = _pair(ProjectLayout(REPO), "01_example")
    for path, fmt in ((pair.ipynb, "ipynb"), (pair.py, "py:percent")):
        paired = {Path(twin) for twin, _ in paired_paths(str(path), fmt, config.formats[0])}
        assert paired == {pair.ipynb, pair.py}


def test_missing_twin_is_created_and_state_recorded(project, config):
    pair = _pair(project)
    assert sync_pair(pair, project.state_file, config) == export.SYNC_PY_CREATED
    text = pair.py.read_text()
    assert "# %%\nx = 1\nprint(x)" in text and "# # Tiny notebook" in text
    state = json.loads(project.state_file.read_text())
    assert state["pairs"]["notebooks/01_tiny.ipynb"]["py"] == "ISTRATI_LUCIAN/01_tiny.py"
    assert sync_pair(pair, project.state_file, config) == export.SYNC_IN_SYNC


def test_missing_notebook_is_created_from_py(project, config):
    pair = _pair(project, "02_from_py")
    pair.py.write_text("# %%\nprint('hello')\n")
    assert sync_pair(pair, project.state_file, config) == export.SYNC_IPYNB_CREATED
    created = nbformat.read(pair.ipynb, as_version=4)
    assert [cell.source for cell in created.cells] == ["print('hello')"]
    assert created.metadata["kernelspec"]["name"] == "python3"


def test_py_edit_updates_notebook_and_keeps_outputs(project, config):
    pair = _pair(project)
    sync_pair(pair, project.state_file, config)
    pair.py.write_text(pair.py.read_text().replace("y = x + 1", "y = x + 2"))

    assert sync_pair(pair, project.state_file, config) == export.SYNC_IPYNB_UPDATED
    updated = nbformat.read(pair.ipynb, as_version=4)
    assert _code_sources(pair.ipynb) == ["x = 1\nprint(x)", "y = x + 2"]
    assert updated.cells[1].outputs[0]["text"] == "1\n"  # unchanged cell keeps its output
    assert sync_pair(pair, project.state_file, config) == export.SYNC_IN_SYNC


def test_notebook_edit_updates_py(project, config):
    pair = _pair(project)
    sync_pair(pair, project.state_file, config)
    nb = nbformat.read(pair.ipynb, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("z = 3"))
    nbformat.write(nb, pair.ipynb)

    assert sync_pair(pair, project.state_file, config) == export.SYNC_PY_UPDATED
    assert pair.py.read_text().endswith("# %%\nz = 3\n")


def test_notebook_output_only_change_leaves_py_untouched(project, config):
    pair = _pair(project)
    sync_pair(pair, project.state_file, config)
    py_before = _snapshot(pair.py)
    nb = nbformat.read(pair.ipynb, as_version=4)
    nb.cells[1].outputs[0]["text"] = "rerun\n"
    nbformat.write(nb, pair.ipynb)

    assert sync_pair(pair, project.state_file, config) == export.SYNC_PY_UPDATED
    assert _snapshot(pair.py) == py_before


def test_both_edited_is_a_conflict_and_neither_file_changes(project, config):
    pair = _pair(project)
    sync_pair(pair, project.state_file, config)
    pair.py.write_text(pair.py.read_text().replace("y = x + 1", "y = 'edited in the .py'"))
    nb = nbformat.read(pair.ipynb, as_version=4)
    nb.cells[2].source = "y = 'edited in the notebook'"
    nbformat.write(nb, pair.ipynb)
    before = _snapshot(pair.ipynb, pair.py, project.state_file)

    with pytest.raises(SyncConflictError) as caught:
        sync_pair(pair, project.state_file, config)

    message = str(caught.value)
    assert str(pair.ipynb) in message and str(pair.py) in message
    assert "delete" in message and "jupytext --sync" in message
    assert _snapshot(pair.ipynb, pair.py, project.state_file) == before

    # Resolution as the message says: delete one side, it is recreated from the other.
    pair.py.unlink()
    assert sync_pair(pair, project.state_file, config) == export.SYNC_PY_CREATED
    assert "edited in the notebook" in pair.py.read_text()


def test_both_saved_with_the_same_content_is_recorded(project, config):
    # JupyterLab saves both files of a pair at once: both hashes change, content agrees.
    pair = _pair(project)
    sync_pair(pair, project.state_file, config)
    nb = nbformat.read(pair.ipynb, as_version=4)
    nb.cells[2].source = "y = 42"
    nbformat.write(nb, pair.ipynb)
    pair.py.write_text(jupytext.writes(nb, fmt="py:percent", config=config))

    assert sync_pair(pair, project.state_file, config) == export.SYNC_RECORDED
    assert sync_pair(pair, project.state_file, config) == export.SYNC_IN_SYNC


def test_first_sync_with_differing_files_is_refused(project, config):
    pair = _pair(project)
    pair.py.write_text("# %%\nsomething_else = True\n")
    before = _snapshot(pair.ipynb, pair.py)

    with pytest.raises(SyncConflictError, match="no sync of them is recorded") as caught:
        sync_pair(pair, project.state_file, config)

    assert str(pair.ipynb) in str(caught.value) and str(pair.py) in str(caught.value)
    assert _snapshot(pair.ipynb, pair.py) == before
    assert not project.state_file.exists()


def test_first_sync_with_equivalent_files_records_state(project, config):
    pair = _pair(project)
    nb = nbformat.read(pair.ipynb, as_version=4)
    # Extra trailing blank lines cannot survive the text format: still the same notebook.
    pair.py.write_text(jupytext.writes(nb, fmt="py:percent", config=config) + "\n\n")
    before = _snapshot(pair.ipynb, pair.py)

    assert sync_pair(pair, project.state_file, config) == export.SYNC_RECORDED
    assert _snapshot(pair.ipynb, pair.py) == before


def test_corrupt_state_file_is_named(project, config):
    project.state_file.write_text("{not json")
    with pytest.raises(ExportError, match=r"\.sync-state\.json"):
        sync_pair(_pair(project), project.state_file, config)


def test_sync_all_covers_both_folders_in_order(project):
    (project.twins_dir / "02_only_py.py").write_text("# %%\nprint(2)\n")
    (project.twins_dir / "helper.py").write_text("not a twin\n")

    results = sync_all(project)

    assert [(pair.name, action) for pair, action in results] == [
        ("01_tiny", export.SYNC_PY_CREATED),
        ("02_only_py", export.SYNC_IPYNB_CREATED),
    ]
    assert not (project.notebooks_dir / "helper.ipynb").exists()


def test_select_notebooks_by_number_or_name(project):
    pairs = [_pair(project, "01_tiny"), _pair(project, "02_more"), _pair(project, "10_last")]
    assert [p.name for p in select_notebooks(pairs, ["2", "01_tiny.ipynb"])] == ["01_tiny", "02_more"]
    assert select_notebooks(pairs, None) == pairs
    with pytest.raises(ExportError, match=r"--notebooks: no notebook matches '7'.*01_tiny, 02_more, 10_last"):
        select_notebooks(pairs, ["7"])


# --------------------------------------------------------------------------- zip


def _report(project: ProjectLayout) -> Path:
    report = project.report_dir / "report.pdf"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_bytes(b"%PDF-1.7 tiny")
    return report


def _zip_inputs(project: ProjectLayout) -> dict:
    """A synced twin that imports one module of the package, the README and the report."""
    sync_all(project)
    twin = _pair(project).py
    twin.write_text("from contest_study.sub.helpers import twice\nprint(twice(21))\n")
    return dict(
        name="DOE_JANE",
        twins=[twin],
        package_dir=project.package_dir,
        doc_files=[project.readme, _report(project)],
    )


def test_zip_holds_the_twins_the_modules_they_import_and_the_docs(project, tmp_path):
    # Strays that must stay out: bytecode, data, notebooks, hidden folders, modules no twin imports.
    (project.twins_dir / "__pycache__").mkdir()
    (project.twins_dir / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (project.twins_dir / "data.csv").write_text("a,b\n")
    (project.twins_dir / "01_tiny.ipynb").write_text("{}")
    (project.package_dir / "__pycache__").mkdir()
    (project.package_dir / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"\0")
    (project.package_dir / "weights.h5").write_bytes(b"\0")
    (project.package_dir / ".ipynb_checkpoints").mkdir()
    (project.package_dir / ".ipynb_checkpoints" / "old.py").write_text("")
    (project.package_dir / "generator.py").write_text('"""Only a script imports it."""\n')
    inputs = _zip_inputs(project)
    zip_path = tmp_path / "dist" / "DOE_JANE.zip"

    members = build_zip(zip_path, **inputs)

    expected = {
        "DOE_JANE/01_tiny.py",
        "DOE_JANE/contest_study/__init__.py",
        "DOE_JANE/contest_study/sub/__init__.py",
        "DOE_JANE/contest_study/sub/helpers.py",
        "README.md",
        "report.pdf",
    }
    with zipfile.ZipFile(zip_path) as archive:
        assert set(archive.namelist()) == expected
        assert archive.read("DOE_JANE/contest_study/sub/helpers.py") == (project.package_dir / "sub" / "helpers.py").read_bytes()
    assert {member for member, _ in members} == expected
    assert dict(members)["report.pdf"] == len(b"%PDF-1.7 tiny")
    assert [p.name for p in zip_path.parent.iterdir()] == ["DOE_JANE.zip"]  # no temp file left


def test_package_closure_follows_imports_of_every_kind(tmp_path):
    package = tmp_path / "contest_study"
    (package / "sub").mkdir(parents=True)
    modules = {
        "__init__.py": "",
        "study.py": "from . import data\nfrom .sub import plots\n\ndef open_study():\n"
                    "    from contest_study.generator import make  # only when the data is missing\n",
        "data.py": "import numpy as np\nfrom contest_study.files import write\n",
        "files.py": "import os\n",
        "generator.py": "from .files import write\n",
        "sub/__init__.py": "",
        "sub/plots.py": "from ..files import write\n",
        "roles.py": "import contest_study.study\n",  # imported by a script only
        "unused.py": "",
    }
    for name, text in modules.items():
        (package / name).write_text(text)
    twin = tmp_path / "01_x.py"
    twin.write_text("import json\nfrom contest_study.study import open_study\n")

    closure = {path.relative_to(package).as_posix() for path in package_closure([twin], package)}

    assert closure == {"__init__.py", "study.py", "data.py", "files.py", "generator.py", "sub/__init__.py", "sub/plots.py"}


def test_zipped_folder_runs_on_its_own(project, tmp_path):
    inputs = _zip_inputs(project)
    zip_path = tmp_path / "DOE_JANE.zip"
    build_zip(zip_path, **inputs)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(zip_path).extractall(unpacked)

    result = subprocess.run(
        [sys.executable, "01_tiny.py"], cwd=unpacked / "DOE_JANE", capture_output=True, text=True, check=True
    )
    assert result.stdout == "42\n"


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("extra_member", "complaint"),
    [
        ("DOE_JANE/train.csv", "only .py files"),
        ("DOE_JANE/01_tiny.ipynb", "notebooks"),
        ("DOE_JANE/contest_study/__pycache__/x.cpython-311.pyc", "only .py files"),
        ("DOE_JANE/__pycache__/helpers.py", "only .py files"),
        ("notes.txt", "outside DOE_JANE/"),
        ("other/01_tiny.py", "outside DOE_JANE/"),
        ("DOE_JANE/../evil.py", "not normalised"),
        ("figure.png", "outside DOE_JANE/"),
    ],
)
def test_check_zip_rejects_rule_breakers(tmp_path, extra_member, complaint):
    good = {"DOE_JANE/01_tiny.py": b"print(1)\n", "README.md": b"# hi\n", "report.pdf": b"%PDF"}
    zip_path = _write_zip(tmp_path / "bad.zip", {**good, extra_member: b"x"})
    with pytest.raises(ZipCheckError, match=complaint) as caught:
        check_zip(zip_path, name="DOE_JANE", required=["DOE_JANE/01_tiny.py"])
    assert extra_member in str(caught.value) and str(zip_path) in str(caught.value)


def test_check_zip_requires_every_twin(tmp_path):
    zip_path = _write_zip(tmp_path / "short.zip", {"DOE_JANE/01_tiny.py": b"", "README.md": b"", "report.pdf": b""})
    assert check_zip(zip_path, name="DOE_JANE", required=["DOE_JANE/01_tiny.py"]) == [
        ("DOE_JANE/01_tiny.py", 0),
        ("README.md", 0),
        ("report.pdf", 0),
    ]
    with pytest.raises(ZipCheckError, match="DOE_JANE/02_more.py: missing"):
        check_zip(zip_path, name="DOE_JANE", required=["DOE_JANE/01_tiny.py", "DOE_JANE/02_more.py"])


def test_check_zip_requires_the_report_pdf_or_html(tmp_path):
    code = {"DOE_JANE/01_tiny.py": b"", "README.md": b""}
    with pytest.raises(ZipCheckError, match="report.pdf .*missing, the report belongs in the submission"):
        check_zip(_write_zip(tmp_path / "none.zip", code), name="DOE_JANE", required=[])
    html_only = _write_zip(tmp_path / "html.zip", {**code, "report.html": b"<html></html>"})
    assert ("report.html", 13) in check_zip(html_only, name="DOE_JANE", required=[])


def test_failed_zip_build_keeps_the_previous_zip(project, tmp_path, monkeypatch):
    inputs = _zip_inputs(project)
    zip_path = tmp_path / "dist" / "DOE_JANE.zip"
    build_zip(zip_path, **inputs)
    previous = zip_path.read_bytes()

    real_write = zipfile.ZipFile.write

    def write_then_fail(self, filename, arcname=None, *args, **kwargs):
        if "contest_study" in str(arcname):
            raise OSError("disk full (simulated)")
        return real_write(self, filename, arcname, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", write_then_fail)
    with pytest.raises(OSError, match="simulated"):
        build_zip(zip_path, **inputs)

    assert zip_path.read_bytes() == previous
    assert [p.name for p in zip_path.parent.iterdir()] == ["DOE_JANE.zip"]


def test_zip_refuses_missing_inputs(project, tmp_path):
    with pytest.raises(ExportError, match="02_absent.py"):
        build_zip(
            tmp_path / "x.zip",
            name="DOE_JANE",
            twins=[project.twins_dir / "02_absent.py"],
            package_dir=project.package_dir,
            doc_files=[project.readme, _report(project)],
        )
    assert not (tmp_path / "x.zip").exists()


# --------------------------------------------------------------------------- parameters


def test_parameters_are_injected_after_the_parameters_cell_of_a_copy(project):
    notebook = _notebook("print(profile)", parameters=True)
    before = copy.deepcopy(notebook)
    values = {"profile": "smoke", "data_dir": "/data/it's here", "workdir": "/w", "seed": 7}

    injected = inject_parameters(notebook, values, name="01_tiny.ipynb")
    again = inject_parameters(injected, {**values, "seed": 8}, name="01_tiny.ipynb")

    assert notebook == before  # the user's notebook is untouched
    tags = [cell.metadata.get("tags", []) for cell in injected.cells]
    assert tags[1:3] == [["parameters"], ["injected-parameters"]]
    namespace = {}
    exec(injected.cells[2].source, namespace)
    assert {key: namespace[key] for key in values} == values
    # A second injection replaces the first instead of stacking up.
    assert [cell.metadata.get("tags", []) for cell in again.cells].count(["injected-parameters"]) == 1
    assert "seed = 8" in again.cells[2].source


def test_notebook_without_a_parameters_cell_is_refused(project):
    with pytest.raises(ExportError, match="01_tiny.ipynb: no cell tagged 'parameters'"):
        inject_parameters(_notebook("x = 1"), {"seed": 1}, name="01_tiny.ipynb")


def test_sync_gives_a_notebook_without_kernelspec_one(project, config):
    pair = _pair(project)
    sync_pair(pair, project.state_file, config)
    notebook = nbformat.read(pair.ipynb, as_version=4)
    del notebook.metadata["kernelspec"]
    nbformat.write(notebook, pair.ipynb)
    py_before = pair.py.read_bytes()

    assert "kernelspec added" in sync_pair(pair, project.state_file, config)
    assert nbformat.read(pair.ipynb, as_version=4).metadata["kernelspec"] == export.KERNELSPEC
    assert pair.py.read_bytes() == py_before
    assert sync_pair(pair, project.state_file, config) == export.SYNC_IN_SYNC


# --------------------------------------------------------------------------- execution


def _parameters(project: ProjectLayout, seed: int = 42) -> RunParameters:
    return RunParameters(profile="smoke", data_dir=project.root / "data", workdir=project.root, seed=seed)


def test_failing_notebook_is_named_and_its_partial_copy_kept(project):
    failing = project.notebooks_dir / "02_broken.ipynb"
    nbformat.write(_notebook("print('before the error')", "raise ValueError('boom in cell')", parameters=True), failing)
    before = failing.read_bytes()
    out_dir = project.root / "build" / "notebooks"

    with pytest.raises(NotebookExecutionError) as caught:
        execute_notebook(failing, out_dir, _parameters(project))

    message = str(caught.value)
    assert "02_broken.ipynb" in message and "ValueError: boom in cell" in message and "cell 5/5" in message
    partial = nbformat.read(out_dir / "02_broken.failed.ipynb", as_version=4)
    assert partial.cells[3].outputs[0]["text"] == "before the error\n"
    assert not (out_dir / "02_broken.ipynb").exists()
    assert failing.read_bytes() == before


def _write_notebooks(project: ProjectLayout, sources: dict[str, str]) -> list[NotebookPair]:
    for name, source in sources.items():
        nbformat.write(_notebook(source, parameters=True), project.notebooks_dir / f"{name}.ipynb")
    (project.notebooks_dir / "01_tiny.ipynb").unlink(missing_ok=True)
    return [_pair(project, name) for name in sources]


def _run(project, pairs, table, *, seed=42, force=False):
    keys = execution_keys(pairs, parameters=_parameters(project, seed), code_digest="code", data_fingerprint="data",
                          table=table)
    return execute_all(pairs, project, _parameters(project, seed), keys=keys, force=force, table=table)


def _stamps(project):
    return {path.name: path.stat().st_mtime_ns for path in project.executed_dir.glob("*.ipynb")}


def test_unchanged_notebooks_are_not_re_executed_and_a_change_reruns_what_depends_on_it(project, capsys):
    table = {"01": (), "02": ("01",), "03": ()}
    figure = "import pathlib\npathlib.Path(workdir, 'figures').mkdir(exist_ok=True)\n"
    pairs = _write_notebooks(project, {
        "01_first": figure + "pathlib.Path(workdir, 'figures', '01_plot.png').write_bytes(b'png')",
        "02_second": "print(seed)",
        "03_third": "print('independent')",
    })
    _run(project, pairs, table)
    first = _stamps(project)
    recorded = nbformat.read(project.executed_dir / "01_first.ipynb", as_version=4).metadata[export.RUN_METADATA_KEY]
    assert recorded["figures"] == ["01_plot.png"] and recorded["seconds"] > 0 and recorded["threads"] >= 1
    assert {"profile": "smoke", "seed": 42}.items() <= recorded.items()

    _run(project, pairs, table)  # nothing changed
    assert _stamps(project) == first
    assert capsys.readouterr().out.count("up to date") == 3

    nb = nbformat.read(pairs[0].ipynb, as_version=4)
    nb.cells[2].source += "\nprint('edited')"
    nbformat.write(nb, pairs[0].ipynb)
    _run(project, pairs, table)  # 01 changed: 01 and 02, which depends on it, run again; 03 does not
    second = _stamps(project)
    assert sorted(name for name in first if second[name] != first[name]) == ["01_first.ipynb", "02_second.ipynb"]

    (project.figures_dir / "01_plot.png").unlink()  # what a notebook wrote is gone: it runs again
    _run(project, pairs, table)
    assert _stamps(project)["01_first.ipynb"] != second["01_first.ipynb"]
    assert (project.figures_dir / "01_plot.png").is_file()

    third = _stamps(project)
    _run(project, pairs, table, force=True)
    assert all(_stamps(project)[name] != third[name] for name in third)


def test_runs_are_credited_to_the_notebook_whose_kernel_trained_them(project):
    def trains(*models):
        return (
            "import pathlib, time\nfrom contest_study.registry import Registry\n"
            "def run(workdir):\n    time.sleep(0.5)\n    return {'label_names': ['a'], 'metrics': {}}\n"
            + "".join(f"Registry(pathlib.Path(workdir, 'runs')).fetch_or_run(model={model!r}, family='cnn', "
                      "hyperparams={}, data_fingerprint='d', seed=seed, run_fn=run)\n" for model in models)
        )

    pairs = _write_notebooks(project, {"01_two_runs": trains("first", "second"), "02_one_run": trains("third")})
    _run(project, pairs, {})  # independent: both kernels train at the same time

    def runs(name):
        notebook = nbformat.read(project.executed_dir / f"{name}.ipynb", as_version=4)
        return [key.split("-")[0] for key in notebook.metadata[export.RUN_METADATA_KEY]["runs"]]

    assert sorted(runs("01_two_runs")) == ["first", "second"] and runs("02_one_run") == ["third"]


def test_a_failure_skips_its_dependents_and_the_others_still_run(project, capsys):
    table = {"01": (), "02": (), "03": ("02",), "04": ("03",), "05": ()}
    pairs = _write_notebooks(project, {
        "01_ok": "print(1)",
        "02_broken": "raise RuntimeError('broken on purpose')",
        "03_needs_02": "print(3)",
        "04_needs_03": "print(4)",
        "05_independent": "print(5)",
    })
    with pytest.raises(NotebookExecutionError) as caught:
        _run(project, pairs, table)

    message = str(caught.value)
    assert "1 notebook(s) failed, 2 skipped" in message and "RuntimeError: broken on purpose" in message
    assert "03_needs_02: skipped, depends on 02_broken" in message and "04_needs_03: skipped" in message
    assert sorted(_stamps(project)) == ["01_ok.ipynb", "02_broken.failed.ipynb", "05_independent.ipynb"]


def test_command_line_runs_syncs_and_zips_a_mini_project(project, make_contest_folder, monkeypatch, capsys):
    # The notebook records what it sees: its parameters, its environment and its working folder.
    probe = _notebook(
        "import json, os, pathlib\n"
        "seen = dict(profile=profile, data_dir=data_dir, workdir=workdir, seed=seed, cwd=os.getcwd())\n"
        "seen.update({k: os.environ.get(k) for k in ('STUDY_FORCE_RETRAIN', 'TF_NUM_INTRAOP_THREADS')})\n"
        "pathlib.Path('seen.json').write_text(json.dumps(seen))\n"
        "print(profile)",
        parameters=True,
    )
    nbformat.write(probe, project.notebooks_dir / "02_probe.ipynb")
    data_dir = make_contest_folder("contest_data")
    _point_script_at(project, monkeypatch)
    monkeypatch.setenv("STUDY_FORCE_RETRAIN", "1")  # stale shell value: must not reach the kernel
    source_before = (project.notebooks_dir / "02_probe.ipynb").read_bytes()

    status = SCRIPT.main(
        ["--profile", "smoke", "--data-dir", str(data_dir), "--notebooks", "2", "--name", "DOE_JANE", "--seed", "7"]
    )

    assert status == 0
    seen = json.loads((project.notebooks_dir / "seen.json").read_text())
    assert seen == {
        "profile": "smoke",
        "data_dir": str(data_dir),
        "workdir": str(project.root),
        "seed": 7,
        "cwd": str(project.notebooks_dir),
        "STUDY_FORCE_RETRAIN": None,
        "TF_NUM_INTRAOP_THREADS": str(os.cpu_count()),  # alone, it gets every core
    }
    executed = nbformat.read(project.executed_dir / "02_probe.ipynb", as_version=4)
    assert executed.cells[3].outputs[0]["text"] == "smoke\n"  # after the parameters and the injected cell
    assert not (project.executed_dir / "01_tiny.ipynb").exists()  # --notebooks 2 ran only the probe
    assert (project.notebooks_dir / "02_probe.ipynb").read_bytes() == source_before
    printed = capsys.readouterr().out
    assert "running 02_probe" in printed and "README.md" in printed and "deliverables:" in printed
    # The executed copy says which run made it, so the report can tell runs apart.
    assert {"profile": "smoke", "data_dir": str(data_dir), "seed": 7}.items() <= executed.metadata[
        export.RUN_METADATA_KEY].items()
    # The report is built from what ran (01_tiny did not) and goes into the zip, which passes its rules.
    report_dir = project.root / "build" / "report"
    assert (report_dir / "report.html").is_file() and (report_dir / "report.pdf").is_file()
    assert "01_tiny" in (report_dir / "report.html").read_text()  # listed as not executed
    with zipfile.ZipFile(project.root / "dist" / "DOE_JANE.zip") as archive:
        assert {"DOE_JANE/01_tiny.py", "DOE_JANE/02_probe.py", "README.md", "report.pdf", "report.html"} <= set(
            archive.namelist())
    # A missing optional piece is said, not fatal: no notebook trained a model to predict the test set with.
    assert "test predictions: not written: no run of this study" in printed
    assert "report (PDF)" in printed and "report (HTML)" in printed and "not delivered in this run:" in printed
    assert "report section 01_tiny: not executed yet" in printed

    # Again with nothing changed: nothing is executed or rebuilt, and the same gaps are reported.
    report_stamp = (report_dir / "report.pdf").stat().st_mtime_ns
    assert SCRIPT.main(
        ["--profile", "smoke", "--data-dir", str(data_dir), "--notebooks", "2", "--name", "DOE_JANE", "--seed", "7"]
    ) == 0
    printed = capsys.readouterr().out
    assert "02_probe: up to date" in printed and "report: up to date" in printed
    assert "report section 01_tiny: not executed yet" in printed
    assert (report_dir / "report.pdf").stat().st_mtime_ns == report_stamp


def _point_script_at(project, monkeypatch):
    """The script exports the repository it lives in; here, the mini-project stands in for it."""
    monkeypatch.setattr(SCRIPT, "repository_root", lambda: project.root)
    monkeypatch.setattr(SCRIPT, "default_workdir", lambda: project.root)
    monkeypatch.chdir(project.root)  # relative paths are taken from the current directory


def test_command_line_skip_execution_needs_a_report_and_no_data(project, monkeypatch, capsys):
    _point_script_at(project, monkeypatch)
    calls = []
    fake = types.ModuleType("contest_study.synthetic")
    fake.ensure_dataset = lambda path: calls.append(path) or path
    monkeypatch.setitem(sys.modules, "contest_study.synthetic", fake)

    assert SCRIPT.main(["--skip-execution", "--out", "elsewhere"]) == 1
    assert "report.pdf (or report.html without a PDF engine): missing" in capsys.readouterr().err
    assert not (project.root / "elsewhere" / "ISTRATI_LUCIAN.zip").exists()

    _report(project)  # a report of an earlier run
    assert SCRIPT.main(["--skip-execution", "--out", "elsewhere"]) == 0
    assert calls == []
    assert (project.root / "elsewhere" / "ISTRATI_LUCIAN.zip").is_file()
    assert (project.twins_dir / "01_tiny.py").is_file()


def test_default_data_dir_is_the_embedded_dataset(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("contest_study.synthetic")
    fake.ensure_dataset = lambda path: calls.append(path) or path.mkdir(parents=True) or path
    monkeypatch.setitem(sys.modules, "contest_study.synthetic", fake)

    assert export.resolve_data_dir(None, tmp_path) == (tmp_path / "data" / "embedded").resolve()
    assert calls == [tmp_path / "data" / "embedded"]


def test_missing_data_dir_is_reported(project, monkeypatch, capsys):
    _point_script_at(project, monkeypatch)
    assert SCRIPT.main(["--data-dir", "no_such_folder"]) == 1
    assert "--data-dir" in capsys.readouterr().err


def test_sync_conflict_stops_the_command_before_execution(project, monkeypatch, capsys):
    _point_script_at(project, monkeypatch)
    (project.twins_dir / "01_tiny.py").write_text("# %%\ndifferent = True\n")
    assert SCRIPT.main(["--data-dir", "."]) == 1
    err = capsys.readouterr().err
    assert "sync conflict" in err and "01_tiny.ipynb" in err and "01_tiny.py" in err
    assert not project.executed_dir.exists() and not (project.root / "dist").exists()


@pytest.mark.parametrize("bad_name", ["ISTRATI LUCIAN", "ISTRATI/LUCIAN", "", "nume.zip", "ștefan"])
def test_name_option_is_validated(bad_name, capsys):
    with pytest.raises(SystemExit) as caught:
        SCRIPT.main(["--name", bad_name, "--skip-execution"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --name" in err and "letters, digits, underscores and hyphens" in err


def test_library_entry_point_validates_the_name_too(project, tmp_path):
    with pytest.raises(ExportError, match="--name"):
        export.export_submission(project, name="a b", out_dir=tmp_path, profile="smoke", skip_execution=True)
