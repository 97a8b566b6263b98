"""The whole study on the smoke profile: the real notebooks, the real export, the real zip.

These tests run every notebook of the repository headlessly on a tiny embedded
dataset, in a scratch work folder (the repository's figures/ and runs/ are not
touched), then check what a user relies on: the zip's content, the figures, the
registry, that a second run executes and trains nothing, and that the zipped
twins run on their own from the unzipped folder.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import zipfile
from pathlib import Path

import jupytext
import numpy as np
import pytest
from nbclient import NotebookClient

from contest_study.config import SUBMISSION_NAME
from contest_study.export import RunParameters, check_zip, inject_parameters
from contest_study.registry import Registry
from contest_study.report import pdf_prose_words
from contest_study.submission_predictions import submission_run
from contest_study.synthetic import generate_dataset

REPOSITORY = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPOSITORY / "notebooks").glob("[0-9][0-9]_*.ipynb"))

_spec = importlib.util.spec_from_file_location("export_submission", REPOSITORY / "scripts" / "export_submission.py")
SCRIPT = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SCRIPT)


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_every_notebook_is_in_sync_with_its_py_twin(ipynb):
    twin = REPOSITORY / SUBMISSION_NAME / f"{ipynb.stem}.py"
    assert twin.is_file(), f"{ipynb.name} has no twin {twin}"
    assert _cells(jupytext.read(ipynb)) == _cells(jupytext.read(twin)), f"{ipynb.name} and {twin.name} differ"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke export of the real repository on a tiny embedded dataset."""
    root = tmp_path_factory.mktemp("smoke")
    data_dir = generate_dataset(root / "data", n_labelled=150, n_test=30, seed=5)
    workdir, out_dir = root / "work", root / "dist"
    status = SCRIPT.main(
        ["--profile", "smoke", "--data-dir", str(data_dir), "--workdir", str(workdir), "--out", str(out_dir)]
    )
    assert status == 0
    return {"data_dir": Path(data_dir), "workdir": workdir, "out": out_dir, "zip": out_dir / f"{SUBMISSION_NAME}.zip"}


def test_zip_holds_the_py_twins_and_the_package_only(smoke_run):
    with zipfile.ZipFile(smoke_run["zip"]) as archive:
        names = archive.namelist()
    code = [name for name in names if name.startswith(f"{SUBMISSION_NAME}/")]
    assert {f"{SUBMISSION_NAME}/{path.stem}.py" for path in NOTEBOOKS} <= set(code)
    assert f"{SUBMISSION_NAME}/contest_study/data.py" in code
    assert all(name.endswith(".py") for name in code)
    assert f"{SUBMISSION_NAME}/contest_study/export.py" not in code  # the twins never need the export machinery
    assert set(names) - set(code) == {"README.md", "report.pdf", "report.html"}
    # The zip as written passes the submission rules with the report inside.
    check_zip(smoke_run["zip"], name=SUBMISSION_NAME, required=["README.md", "report.pdf", "report.html", *code])


def test_figures_and_registry_entries_are_written(smoke_run):
    figures = {path.name for path in (smoke_run["workdir"] / "figures").glob("*.png")}
    assert {
        "01_label_balance.png",
        "02_cnn_per_class_ap.png",
        "04_fully_connected_per_class_ap.png",
        "06_denoising_before_after.png",
        "07_transfer_learning_per_class_ap.png",
        "08_best_per_family_per_class_ap.png",
        "08_best_per_family_precision_recall.png",
        "08_all_runs_per_label_ap.png",
        "08_best_prediction_grid.png",
    } <= figures
    records = [json.loads(path.read_text()) for path in (smoke_run["workdir"] / "runs").glob("*/record.json")]
    families = {record["family"] for record in records}
    assert {"cnn", "rnn", "fully_connected", "classical"} <= families
    for record in records:
        assert record["metrics"]["holdout"]["all"]["map"] is not None
        assert record["oracle"] is not None  # the embedded dataset has an oracle


