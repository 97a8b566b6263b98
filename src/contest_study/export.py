"""Build the submission: sync the notebook pairs, run them, predict the test set, report, zip.

1. **Sync** each ``notebooks/NN_name.ipynb`` with its jupytext twin ``ISTRATI_LUCIAN/NN_name.py``
   without ever overwriting an edit (:func:`sync_pair`).
2. **Execute** them with nbclient, two at a time in dependency order (:data:`NOTEBOOK_DEPENDENCIES`),
   the run's parameters injected after each ``parameters`` cell, papermill's way; a notebook whose
   inputs did not change keeps its executed copy in ``build/notebooks/`` (:func:`execute_all`).
3. **Predict** the test set, **report**, and **zip** the twins with the package modules they import.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import posixpath
import re
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat
import zmq
from jupytext.combine import combine_inputs_with_outputs
from jupytext.config import JupytextConfiguration, load_jupytext_configuration_file
from jupytext.formats import long_form_multiple_formats
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from contest_study.config import SUBMISSION_NAME
from contest_study.files import atomic_output, write_text_atomic
from contest_study.registry import FORCE_ENV
from contest_study.report import HTML_NAME, PDF_NAME, RUN_METADATA_KEY, ReportError, build_report, describe_run

KERNEL_NAME = "python3"
# Written into every notebook that lacks one: the percent twins carry no header
# (notebook_metadata_filter = "-all"), and without it JupyterLab asks which kernel to use.
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
TWIN_GLOB = "[0-9][0-9]_*.py"

# Papermill's convention: the export's values go in a cell tagged INJECTED_TAG placed right
# after the cell tagged PARAMETERS_TAG, in the copy it executes (never in the user's notebook).
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"

# What each notebook reads of the others (registry runs, figures), by number: it starts once
# they have run, and its executed copy is reused only while theirs are. Every notebook reads
# the dataset, which the export generates before any of them starts.
NOTEBOOK_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "01": (),
    "02": (),
    "03": (),
    "04": (),
    "05": ("02", "03", "04"),  # tunes and retrains the best runs of 02-04, read from the registry
    "06": (),
    "07": ("06",),  # the autoencoder's encoder (pretrained in 06) against the same network from scratch
    "08": ("01", "02", "03", "04", "05", "06", "07"),  # the whole registry
}
# Notebooks executed at once; each kernel gets an equal share of the cores.
PARALLEL_NOTEBOOKS = 2
# Thread-count variables every kernel gets (TensorFlow's pools, and OpenMP/BLAS for scikit-learn).
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")

# Files allowed at the zip root, beside the <NAME>/ code folder.
ROOT_DOC_FILES = ("README.md", PDF_NAME, HTML_NAME)
# Never in a submission, wherever they are: data, weights, notebooks, bytecode.
FORBIDDEN_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz", ".npy", ".csv", ".h5", ".keras", ".ipynb", ".pyc", ".pkl")

# Beside the report: a hash of what it was built from, so an unchanged report is not rebuilt.
REPORT_STAMP = "inputs.json"

# Cells running longer than this get their own progress line.
SLOW_CELL_SECONDS = 30.0
# Tail of a failing cell's traceback shown in the error (the partial notebook has it all).
ERROR_TAIL_LINES = 40
# How often the scheduler looks at the registry's lock files (which kernel trains which run).
LOCK_POLL_SECONDS = 0.1

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# FAMILY_FIRST: it becomes a folder and a file name, so nothing a shell or zip tool could misread.
_SUBMISSION_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
SUBMISSION_NAME_RULE = f"use letters, digits, underscores and hyphens only (FAMILY_FIRST, e.g. {SUBMISSION_NAME})"

SYNC_IN_SYNC = "in sync"
SYNC_RECORDED = "same content, sync recorded"
SYNC_PY_UPDATED = "py updated from ipynb"
SYNC_IPYNB_UPDATED = "ipynb updated from py (outputs kept)"
SYNC_PY_CREATED = "py created from ipynb"
SYNC_IPYNB_CREATED = "ipynb created from py"
SYNC_KERNELSPEC_ADDED = "kernelspec added to the ipynb"


class ExportError(RuntimeError):
    """A problem the user must fix; the message names the file or option at fault."""


class SyncConflictError(ExportError):
    """Both files of a notebook pair were edited independently."""


class NotebookExecutionError(ExportError):
    """A notebook cell failed (or the kernel died) during headless execution."""


class ZipCheckError(ExportError):
    """The submission zip breaks one of the submission rules."""


@dataclass(frozen=True)
class ProjectLayout:
    """Where the export reads (``root``: the repository) and writes (``workdir``).

    ``workdir`` receives the executed notebooks and the report, and is the notebooks'
    ``workdir`` parameter (data, cache, registry, figures); it is the repository itself
    unless told otherwise (tests run the study in a scratch folder).
    """

    root: Path
    workdir: Path | None = None

    @property
    def output_root(self) -> Path:
        return self.workdir or self.root

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def twins_dir(self) -> Path:
        # Fixed by jupytext.toml, whatever --name the zip gets.
        return self.root / SUBMISSION_NAME

    @property
    def package_dir(self) -> Path:
        return self.root / "src" / "contest_study"

    @property
    def jupytext_config_file(self) -> Path:
        return self.root / "jupytext.toml"

    @property
    def state_file(self) -> Path:
        return self.root / ".sync-state.json"

    @property
    def executed_dir(self) -> Path:
        return self.output_root / "build" / "notebooks"

    @property
    def readme(self) -> Path:
        return self.root / "README.md"

    @property
    def report_dir(self) -> Path:
        return self.output_root / "build" / "report"

    @property
    def report_files(self) -> tuple[Path, ...]:
        return (self.report_dir / PDF_NAME, self.report_dir / HTML_NAME)

    @property
    def runs_dir(self) -> Path:
        return self.output_root / "runs"

    @property
    def figures_dir(self) -> Path:
        return self.output_root / "figures"

    @property
    def cache_dir(self) -> Path:
        return self.output_root / ".cache"


@dataclass(frozen=True)
class NotebookPair:
    """A notebook and its jupytext twin; either file may not exist yet."""

    name: str  # "01_data_analysis"
    ipynb: Path
    py: Path


@dataclass(frozen=True)
class RunParameters:
    """The values injected into every notebook's parameters cell (see NOTEBOOK_HEAD)."""

    profile: str
    data_dir: Path
    workdir: Path
    seed: int = 42

    def cell_values(self) -> dict[str, object]:
        return {"profile": self.profile, "data_dir": str(self.data_dir), "workdir": str(self.workdir), "seed": self.seed}

    def identity(self) -> dict[str, object]:
        """What tells the runs apart in an executed copy's metadata (the report checks it)."""
        return {"profile": self.profile, "data_dir": str(self.data_dir), "seed": self.seed}


