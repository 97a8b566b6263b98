"""Build the submission: sync the notebook pairs, run them headlessly, predict, report, zip.

Five steps, each a set of small functions taking explicit paths so the tests can
run them on a throw-away mini-project:

1. **Sync** every ``notebooks/NN_name.ipynb`` with its jupytext twin
   ``ISTRATI_LUCIAN/NN_name.py`` (:func:`sync_all`). A state file remembers the
   sha256 of both files at the last sync, so we know which side was edited since;
   an edit is never silently overwritten (see :func:`sync_pair` for the rules).
2. **Execute** the notebooks with nbclient (:func:`execute_all`), passing the run
   parameters through the ``STUDY_*`` environment variables read by
   :func:`contest_study.config.study_context`. Executed copies go to
   ``build/notebooks/`` so the committed notebooks stay untouched.
3. **Predict** the test set with the best run of the results registry: two CSVs in
   the contest's shape beside the zip (:mod:`contest_study.submission_predictions`).
4. **Report**: the executed notebooks of this run become ``build/report/report.html``
   and ``report.pdf`` (:mod:`contest_study.report`).
5. **Zip** the ``.py`` twins, the package they import and the report
   (:func:`build_zip`), then reopen the zip and check it against the submission
   rules (:func:`check_zip`).

:func:`export_submission` chains them and prints where every deliverable is;
``scripts/export_submission.py`` is its command-line front end.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import posixpath
import re
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
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

KERNEL_NAME = "python3"
# Written into notebooks created from a .py twin: the percent scripts carry no
# header (notebook_metadata_filter = "-all"), and without a kernelspec JupyterLab
# would ask which kernel to use.
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
TWIN_GLOB = "[0-9][0-9]_*.py"

# Every variable the notebooks read; the kernel gets exactly the values of this
# run, never stale ones inherited from the user's shell.
STUDY_VARIABLES = ("STUDY_PROFILE", "STUDY_DATA_DIR", "STUDY_WORKDIR", "STUDY_SEED", "STUDY_FORCE_RETRAIN")

# Executed copies record the run that made them under this notebook-metadata key
# (profile, data folder, seed), so the report never mixes notebooks of two runs.
RUN_METADATA_KEY = "contest_study_run"

# Files allowed at the zip root, beside the <NAME>/ code folder.
ROOT_DOC_FILES = ("README.md", "report.pdf", "report.html")
# Never in a submission, wherever they are: data, weights, notebooks, bytecode.
FORBIDDEN_SUFFIXES = (".png", ".jpg", ".jpeg", ".npz", ".npy", ".csv", ".h5", ".keras", ".ipynb", ".pyc", ".pkl")

# Cells running longer than this get their own progress line.
SLOW_CELL_SECONDS = 30.0
# Tail of a failing cell's traceback shown in the error (the partial notebook has it all).
ERROR_TAIL_LINES = 40

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

    ``workdir`` receives the executed notebooks and the report, and is the
    ``STUDY_WORKDIR`` of the notebooks (data, cache, registry, figures); it is the
    repository itself unless told otherwise (tests run the study in a scratch folder).
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
        return (self.report_dir / "report.pdf", self.report_dir / "report.html")


@dataclass(frozen=True)
class NotebookPair:
    """A notebook and its jupytext twin; either file may not exist yet."""

    name: str  # "01_data_analysis"
    ipynb: Path
    py: Path


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


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    On any exception the temporary file is removed and ``path`` is left as it was,
    so a reader never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the result the mode a plain open() would.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
    else:
        notebook.metadata.setdefault("kernelspec", dict(KERNELSPEC))
    return jupytext.writes(notebook, fmt="ipynb")


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
            return SYNC_IN_SYNC
        if ipynb_changed and not py_changed:
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


# --------------------------------------------------------------------------- execution


def study_environment(*, profile: str, data_dir: Path, workdir: Path, seed: int, force_retrain: bool) -> dict[str, str]:
    """The STUDY_* variables that :func:`contest_study.config.study_context` reads in the notebooks."""
    env = {
        "STUDY_PROFILE": profile,
        "STUDY_DATA_DIR": str(data_dir),
        "STUDY_WORKDIR": str(workdir),
        "STUDY_SEED": str(seed),
        # Training prints one line per epoch to this terminal (the notebook keeps Keras' display).
        "STUDY_TERMINAL_PROGRESS": "1",
        # TensorFlow's C++ start-up notices would otherwise flood the terminal once per notebook.
        "TF_CPP_MIN_LOG_LEVEL": "1",
    }
    if force_retrain:
        env["STUDY_FORCE_RETRAIN"] = "1"
    return env


def run_parameters(env: dict[str, str]) -> dict[str, str | None]:
    """What identifies a run in an executed copy's metadata: profile, data folder and seed."""
    return {
        "profile": env.get("STUDY_PROFILE"),
        "data_dir": env.get("STUDY_DATA_DIR"),
        "seed": env.get("STUDY_SEED"),
    }