def test_report_holds_every_notebook_and_three_pages_of_prose(smoke_run):
    report_dir = smoke_run["workdir"] / "build" / "report"
    html = (report_dir / "report.html").read_text()
    for ipynb in NOTEBOOKS:
        assert f'id="nb-{ipynb.stem}"' in html, f"{ipynb.stem} is not in the report"
    assert "Not in this report" not in html
    # At least 3 pages of prose: 1,500 words of the PDF's text outside tables and printed output.
    words = pdf_prose_words(report_dir / "report.pdf", html)
    assert words >= 1500, f"the smoke report has {words} words of prose"


def test_summary_notebook_ends_with_the_insight(smoke_run):
    executed = (smoke_run["workdir"] / "build" / "notebooks" / "08_summary.ipynb").read_text()
    assert "The most interesting insight" in executed and "What did not work" in executed


def test_test_set_predictions_come_from_the_final_model(smoke_run):
    def read(path):
        with open(path, newline="") as handle:
            return list(csv.reader(handle))

    probabilities = read(smoke_run["out"] / f"{SUBMISSION_NAME}_test_probabilities.csv")
    labels = read(smoke_run["out"] / f"{SUBMISSION_NAME}_test_labels.csv")
    test_ids = [row[0] for row in read(smoke_run["data_dir"] / "test.csv")[1:]]
    header = read(smoke_run["data_dir"] / "train.csv")[0]
    assert probabilities[0] == labels[0] == header  # image_id, then the labels in the data's order
    assert [row[0] for row in probabilities[1:]] == [row[0] for row in labels[1:]] == test_ids
    # Every run of the smoke registry is of this study: its final model, else the best by validation mAP.
    best, _ = submission_run(Registry(smoke_run["workdir"] / "runs").records())
    scores = np.array([row[1:] for row in probabilities[1:]], dtype=float)
    assert np.allclose(scores, best.predictions()["test_score"], atol=1e-6)
    thresholds = np.array([best.thresholds[label] for label in header[1:]])
    expected = (best.predictions()["test_score"] >= thresholds).astype(int)
    assert np.array_equal(np.array([row[1:] for row in labels[1:]], dtype=int), expected)


def test_second_run_executes_and_trains_nothing(smoke_run, capsys):
    def stamps(pattern):
        return {path: path.stat().st_mtime_ns for path in smoke_run["workdir"].glob(pattern)}

    records, executed = stamps("runs/*/record.json"), stamps("build/notebooks/*.ipynb")
    capsys.readouterr()
    status = SCRIPT.main(
        ["--profile", "smoke", "--data-dir", str(smoke_run["data_dir"]), "--workdir", str(smoke_run["workdir"]),
         "--out", str(smoke_run["zip"].parent)]
    )
    assert status == 0
    assert capsys.readouterr().out.count("up to date (nothing it reads changed)") == len(NOTEBOOKS)
    assert stamps("runs/*/record.json") == records
    assert stamps("build/notebooks/*.ipynb") == executed


def test_zipped_twin_runs_from_the_unzipped_folder(smoke_run, tmp_path):
    with zipfile.ZipFile(smoke_run["zip"]) as archive:
        archive.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / SUBMISSION_NAME
    parameters = RunParameters(profile="smoke", data_dir=smoke_run["data_dir"], workdir=tmp_path / "work", seed=42)
    notebook = inject_parameters(jupytext.read(folder / "01_data_analysis.py"), parameters.cell_values(), name="01")
    # The unzipped folder comes first on the kernel's path: its own contest_study is imported, not the
    # installed one (asserted), so a module missing from the zip fails here.
    check = f"import contest_study\nassert contest_study.__file__.startswith({str(folder)!r}), contest_study.__file__"
    notebook.cells.append(jupytext.reads(check, fmt="py:percent").cells[0])
    client = NotebookClient(notebook, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, "PYTHONPATH": str(folder)})
    assert (tmp_path / "work" / "figures" / "01_label_balance.png").is_file()