@dataclass(frozen=True)
class Deliverables:
    """Where everything the export made is (``missing``: what it could not make, and why)."""

    zip_path: Path
    zip_members: list[tuple[str, int]]
    executed: list[Path] = field(default_factory=list)
    twins: list[Path] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    predictions: object | None = None  # contest_study.submission_predictions.TestPredictions
    figures_dir: Path | None = None
    executed_dir: Path | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- files


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def _say(message: str) -> None:
    print(message, flush=True)


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic write that leaves the file (and its mtime) alone when nothing changes."""
    if not text.endswith("\n"):
        text += "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomic(path, text)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when below it (shorter messages), else absolute."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- jupytext


def load_jupytext_config(config_file: Path) -> JupytextConfiguration:
    """Read jupytext.toml: its filters decide what the .py twins look like."""
    if not config_file.is_file():
        raise ExportError(f"{config_file}: jupytext configuration not found (it pairs the notebooks with their .py twins)")
    return load_jupytext_configuration_file(str(config_file))


def twin_format(config: JupytextConfiguration) -> dict:
    """The text format of the .py twins declared in the jupytext config (e.g. py:percent)."""
    for paired in config.formats or []:
        for fmt in long_form_multiple_formats(paired):
            if fmt.get("extension") == ".py":
                return {key: value for key, value in fmt.items() if key in ("extension", "format_name")}
    raise ExportError(f"jupytext configuration pairs no .py format (formats = {config.formats!r})")


def _read_ipynb(path: Path) -> nbformat.NotebookNode:
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several unrelated types for bad JSON / schema
        raise ExportError(f"{path}: not a readable notebook ({err})") from err


def _read_twin(path: Path, fmt: dict, config: JupytextConfiguration) -> nbformat.NotebookNode:
    try:
        return jupytext.read(path, fmt=fmt, config=config)
    except Exception as err:
        raise ExportError(f"{path}: jupytext cannot read it as {fmt.get('format_name', 'py')} ({err})") from err


def _cells_signature(nb: nbformat.NotebookNode, fmt: dict, config: JupytextConfiguration) -> list[tuple]:
    """What the .py twin keeps of a notebook: cell types, sources and tags.

    Both sides go through the same jupytext text round trip, so differences
    that the format cannot represent (trailing blank lines, outputs, ids) vanish.
    """
    text = jupytext.writes(copy.deepcopy(nb), fmt=fmt, config=config)
    normalised = jupytext.reads(text, fmt=fmt, config=config)
    return [(cell.cell_type, cell.source, tuple(cell.metadata.get("tags", ()))) for cell in normalised.cells]


def _py_text_from_ipynb(pair: NotebookPair, fmt: dict, config: JupytextConfiguration) -> str:
    return jupytext.writes(_read_ipynb(pair.ipynb), fmt=fmt, config=config)


def _ipynb_text_from_py(pair: NotebookPair, fmt: dict, config: JupytextConfiguration) -> str:
    notebook = _read_twin(pair.py, fmt, config)
    if pair.ipynb.exists():
        # As `jupytext --update`: text from the .py, outputs and metadata from the ipynb.
        notebook = combine_inputs_with_outputs(notebook, _read_ipynb(pair.ipynb), fmt=fmt)
    notebook.metadata.setdefault("kernelspec", dict(KERNELSPEC))
    return jupytext.writes(notebook, fmt="ipynb")


def _add_missing_kernelspec(ipynb: Path) -> bool:
    """Give ``ipynb`` the study's kernelspec if it has none; True when it was written."""
    notebook = _read_ipynb(ipynb)
    if notebook.metadata.get("kernelspec"):
        return False
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    write_text_atomic(ipynb, nbformat.writes(notebook) + "\n")
    return True


# --------------------------------------------------------------------------- sync


def discover_pairs(notebooks_dir: Path, twins_dir: Path) -> list[NotebookPair]:
    """Every NN_name notebook or twin, sorted; the other file of a pair may be missing."""
    names = {path.stem for path in notebooks_dir.glob(NOTEBOOK_GLOB)}
    names |= {path.stem for path in twins_dir.glob(TWIN_GLOB)}
    return [NotebookPair(name, notebooks_dir / f"{name}.ipynb", twins_dir / f"{name}.py") for name in sorted(names)]


def _state_key(path: Path, state_file: Path) -> str:
    return _display(path, state_file.parent)