def _failure_summary(err: Exception) -> str:
    if isinstance(err, CellExecutionError):
        headline = f"{err.ename}: {err.evalue}"
        details = _ANSI_ESCAPE.sub("", str(err)).rstrip().splitlines()[-ERROR_TAIL_LINES:]
        return headline + "\n" + "\n".join(details)
    return f"{type(err).__name__}: {err}"


def execute_notebook(
    ipynb: Path,
    out_dir: Path,
    env: dict[str, str],
    *,
    kernel_name: str = KERNEL_NAME,
    cell_timeout: int | None = None,
) -> Path:
    """Run ``ipynb`` in a fresh kernel (cwd = its folder) and write the executed copy to ``out_dir``.

    ``env`` replaces any STUDY_* variable of the current process. ``ipynb`` itself
    is not modified. On failure the partial copy goes to ``NN_name.failed.ipynb``
    and :class:`NotebookExecutionError` names the notebook, the cell and the error.
    """
    notebook = _read_ipynb(ipynb)
    kernel_env = {name: value for name, value in os.environ.items() if name not in STUDY_VARIABLES}
    kernel_env.update(env)
    executed_path = out_dir / ipynb.name
    failed_path = out_dir / f"{ipynb.stem}.failed.ipynb"
    current = {"index": None, "started": 0.0}

    def cell_starts(cell, cell_index):
        current.update(index=cell_index, started=time.monotonic())

    def cell_done(cell, cell_index, execute_reply):
        elapsed = time.monotonic() - current["started"]
        if elapsed >= SLOW_CELL_SECONDS:
            _say(f"    cell {cell_index + 1}/{len(notebook.cells)} took {format_duration(elapsed)}")

    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=cell_timeout,
        resources={"metadata": {"path": str(ipynb.parent)}},
        on_cell_execute=cell_starts,
        on_cell_executed=cell_done,
    )
    try:
        # "auto": encrypt the kernel's local sockets when the kernelspec supports it
        # (it also spares every notebook ipykernel's plain-TCP warning).
        client.execute(env=kernel_env, transport_encryption="auto" if zmq.has("curve") else "disabled")
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
        write_text_atomic(failed_path, nbformat.writes(client.nb) + "\n")
        cell_number = "?" if current["index"] is None else current["index"] + 1
        raise NotebookExecutionError(
            f"notebook {ipynb.name} failed at cell {cell_number}/{len(notebook.cells)}: {_failure_summary(err)}\n"
            f"partial executed copy: {failed_path}"
        ) from err
    client.nb.metadata[RUN_METADATA_KEY] = run_parameters(env)
    write_text_atomic(executed_path, nbformat.writes(client.nb) + "\n")
    failed_path.unlink(missing_ok=True)  # a stale failure from an earlier run would mislead
    return executed_path


def execute_all(notebooks: Sequence[Path], out_dir: Path, env: dict[str, str], **options) -> list[Path]:
    """Execute ``notebooks`` in order, printing progress; the first failure stops the run."""
    executed = []
    run_started = time.monotonic()
    for number, ipynb in enumerate(notebooks, start=1):
        _say(f"[{number}/{len(notebooks)}] running {ipynb.name} (profile {env.get('STUDY_PROFILE', '?')}) ...")
        started = time.monotonic()
        executed.append(execute_notebook(ipynb, out_dir, env, **options))
        _say(
            f"[{number}/{len(notebooks)}] {ipynb.name} done in {format_duration(time.monotonic() - started)} "
            f"(total {format_duration(time.monotonic() - run_started)})"
        )
    return executed


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