def _load_state(state_file: Path) -> dict:
    if not state_file.exists():
        return {"version": 1, "pairs": {}}
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if not isinstance(state.get("pairs"), dict):
            raise ValueError("no 'pairs' mapping")
    except ValueError as err:
        raise ExportError(
            f"{state_file}: unreadable sync state ({err}); delete it: the next sync then records "
            "pairs whose two files agree and reports the others as conflicts"
        ) from err
    return state


def sync_pair(pair: NotebookPair, state_file: Path, config: JupytextConfiguration) -> str:
    """Bring the two files of ``pair`` into agreement without losing an edit; return what was done.

    Rules, with the sha256 of both files recorded in ``state_file`` at the last sync:

    - one file missing: create it from the other;
    - an ipynb without a kernelspec gets the study's (JupyterLab would ask for one);
    - neither changed since the last sync: nothing to do;
    - only one changed: rewrite the other from it (the ipynb keeps its outputs);
    - both changed, or no sync recorded yet: if they hold the same notebook (same
      cells once converted by jupytext, e.g. JupyterLab saved both) just record
      the state; otherwise raise :class:`SyncConflictError` and write nothing.
    """
    fmt = twin_format(config)
    state = _load_state(state_file)
    key = _state_key(pair.ipynb, state_file)
    recorded = state["pairs"].get(key)
    if recorded is not None and recorded.get("py") != _state_key(pair.py, state_file):
        recorded = None  # the record is about another twin (jupytext.toml changed)
    ipynb_hash, py_hash = _sha256(pair.ipynb), _sha256(pair.py)

    if ipynb_hash is None and py_hash is None:
        raise ExportError(f"neither {pair.ipynb} nor {pair.py} exists")
    if py_hash is None:
        _write_if_changed(pair.py, _py_text_from_ipynb(pair, fmt, config))
        action = SYNC_PY_CREATED
    elif ipynb_hash is None:
        _write_if_changed(pair.ipynb, _ipynb_text_from_py(pair, fmt, config))
        action = SYNC_IPYNB_CREATED
    else:
        ipynb_changed = recorded is None or recorded.get("ipynb_sha256") != ipynb_hash
        py_changed = recorded is None or recorded.get("py_sha256") != py_hash
        if not ipynb_changed and not py_changed:
            action = SYNC_IN_SYNC
        elif ipynb_changed and not py_changed:
            _write_if_changed(pair.py, _py_text_from_ipynb(pair, fmt, config))
            action = SYNC_PY_UPDATED
        elif py_changed and not ipynb_changed:
            _write_if_changed(pair.ipynb, _ipynb_text_from_py(pair, fmt, config))
            action = SYNC_IPYNB_UPDATED
        elif _cells_signature(_read_ipynb(pair.ipynb), fmt, config) == _cells_signature(
            _read_twin(pair.py, fmt, config), fmt, config
        ):
            action = SYNC_RECORDED
        else:
            raise SyncConflictError(_conflict_message(pair, state_file, first_sync=recorded is None))

    if _add_missing_kernelspec(pair.ipynb):
        action = SYNC_KERNELSPEC_ADDED if action == SYNC_IN_SYNC else f"{action}, kernelspec added"
    elif action == SYNC_IN_SYNC:
        return action
    state["pairs"][key] = {
        "ipynb_sha256": _sha256(pair.ipynb),
        "py": _state_key(pair.py, state_file),
        "py_sha256": _sha256(pair.py),
    }
    write_text_atomic(state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")
    return action


def _conflict_message(pair: NotebookPair, state_file: Path, *, first_sync: bool) -> str:
    why = (
        f"differ and no sync of them is recorded yet in {state_file}"
        if first_sync
        else f"were both edited since their last sync (recorded in {state_file})"
    )
    return (
        f"sync conflict: {pair.ipynb} and {pair.py} {why}, and they no longer hold the same cells; "
        "neither file was overwritten. To resolve, keep the version you want and delete (or rename) "
        "the other one, then rerun (the missing file is recreated from the kept one); or merge by hand, "
        f"e.g. `jupytext --sync {pair.ipynb}` (which keeps the most recently modified file)."
    )


def sync_all(layout: ProjectLayout, config: JupytextConfiguration | None = None) -> list[tuple[NotebookPair, str]]:
    """Sync every pair of the project; stop at the first conflict (earlier pairs stay synced)."""
    config = config or load_jupytext_config(layout.jupytext_config_file)
    pairs = discover_pairs(layout.notebooks_dir, layout.twins_dir)
    if not pairs:
        raise ExportError(f"no notebook found: expected {layout.notebooks_dir}/{NOTEBOOK_GLOB} or {layout.twins_dir}/{TWIN_GLOB}")
    results = []
    for pair in pairs:
        action = sync_pair(pair, layout.state_file, config)
        _say(f"sync {pair.name}: {action}")
        results.append((pair, action))
    return results


def select_notebooks(pairs: Sequence[NotebookPair], wanted: Sequence[str] | None) -> list[NotebookPair]:
    """The pairs named in ``wanted`` (numbers like ``3``/``03`` or names with or without extension)."""
    if not wanted:
        return list(pairs)
    selected = []
    for token in wanted:
        stem = Path(token).name.removesuffix(".ipynb").removesuffix(".py")
        matches = [
            pair
            for pair in pairs
            if (stem.isdigit() and int(stem) == int(pair.name[:2])) or stem == pair.name
        ]
        if not matches:
            raise ExportError(
                f"--notebooks: no notebook matches {token!r}; available: {', '.join(pair.name for pair in pairs)}"
            )
        selected.extend(match for match in matches if match not in selected)
    return sorted(selected, key=lambda pair: pair.name)


# --------------------------------------------------------------------------- parameters


def inject_parameters(notebook: nbformat.NotebookNode, values: Mapping[str, object], *, name: str) -> nbformat.NotebookNode:
    """A copy of ``notebook`` with ``values`` assigned in a cell right after its ``parameters`` cell.

    An ``injected-parameters`` cell left by an earlier injection is replaced. A notebook
    without a ``parameters`` cell is refused: it would run on its own defaults instead.
    """
    notebook = copy.deepcopy(notebook)
    notebook.cells = [cell for cell in notebook.cells if INJECTED_TAG not in cell.metadata.get("tags", ())]
    index = next(
        (number for number, cell in enumerate(notebook.cells) if PARAMETERS_TAG in cell.metadata.get("tags", ())), None
    )
    if index is None:
        raise ExportError(
            f"{name}: no cell tagged '{PARAMETERS_TAG}', so the run's profile, data folder, workdir and seed "
            "cannot be passed to it; tag the cell that sets them (see any other notebook of the study)"
        )
    injected = nbformat.v4.new_code_cell("# Parameters\n" + "\n".join(f"{key} = {value!r}" for key, value in values.items()))
    injected.metadata["tags"] = [INJECTED_TAG]
    notebook.cells.insert(index + 1, injected)
    return notebook


# --------------------------------------------------------------------------- what a notebook depends on


def dependencies(names: Sequence[str], table: Mapping[str, Sequence[str]] = NOTEBOOK_DEPENDENCIES) -> dict[str, list[str]]:
    """For each notebook of ``names``, the notebooks of ``names`` it depends on (``table`` is by number)."""
    by_number = {name[:2]: name for name in names}
    return {name: [by_number[number] for number in table.get(name[:2], ()) if number in by_number] for name in names}


def package_digest(package_dir: Path) -> str:
    """sha256 of every module of the package (path and content): any code change re-runs the notebooks."""
    digest = hashlib.sha256()
    for module in sorted(package_dir.rglob("*.py")):
        relative = module.relative_to(package_dir).as_posix()
        if "__pycache__" in relative:
            continue
        digest.update(relative.encode() + b"\0" + module.read_bytes() + b"\0")
    return digest.hexdigest()


def _input_cells(notebook: nbformat.NotebookNode) -> list[list]:
    return [[cell.cell_type, cell.source, list(cell.metadata.get("tags", ()))] for cell in notebook.cells]


def execution_keys(
    pairs: Sequence[NotebookPair],
    *,
    parameters: RunParameters,
    code_digest: str,
    data_fingerprint: str,
    table: Mapping[str, Sequence[str]] = NOTEBOOK_DEPENDENCIES,
) -> dict[str, str]:
    """The key of each notebook's executed copy: a hash of all it reads.

    Its cells, the package's code, the injected parameters, the data fingerprint and
    the keys of the notebooks it depends on (so a change upstream re-runs it too).
    """
    upstream = dependencies([pair.name for pair in pairs], table)
    keys: dict[str, str] = {}
    for pair in sorted(pairs, key=lambda pair: pair.name):  # numbers order them: dependencies come first
        inputs = {
            "cells": _input_cells(_read_ipynb(pair.ipynb)),
            "code": code_digest,
            "parameters": parameters.cell_values(),
            "data": data_fingerprint,
            "upstream": {name: keys[name] for name in upstream[pair.name]},
        }
        keys[pair.name] = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    return keys


def up_to_date(executed: Path, key: str, layout: ProjectLayout) -> bool:
    """Whether the executed copy ``executed`` was made with ``key`` and what it wrote is still there."""
    try:
        recorded = _read_ipynb(executed).metadata.get(RUN_METADATA_KEY) or {}
    except ExportError:
        return False
    if recorded.get("key") != key:
        return False
    runs = [layout.runs_dir / run / "record.json" for run in recorded.get("runs", [])]
    figures = [layout.figures_dir / figure for figure in recorded.get("figures", [])]
    return all(path.is_file() for path in [*runs, *figures])


# --------------------------------------------------------------------------- execution


def _failure_summary(err: Exception) -> str:
    if isinstance(err, CellExecutionError):
        headline = f"{err.ename}: {err.evalue}"
        details = _ANSI_ESCAPE.sub("", str(err)).rstrip().splitlines()[-ERROR_TAIL_LINES:]
        return headline + "\n" + "\n".join(details)
    return f"{type(err).__name__}: {err}"


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` and of its finished children (Linux /proc), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces): utime, stime, cutime, cstime are 14-17.
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Execution:
    """One notebook's kernel as the scheduler sees it: when it ran, its pid, its CPU time."""

    name: str
    started: float = 0.0  # time.time(): comparable with file modification times
    finished: float | None = None
    pid: int | None = None
    cpu_seconds: float | None = None


def kernel_environment(*, threads: int, force_retrain: bool) -> dict[str, str]:
    """The kernel's environment: ours, without a stale force flag, with its share of the cores."""
    env = {name: value for name, value in os.environ.items() if name != FORCE_ENV}
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    # TensorFlow's C++ start-up notices would otherwise flood the terminal once per notebook.
    env["TF_CPP_MIN_LOG_LEVEL"] = "1"
    if force_retrain:
        env[FORCE_ENV] = "1"
    return env


def execute_notebook(
    ipynb: Path,
    out_dir: Path,
    parameters: RunParameters,
    *,
    env: Mapping[str, str] | None = None,
    metadata: Mapping[str, object] | None = None,
    execution: Execution | None = None,
    kernel_name: str = KERNEL_NAME,
    cell_timeout: int | None = None,
) -> Path:
    """Run a copy of ``ipynb`` with ``parameters`` injected, in a fresh kernel (cwd: its folder).

    The executed copy goes to ``out_dir`` with the run's identity and ``metadata`` in its
    notebook metadata; ``ipynb`` itself is not modified. On failure the partial copy goes
    to ``NN_name.failed.ipynb`` and :class:`NotebookExecutionError` names the notebook,
    the cell and the error. ``execution`` receives the kernel's pid and CPU time.
    """
    notebook = inject_parameters(_read_ipynb(ipynb), parameters.cell_values(), name=ipynb.name)
    execution = execution or Execution(ipynb.stem)
    executed_path = out_dir / ipynb.name
    failed_path = out_dir / f"{ipynb.stem}.failed.ipynb"
    current = {"index": None, "started": 0.0}

    def kernel_started(**_):
        execution.pid = getattr(client.km.provisioner, "pid", None)

    def cell_starts(cell, cell_index):
        current.update(index=cell_index, started=time.monotonic())

    def cell_done(cell, cell_index, execute_reply):
        if execution.pid is not None:  # read while the kernel lives: it is shut down after the last cell
            execution.cpu_seconds = process_cpu_seconds(execution.pid)
        elapsed = time.monotonic() - current["started"]
        if elapsed >= SLOW_CELL_SECONDS:
            _say(f"    {ipynb.stem}: cell {cell_index + 1}/{len(notebook.cells)} took {format_duration(elapsed)}")

    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=cell_timeout,
        resources={"metadata": {"path": str(ipynb.parent)}},
        on_notebook_start=kernel_started,
        on_cell_execute=cell_starts,
        on_cell_executed=cell_done,
    )
    try:
        # "auto": encrypt the kernel's local sockets when the kernelspec supports it
        # (it also spares every notebook ipykernel's plain-TCP warning).
        client.execute(env=dict(env or os.environ), transport_encryption="auto" if zmq.has("curve") else "disabled")
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        write_text_atomic(failed_path, nbformat.writes(client.nb) + "\n")
        cell_number = "?" if current["index"] is None else current["index"] + 1
        raise NotebookExecutionError(
            f"notebook {ipynb.name} failed at cell {cell_number}/{len(notebook.cells)}: {_failure_summary(err)}\n"
            f"partial executed copy: {failed_path}"
        ) from err
    client.nb.metadata[RUN_METADATA_KEY] = {**parameters.identity(), **(metadata or {})}
    write_text_atomic(executed_path, nbformat.writes(client.nb) + "\n")
    failed_path.unlink(missing_ok=True)  # a stale failure from an earlier run would mislead
    return executed_path


class RunWatcher:
    """Which kernel created which registry run.

    The registry's lock file of a run in training names the process training it: the
    scheduler polls them. A run finished too fast to be seen locked goes to the only
    notebook running when its record appeared, if there was only one.
    """

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.before = self._records()
        self.trained_by: dict[str, int] = {}

    def _records(self) -> dict[str, float]:
        return {path.parent.name: path.stat().st_mtime for path in self.runs_dir.glob("*/record.json")}

    def poll(self) -> None:
        for lock in self.runs_dir.glob(".locks/*.lock"):
            try:
                owner = json.loads(lock.read_text())
            except (OSError, ValueError):
                continue  # released meanwhile, or being written
            if isinstance(owner, dict) and isinstance(owner.get("pid"), int):
                self.trained_by.setdefault(lock.stem, owner["pid"])

    def created_by(self, execution: Execution, executions: Iterable[Execution]) -> list[str]:
        """The keys of the runs ``execution``'s kernel finished (``executions``: every kernel so far)."""
        self.poll()
        now = time.time()
        created = []
        for key, finished in self._records().items():
            if self.before.get(key) == finished:
                continue
            if key in self.trained_by:
                if self.trained_by[key] == execution.pid:
                    created.append(key)
                continue
            running = [other for other in executions if other.started <= finished <= (other.finished or now)]
            if running == [execution]:
                created.append(key)
        return sorted(created)


def _figures_of(name: str, figures_dir: Path) -> list[str]:
    """The figures notebook ``name`` writes: named after its number (``02_*.png``)."""
    return sorted(path.name for path in figures_dir.glob(f"{name[:2]}_*.png"))


def execute_all(
    pairs: Sequence[NotebookPair],
    layout: ProjectLayout,
    parameters: RunParameters,
    *,
    keys: Mapping[str, str],
    force: bool = False,
    parallel: int = PARALLEL_NOTEBOOKS,
    table: Mapping[str, Sequence[str]] = NOTEBOOK_DEPENDENCIES,
    cpus: int | None = None,
) -> list[Path]:
    """Execute ``pairs`` ``parallel`` at a time, each once the notebooks it depends on have run.

    A notebook whose executed copy was made with its key (:func:`execution_keys`) is not
    re-executed, unless ``force``. When one fails, the others running finish, the
    notebooks depending on it are skipped, the independent ones still run, and
    :class:`NotebookExecutionError` then lists what failed and what was skipped.
    """
    names = [pair.name for pair in pairs]
    by_name = {pair.name: pair for pair in pairs}
    upstream = dependencies(names, table)
    cpus = cpus or os.cpu_count() or 1
    watcher = RunWatcher(layout.runs_dir)
    waiting = list(names)
    running: dict[Future, Execution] = {}
    executions: list[Execution] = []
    done: set[str] = set()
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    executed: list[Path] = []
    started = time.monotonic()

    def progress(name: str) -> str:
        return f"[{len(done) + len(failures) + len(skipped)}/{len(names)}] {name}"

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        while waiting or running:
            before = len(waiting)
            for name in list(waiting):
                blocked = [dep for dep in upstream[name] if dep in failures or dep in skipped]
                if blocked:
                    waiting.remove(name)
                    skipped[name] = f"depends on {', '.join(blocked)}, which did not run"
                    _say(f"{progress(name)}: skipped ({skipped[name]})")
                    continue
                if any(dep not in done for dep in upstream[name]) or len(running) >= parallel:
                    continue
                waiting.remove(name)
                executed_path = layout.executed_dir / f"{name}.ipynb"
                if not force and up_to_date(executed_path, keys[name], layout):
                    done.add(name)
                    executed.append(executed_path)
                    _say(f"{progress(name)}: up to date (nothing it reads changed), not re-executed")
                    continue
                others = len(running) + sum(
                    all(dep in done for dep in upstream[other]) for other in waiting
                )
                threads = max(1, cpus // min(parallel, others + 1))
                execution = Execution(name, started=time.time())
                executions.append(execution)
                _say(f"running {name} (profile {parameters.profile}, {threads} thread{'s' * (threads > 1)}) ...")
                running[pool.submit(
                    execute_notebook,
                    by_name[name].ipynb,
                    layout.executed_dir,
                    parameters,
                    env=kernel_environment(threads=threads, force_retrain=force),
                    metadata={"key": keys[name], "threads": threads},
                    execution=execution,
                )] = execution
            if not running:
                if len(waiting) == before:
                    raise ExportError(f"notebook dependencies form a cycle among {', '.join(waiting)}")
                continue
            finished, _ = wait(running, timeout=LOCK_POLL_SECONDS, return_when=FIRST_COMPLETED)
            watcher.poll()
            for future in finished:
                execution = running.pop(future)
                execution.finished = time.time()
                seconds = execution.finished - execution.started
                try:
                    path = future.result()
                except ExportError as error:
                    failures[execution.name] = str(error)
                    _say(f"{progress(execution.name)}: FAILED after {format_duration(seconds)}: {error}")
                    continue
                _record_execution(
                    path,
                    seconds=seconds,
                    cpu_seconds=execution.cpu_seconds,
                    runs=watcher.created_by(execution, executions),
                    figures=_figures_of(execution.name, layout.figures_dir),
                )
                done.add(execution.name)
                executed.append(path)
                _say(
                    f"{progress(execution.name)}: done in {format_duration(seconds)} "
                    f"(total {format_duration(time.monotonic() - started)})"
                )
    if failures:
        lines = [f"{name}: {why}" for name, why in failures.items()]
        lines += [f"{name}: skipped, {why}" for name, why in skipped.items()]
        raise NotebookExecutionError(
            f"{len(failures)} notebook(s) failed, {len(skipped)} skipped:\n" + "\n".join(lines)
        )
    return sorted(executed)


def _record_execution(path: Path, **facts) -> None:
    """Add what the scheduler measured to the executed copy's run metadata."""
    notebook = _read_ipynb(path)
    notebook.metadata[RUN_METADATA_KEY].update(facts)
    write_text_atomic(path, nbformat.writes(notebook) + "\n")


def data_fingerprint(data_dir: Path, cache_dir: Path, seed: int) -> str:
    """The fingerprint the notebooks' data will have (the loader's; from its cache after the first run)."""
    from contest_study.data import DataError, load_contest

    try:
        return load_contest(data_dir, cache_dir=cache_dir, seed=seed).fingerprint
    except DataError as error:
        raise ExportError(f"--data-dir {data_dir}: {error}") from error


def resolve_data_dir(data_dir: Path | None, workdir: Path) -> Path:
    """The contest folder to run on: ``data_dir``, or the embedded dataset (generated if missing)."""
    if data_dir is None:
        # Imported here: only the default dataset needs the generator.
        from contest_study.synthetic import ensure_dataset

        embedded = workdir / "data" / "embedded"
        _say(f"data: embedded dataset at {embedded} (generated when missing)")
        return Path(ensure_dataset(embedded)).resolve()
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise ExportError(f"--data-dir {data_dir}: no such folder")
    return data_dir


# --------------------------------------------------------------------------- zip


def _module_file(module: str, package_dir: Path) -> Path | None:
    """The file of ``module`` (``contest_study.a.b``) inside ``package_dir``, if it is one of its modules."""
    parts = module.split(".")[1:]
    candidates = [package_dir.joinpath(*parts, "__init__.py")]
    if parts:
        candidates.append(package_dir.joinpath(*parts[:-1], f"{parts[-1]}.py"))
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def _imports(path: Path, module: str | None) -> set[str]:
    """Every module name ``path`` imports, anywhere in it (a function's lazy import counts too).

    ``from x import y`` yields both ``x`` and ``x.y`` (``y`` may be a submodule);
    relative imports are resolved against ``module``, the file's own module name.
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise ExportError(f"{path}: cannot be parsed to find what it imports ({error})") from error
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                base = ".".join(package.split(".")[: len(package.split(".")) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_closure(sources: Iterable[Path], package_dir: Path) -> list[Path]:
    """The modules of the package at ``package_dir`` that ``sources`` need to run: what they import,
    what those import, and so on, with the ``__init__.py`` of every package on the way."""
    package = package_dir.name
    pending = [(source, None) for source in sources]
    needed: dict[str, Path] = {}
    while pending:
        path, module = pending.pop()
        for name in sorted(_imports(path, module)):
            if name != package and not name.startswith(f"{package}."):
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
                prefix = ".".join(parts[:depth])
                file = _module_file(prefix, package_dir)
                if file is not None and prefix not in needed:
                    needed[prefix] = file
                    pending.append((file, prefix))
    return sorted(needed.values())


def zip_plan(*, name: str, twins: Iterable[Path], package_dir: Path, doc_files: Iterable[Path]) -> dict[str, Path]:
    """Member name -> source file: the twins and the package modules they import under ``name/``,
    the documents at the root."""
    twins = list(twins)
    plan = {f"{name}/{twin.name}": twin for twin in twins}
    for module in package_closure(twins, package_dir):
        plan[f"{name}/{package_dir.name}/{module.relative_to(package_dir).as_posix()}"] = module
    for doc in doc_files:
        plan[doc.name] = doc
    return plan


def check_zip(zip_path: Path, *, name: str, required: Iterable[str], report: bool = True) -> list[tuple[str, int]]:
    """Reopen ``zip_path`` and enforce the submission rules; return (member, size) pairs.

    The ``name/`` folder holds only .py files, nothing else sits outside it but the
    documentation files, no member is data or a notebook, every member of ``required``
    is present, the report is there (``report``: the PDF or the HTML) and every CRC is right.
    """
    problems = []
    with zipfile.ZipFile(zip_path) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        corrupt = archive.testzip()
        if corrupt is not None:
            problems.append(f"{corrupt}: bad CRC")
    members = [info.filename for info in infos]
    for member in members:
        if posixpath.normpath(member) != member or member.startswith("/"):
            problems.append(f"{member}: path not normalised")
        elif member.startswith(f"{name}/"):
            parts = member.split("/")
            if not member.endswith(".py") or "__pycache__" in parts:
                problems.append(f"{member}: only .py files belong in {name}/")
        elif member not in ROOT_DOC_FILES:
            problems.append(f"{member}: outside {name}/ (only {', '.join(ROOT_DOC_FILES)} may be at the root)")
        if member.lower().endswith(FORBIDDEN_SUFFIXES):
            problems.append(f"{member}: data, weights, notebooks and bytecode never go in the submission")
    problems += [f"{member}: missing" for member in required if member not in members]
    if report and PDF_NAME not in members and HTML_NAME not in members:
        problems.append(f"{PDF_NAME} (or {HTML_NAME} without a PDF engine): missing, the report belongs in the submission")
    if problems:
        raise ZipCheckError(f"{zip_path} breaks the submission rules:\n  " + "\n  ".join(problems))
    return [(info.filename, info.file_size) for info in infos]


def build_zip(
    zip_path: Path,
    *,
    name: str,
    twins: Sequence[Path],
    package_dir: Path,
    doc_files: Sequence[Path],
    report: bool = True,
) -> list[tuple[str, int]]:
    """Write and check the submission zip atomically; return its (member, size) pairs.

    The zip is checked before it replaces ``zip_path``, so a failed build or a
    rule violation leaves any earlier zip exactly as it was.
    """
    missing = [path for path in [*twins, *doc_files] if not path.is_file()]
    if missing:
        raise ExportError("cannot build the zip, missing: " + ", ".join(map(str, missing)))
    if not (package_dir / "__init__.py").is_file():
        raise ExportError(f"{package_dir}: not a Python package (no __init__.py)")
    plan = zip_plan(name=name, twins=twins, package_dir=package_dir, doc_files=doc_files)
    with atomic_output(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for member, source in plan.items():
                archive.write(source, member)
        required = [member for member, source in plan.items() if source not in doc_files]
        return check_zip(tmp, name=name, required=required, report=report)


# --------------------------------------------------------------------------- pipeline


def validate_submission_name(name: str) -> str:
    """Return ``name`` if it is a valid FAMILY_FIRST submission name, else raise naming --name."""
    if not _SUBMISSION_NAME_PATTERN.fullmatch(name):
        raise ExportError(f"--name {name!r}: {SUBMISSION_NAME_RULE}")
    return name


def export_submission(
    layout: ProjectLayout,
    *,
    name: str,
    out_dir: Path,
    profile: str,
    data_dir: Path | None = None,
    seed: int = 42,
    notebooks: Sequence[str] | None = None,
    force_retrain: bool = False,
    skip_execution: bool = False,
    parallel: int = PARALLEL_NOTEBOOKS,
) -> Deliverables:
    """Sync, execute (unless ``skip_execution``), predict the test set, build the report and zip.

    Prints progress and, at the end, where every deliverable is. A missing optional
    piece (no test split, no PDF engine, notebooks not executed in this run) is said
    in a message and in ``Deliverables.missing``; it does not stop the export. The
    zip needs the report, the one built now or, with ``skip_execution``, an earlier one.
    """
    validate_submission_name(name)
    out_dir = Path(out_dir)
    synced = sync_all(layout)
    pairs = [pair for pair, _ in synced]
    executed: list[Path] = []
    missing: list[tuple[str, str]] = []
    predictions = None
    if skip_execution:
        _say("execution skipped (--skip-execution): the test predictions and the report are not rebuilt")
        reports = [path for path in layout.report_files if path.is_file()]
    else:
        selected = select_notebooks(pairs, notebooks)
        resolved_data = resolve_data_dir(data_dir, layout.output_root)
        parameters = RunParameters(profile=profile, data_dir=resolved_data, workdir=layout.output_root, seed=seed)
        code_digest = package_digest(layout.package_dir)
        keys = execution_keys(
            pairs,
            parameters=parameters,
            code_digest=code_digest,
            data_fingerprint=data_fingerprint(resolved_data, layout.cache_dir, seed),
        )
        executed = execute_all(selected, layout, parameters, keys=keys, force=force_retrain, parallel=parallel)
        predictions = _write_test_predictions(layout, out_dir=out_dir, name=name, parameters=parameters, missing=missing)
        reports = _build_report(
            layout, [pair.name for pair in pairs], parameters, name=name, code_digest=code_digest, missing=missing
        )

    zip_path = out_dir / f"{name}.zip"
    if reports and all(path.suffix == ".html" for path in reports):
        _say("note: no PDF engine here, so the zip carries the report as HTML only (see 'not delivered' below)")
    _say(f"zip: writing and checking {zip_path} ...")
    members = build_zip(
        zip_path,
        name=name,
        twins=[pair.py for pair in pairs],
        package_dir=layout.package_dir,
        doc_files=[layout.readme, *reports],
    )
    deliverables = Deliverables(
        zip_path=zip_path,
        zip_members=members,
        executed=executed,
        twins=[pair.py for pair in pairs],
        reports=reports,
        predictions=predictions,
        figures_dir=layout.figures_dir,
        executed_dir=layout.executed_dir,
        missing=missing,
    )
    _print_deliverables(deliverables)
    return deliverables


def _write_test_predictions(layout: ProjectLayout, *, out_dir: Path, name: str, parameters: RunParameters, missing: list):
    """The test-set CSVs of the final model (else the best run) into ``out_dir``; None (and a message) when none."""
    # Imported here: they load the data and the registry, which only this step needs.
    from contest_study.submission_predictions import PredictionsError, export_test_predictions, stale_outputs

    _say("test predictions: from the study's final model, else the run with the best validation mAP ...")
    try:
        written = export_test_predictions(
            layout.runs_dir,
            out_dir,
            name=name,
            data_dir=parameters.data_dir,
            cache_dir=layout.cache_dir,
            profile=parameters.profile,
            seed=parameters.seed,
        )
    except PredictionsError as error:
        for path in stale_outputs(out_dir, name):
            path.unlink()  # CSVs of an earlier run would pass for this one's
        _say(f"test predictions: not written: {error}")
        missing.append(("test predictions", str(error)))
        return None
    _say(f"test predictions: {written.describe()}")
    return written


def _build_report(
    layout: ProjectLayout, names: Sequence[str], parameters: RunParameters, *, name: str, code_digest: str,
    missing: list,
) -> list[Path]:
    """Build the report from the executed notebooks of this run; the files written (PDF first).

    A report built from the same executed copies, code, run and author is kept as it is.
    """
    stamp_file = layout.report_dir / REPORT_STAMP
    inputs = hashlib.sha256(json.dumps({
        "copies": {notebook: _sha256(layout.executed_dir / f"{notebook}.ipynb") for notebook in names},
        "code": code_digest,
        "run": parameters.identity(),
        "author": name,
    }, sort_keys=True).encode()).hexdigest()
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = {}
    built = [path for path in layout.report_files if path.is_file()]
    if stamp.get("inputs") == inputs and built:
        _say("report: up to date (no executed notebook changed), not rebuilt")
        missing.extend(tuple(entry) for entry in stamp.get("missing", []))
        return built
    stamp_file.unlink(missing_ok=True)
    already_missing = len(missing)
    _say(f"report: building {_display(layout.report_dir, layout.output_root)}/ from the executed notebooks ...")
    try:
        result = build_report(
            layout.executed_dir,
            names,
            layout.report_dir,
            run=parameters.identity(),
            author=name.replace("_", " "),
            run_description=describe_run(profile=parameters.profile, data_dir=parameters.data_dir, seed=parameters.seed),
            say=_say,
        )
    except ReportError as error:
        for path in layout.report_files:
            path.unlink(missing_ok=True)  # a report of an earlier run would pass for this one's
        _say(f"report: not built: {error}")
        missing.append(("report", str(error)))
        return []
    for notebook, why in result.missing:
        _say(f"report: without {notebook}: {why}")
        missing.append((f"report section {notebook}", why))
    if result.pdf_error:
        _say(f"report: HTML only: {result.pdf_error}")
        missing.append(("report PDF", result.pdf_error))
    _say(
        f"report: {len(result.included)} notebooks, {result.prose_words} words of prose, "
        f"built in {format_duration(result.seconds)}"
    )
    write_text_atomic(stamp_file, json.dumps({"inputs": inputs, "missing": missing[already_missing:]}) + "\n")
    return result.files


def _print_deliverables(deliverables: Deliverables) -> None:
    def row(what: str, where) -> None:
        _say(f"  {what:<22}{where}")

    _say(f"\n{deliverables.zip_path} ({len(deliverables.zip_members)} files, checked):")
    for member, size in deliverables.zip_members:
        _say(f"  {size:>9,d}  {member}")
    _say("\ndeliverables:")
    row("submission zip", deliverables.zip_path)
    for path in deliverables.reports:
        row(f"report ({path.suffix.lstrip('.').upper()})", path)
    if not deliverables.reports:
        row("report", "(none: not built in this run, not in the zip)")
    if deliverables.predictions is not None:
        row("test probabilities", deliverables.predictions.probabilities_csv)
        row("test labels (0/1)", deliverables.predictions.labels_csv)
        row("", deliverables.predictions.describe())
    else:
        row("test predictions", "(none written in this run)")
    if deliverables.figures_dir is not None:
        count = len(list(deliverables.figures_dir.glob("*.png"))) if deliverables.figures_dir.is_dir() else 0
        row("figures", f"{deliverables.figures_dir}/ ({count} PNG files)")
    if deliverables.executed:
        row("executed notebooks", f"{deliverables.executed_dir}/")
        for path in deliverables.executed:
            row("", path.name)
    if deliverables.twins:
        row("notebook twins", f"{len(deliverables.twins)} .py files in {deliverables.twins[0].parent}/")
    if deliverables.missing:
        _say("\nnot delivered in this run:")
        for what, why in deliverables.missing:
            _say(f"  {what}: {why}")