def zip_plan(*, name: str, twins: Iterable[Path], package_dir: Path, doc_files: Iterable[Path]) -> dict[str, Path]:
    """Member name -> source file: the twins and package modules under ``name/``, docs at the root."""
    plan = {f"{name}/{twin.name}": twin for twin in twins}
    for module in sorted(package_dir.rglob("*.py")):
        relative = module.relative_to(package_dir)
        if any(part == "__pycache__" or part.startswith(".") for part in relative.parts):
            continue
        plan[f"{name}/{package_dir.name}/{relative.as_posix()}"] = module
    for doc in doc_files:
        plan[doc.name] = doc
    return plan


def check_zip(zip_path: Path, *, name: str, required: Iterable[str]) -> list[tuple[str, int]]:
    """Reopen ``zip_path`` and enforce the submission rules; return (member, size) pairs.

    The ``name/`` folder holds only .py files, nothing else sits outside it but
    the documentation files, no member is data or a notebook, every member of
    ``required`` is present and every CRC is right.
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
    if problems:
        raise ZipCheckError(f"{zip_path} breaks the submission rules:\n  " + "\n  ".join(problems))
    return [(info.filename, info.file_size) for info in infos]


def build_zip(
    zip_path: Path, *, name: str, twins: Sequence[Path], package_dir: Path, doc_files: Sequence[Path]
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
        return check_zip(tmp, name=name, required=required)


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
) -> Deliverables:
    """Sync, execute (unless ``skip_execution``), predict the test set, build the report and zip.

    Prints progress and, at the end, where every deliverable is. A missing optional
    piece (no test split, no PDF engine, notebooks not executed in this run) is said
    in a message and in ``Deliverables.missing``; it does not stop the export.
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
        env = study_environment(
            profile=profile,
            data_dir=resolved_data,
            workdir=layout.output_root,
            seed=seed,
            force_retrain=force_retrain,
        )
        executed = execute_all([pair.ipynb for pair in selected], layout.executed_dir, env)
        predictions = _write_test_predictions(
            layout, out_dir=out_dir, name=name, data_dir=resolved_data, profile=profile, seed=seed, missing=missing
        )
        reports = _build_report(layout, [pair.name for pair in pairs], env, name=name, missing=missing)

    zip_path = out_dir / f"{name}.zip"
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
        figures_dir=layout.output_root / "figures",
        executed_dir=layout.executed_dir,
        missing=missing,
    )
    _print_deliverables(deliverables)
    return deliverables


def _write_test_predictions(
    layout: ProjectLayout, *, out_dir: Path, name: str, data_dir: Path, profile: str, seed: int, missing: list
):
    """The test-set CSVs of the best run into ``out_dir``; None (and a message) when there can be none."""
    # Imported here: they load the data and the registry, which only this step needs.
    from contest_study.config import StudyContext, get_profile
    from contest_study.submission_predictions import PredictionsError, export_test_predictions, stale_outputs

    context = StudyContext(profile=get_profile(profile), workdir=layout.output_root, data_dir=data_dir, seed=seed)
    _say("test predictions: choosing the run with the best validation mAP among those that scored the test set ...")
    try:
        written = export_test_predictions(
            context.runs_dir,
            out_dir,
            name=name,
            data_dir=data_dir,
            cache_dir=context.cache_dir,
            profile=profile,
            seed=seed,
        )
    except PredictionsError as error:
        for path in stale_outputs(out_dir, name):
            path.unlink()  # CSVs of an earlier run would pass for this one's
        _say(f"test predictions: not written: {error}")
        missing.append(("test predictions", str(error)))
        return None
    _say(f"test predictions: {written.describe()}")
    return written


def _build_report(layout: ProjectLayout, names: Sequence[str], env: dict[str, str], *, name: str, missing: list) -> list[Path]:
    """Build the report from the executed notebooks of this run; the files written (PDF first)."""
    from contest_study.report import ReportError, build_report, describe_run

    _say(f"report: building {_display(layout.report_dir, layout.output_root)}/ from the executed notebooks ...")
    try:
        result = build_report(
            layout.executed_dir,
            names,
            layout.report_dir,
            run=run_parameters(env),
            author=name.replace("_", " "),
            run_description=describe_run(profile=env["STUDY_PROFILE"], data_dir=env["STUDY_DATA_DIR"],
                                         seed=env["STUDY_SEED"]),
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
