"""The results registry: every run of the study is stored once and reused.

Layout under the registry root (``StudyContext.runs_dir``)::

    <key>/record.json           finished entry: the run's record (see below)
    <key>/predictions.npz       val/holdout ids, y_true, y_score (see save_predictions)
    <key>/best.weights.h5       best weights (neural networks only), history.csv, tensorboard/ ...
    .incomplete/<key>/          working directory of a run not finished yet
    .locks/<key>.lock           who is training <key> right now (pid, host, process start time)
    .replaced/                  an old entry while a forced retrain swaps in the new one

A key is the model name plus a hash of the hyperparameters, the data fingerprint, the
seed and the engine version (:func:`engine_version`; :meth:`Registry.make_key`). :meth:`Registry.fetch_or_run` returns the
finished entry of a key, or calls ``run_fn(workdir)`` in ``.incomplete/<key>``, adds
the identifying fields to the payload it returns, writes ``record.json`` there
atomically and renames the directory to ``<key>``. An interrupted run therefore never
leaves a finished-looking entry, and its working directory survives so that the next
call resumes there (Keras ``BackupAndRestore``).

Retraining: ``force=True``, or the environment variable ``STUDY_FORCE_RETRAIN=1`` for
every call of the process (``0`` or unset: reuse). A forced run starts from an empty
working directory and replaces the finished entry only once it has finished itself.
Records are strict JSON: undefined numbers (NaN, e.g. the AP of a label without
positives) are stored as ``null``.

Several processes may share one registry (a distributed hyperparameter search): all
moves are ``os.rename``/``os.replace`` and a per-key lock file (created with
``O_CREAT | O_EXCL``) makes sure two processes never train the same key at once. A
lock whose process is dead (same host) is taken over; a process that finds a live
lock, or one of another host, says so (path, holder, age), waits at most
``lock_timeout_s`` (default 10 min, ``STUDY_LOCK_TIMEOUT_S``) and then raises
:class:`RunLockedError`; when the other process finishes first its entry is reused.
Every installed entry also gets a TensorBoard HParams summary in ``<key>/tensorboard``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from contest_study.config import repository_root
from contest_study.files import atomic_output, write_text_atomic

FORCE_ENV = "STUDY_FORCE_RETRAIN"
LOCK_TIMEOUT_ENV = "STUDY_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 600.0
# How often a waiting process says again what it waits for.
LOCK_REPORT_EVERY_S = 60.0
RECORD_FILE = "record.json"
PREDICTIONS_FILE = "predictions.npz"
WEIGHTS_FILE = "best.weights.h5"
INCOMPLETE_DIR = ".incomplete"
LOCKS_DIR = ".locks"
REPLACED_DIR = ".replaced"
TENSORBOARD_DIR = "tensorboard"
KEY_HASH_LENGTH = 12
# An empty or garbled lock file older than this is the trace of a process that died
# between creating the file and writing its owner into it.
UNREADABLE_LOCK_GRACE_S = 60.0

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The registry fields of a record; a payload may repeat them only with the same values.
_IDENTITY_FIELDS = ("key", "model", "family", "hyperparams", "data_fingerprint", "seed", "engine_version")

# The code whose change changes results (see engine_version): whole modules, and the
# functions of data.py that decide which pixels and images a run sees. Docstrings,
# comments and formatting do not count.
ENGINE_MODULES = ("training.py", "evaluation.py", "metrics.py", "baselines.py")
ENGINE_DATA_FUNCTIONS = ("black_mask", "drop_black_images", "subsample", "_decode_image", "_to_float")
# Distributions whose versions are part of the engine version (first installed name of each).
ENGINE_LIBRARIES = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "scikit-learn": ("scikit-learn",),
}

logger = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """A registry entry cannot be read (the message names the file)."""


class RunLockedError(RuntimeError):
    """Another live process kept a key's lock longer than the registry was told to wait."""


# ----------------------------------------------------------------------------- JSON


def _jsonable(value, where: str):
    """``value`` as plain JSON types; non-finite floats become None (strict JSON)."""
    if isinstance(value, dict):
        converted = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"{where}: key {name!r} is not a string")
            converted[name] = _jsonable(item, f"{where}.{name}")
        return converted
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if value is None or isinstance(value, (str, bool, np.bool_)):
        return value if not isinstance(value, np.bool_) else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    raise TypeError(f"{where}: {type(value).__name__} value {value!r} cannot be stored as JSON")


def _canonical_json(value, where: str) -> str:
    """One text per value: sorted keys, no spaces (dict order and tuples vs lists do not matter)."""
    return json.dumps(_jsonable(value, where), sort_keys=True, separators=(",", ":"), allow_nan=False)


def save_predictions(directory: Path, **arrays) -> Path:
    """Write ``predictions.npz`` into a run's directory, atomically.

    Name the arrays ``<split>_ids``, ``<split>_true`` and ``<split>_score`` (splits
    ``val``, ``holdout`` and, when predicted, ``test``); :meth:`RunRecord.predictions`
    gives them back under the same names.
    """
    path = Path(directory) / PREDICTIONS_FILE
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **{name: np.asarray(array) for name, array in arrays.items()})
    return path


# ----------------------------------------------------------------------------- provenance


def _library_version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape a run's numbers, and Python's (None: not installed)."""
    versions = {name: _library_version(distributions) for name, distributions in ENGINE_LIBRARIES.items()}
    return {**versions, "python": platform.python_version()}


def _code_without_docstrings(tree: ast.AST) -> str:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.lru_cache(maxsize=1)
def engine_version() -> str:
    """12 hex digits naming the training engine: its code (:data:`ENGINE_MODULES` and the
    :data:`ENGINE_DATA_FUNCTIONS` of data.py, as syntax trees without docstrings or
    comments) and the versions of :data:`ENGINE_LIBRARIES`.

    Part of every registry key: after a change of the engine, runs are trained again
    instead of being reused.
    """
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ENGINE_MODULES:
        digest.update(name.encode() + _code_without_docstrings(ast.parse((package / name).read_text("utf-8"))).encode())
    data_functions = {
        node.name: node
        for node in ast.parse((package / "data.py").read_text("utf-8")).body
        if isinstance(node, ast.FunctionDef) and node.name in ENGINE_DATA_FUNCTIONS
    }
    for name in ENGINE_DATA_FUNCTIONS:
        node = data_functions.get(name)
        digest.update(name.encode() + (_code_without_docstrings(node) if node else "missing").encode())
    versions = library_versions()
    digest.update(json.dumps({name: versions[name] for name in ENGINE_LIBRARIES}, sort_keys=True).encode())
    return digest.hexdigest()[:KEY_HASH_LENGTH]


def git_state() -> dict:
    """``{"commit": HEAD, "dirty": uncommitted changes to tracked files}`` of the checkout, or Nones outside one."""
    root = repository_root()
    unknown = {"commit": None, "dirty": None}
    if root is None:
        return unknown
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return unknown
    return {"commit": commit, "dirty": bool(changes.strip())}


# ----------------------------------------------------------------------------- locks


def _process_start_time(pid: int) -> str | None:
    """Start time of a process (Linux /proc), telling a reused pid from the original; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime), counted after the command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def _current_owner() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _process_start_time(os.getpid()),
        "since": time.time(),
    }


# Locks this process holds, path -> thread ident (threads of one process share the pid).
_HELD_LOCKS: dict[Path, int] = {}
_HELD_LOCKS_GUARD = threading.Lock()


class _KeyLock:
    """Exclusive right to train one key, held through a lock file that names its owner."""

    def __init__(self, path: Path, key: str, timeout_s: float, poll_s: float, report_s: float):
        self.path = path
        self.key = key
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.report_s = report_s

    def __enter__(self) -> "_KeyLock":
        with _HELD_LOCKS_GUARD:
            if _HELD_LOCKS.get(self.path) == threading.get_ident():
                raise RuntimeError(f"run {self.key} is already being trained by this thread (recursive fetch_or_run?)")
        started = time.monotonic()
        next_report = started
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                content, owner = self._read()
                if content is not None and self._is_stale(owner):
                    self._take_over(content)
                    continue
                waited = time.monotonic() - started
                if waited >= self.timeout_s:
                    raise RunLockedError(
                        f"run {self.key} is locked by {self._describe(owner)} (lock file {self.path}); "
                        f"gave up after waiting {waited:.0f} s ({LOCK_TIMEOUT_ENV}={self.timeout_s:g}). "
                        "If that process is gone (a process on another host cannot be checked from here), "
                        "delete the lock file and run again."
                    ) from None
                if time.monotonic() >= next_report:
                    logger.warning(
                        "run %s is locked by %s (lock file %s); waited %.0f s of at most %g s",
                        self.key,
                        self._describe(owner),
                        self.path,
                        waited,
                        self.timeout_s,
                    )
                    next_report += self.report_s
                time.sleep(self.poll_s)
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(_current_owner(), handle)
            with _HELD_LOCKS_GUARD:
                _HELD_LOCKS[self.path] = threading.get_ident()
            return self

    def __exit__(self, *exc_info) -> None:
        with _HELD_LOCKS_GUARD:
            _HELD_LOCKS.pop(self.path, None)
        self.path.unlink(missing_ok=True)

    def _read(self) -> tuple[bytes | None, dict | None]:
        """Raw content (None if the file vanished) and the owner it names (None if unreadable)."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        try:
            owner = json.loads(content)
        except ValueError:
            return content, None
        return content, owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def _is_stale(self, owner: dict | None) -> bool:
        if owner is None:
            # Still being written by its creator, unless it has stayed unreadable for long.
            try:
                return time.time() - self.path.stat().st_mtime > UNREADABLE_LOCK_GRACE_S
            except FileNotFoundError:
                return False
        if owner.get("host") != socket.gethostname() or os.name == "nt":
            # A process on another machine cannot be checked from here, and on Windows
            # os.kill(pid, 0) would terminate the process instead of probing it.
            return False
        pid = owner["pid"]
        if pid == os.getpid() and owner.get("start") == _process_start_time(pid):
            with _HELD_LOCKS_GUARD:
                return self.path not in _HELD_LOCKS  # ours but not held: a release that failed
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, owned by another user
        start = _process_start_time(pid)
        # A different start time means the pid was reused after the owner died (e.g. a restarted container).
        return owner.get("start") is not None and start is not None and start != owner["start"]

    def _take_over(self, stale_content: bytes) -> None:
        """Remove the stale lock, unless another process already replaced it.

        A second lock file guards the check-and-delete, so that two processes finding
        the same stale lock cannot delete the fresh lock one of them just created.
        """
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > UNREADABLE_LOCK_GRACE_S:
                    guard.unlink(missing_ok=True)  # its process died during the take-over
            except FileNotFoundError:
                pass
            time.sleep(min(self.poll_s, 0.05))
            return
        try:
            if self.path.read_bytes() == stale_content:
                self.path.unlink()
                logger.warning("took over the stale lock %s", self.path)
        except FileNotFoundError:
            pass
        finally:
            guard.unlink(missing_ok=True)

    def _describe(self, owner: dict | None) -> str:
        """Who holds the lock and for how long (from the lock's own clock, else the file's time)."""
        try:
            since = owner["since"] if owner and isinstance(owner.get("since"), (int, float)) else self.path.stat().st_mtime
            age = f"held for {time.time() - since:.0f} s"
        except FileNotFoundError:
            age = "just released"
        if owner is None:
            return f"a process that has not written its name yet ({age})"
        return f"process {owner['pid']} on host {owner.get('host', '?')} ({age})"


def _force_from_environment() -> bool:
    value = os.environ.get(FORCE_ENV, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise ValueError(f"{FORCE_ENV} must be 0 or 1, got {value!r}")


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or key.startswith(".") or "/" in key or os.sep in key:
        raise ValueError(f"not a registry key: {key!r}")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunRecord:
    """One finished registry entry: ``data`` is its record.json, ``path`` its directory."""

    key: str
    path: Path
    data: dict

    @classmethod
    def load(cls, path: Path) -> "RunRecord":
        record_file = Path(path) / RECORD_FILE
        if not record_file.is_file():
            raise RegistryError(f"registry entry {path} has no {RECORD_FILE}")
        try:
            data = json.loads(record_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RegistryError(f"cannot read registry record {record_file}: {error}") from error
        if not isinstance(data, dict):
            raise RegistryError(f"registry record {record_file} is not a JSON object")
        if data.get("key") != Path(path).name:
            raise RegistryError(
                f"registry record {record_file} has key {data.get('key')!r}, not its directory name {Path(path).name!r}"
            )
        return cls(key=data["key"], path=Path(path), data=data)

    @property
    def record_file(self) -> Path:
        return self.path / RECORD_FILE

    def _required(self, name: str):
        try:
            return self.data[name]
        except KeyError:
            raise RegistryError(f"registry record {self.record_file} has no {name!r}") from None

    @property
    def model(self) -> str:
        return self._required("model")

    @property
    def family(self) -> str:
        return self._required("family")

    @property
    def description(self) -> str:
        return self.data.get("description", "")

    @property
    def hyperparams(self) -> dict:
        return self._required("hyperparams")

    @property
    def seed(self) -> int:
        return self._required("seed")

    @property
    def label_names(self) -> list[str]:
        return self._required("label_names")

    @property
    def metrics(self) -> dict:
        """``{"val"|"holdout": {"all"|"non_black": metrics.evaluate(...)}}``."""
        return self._required("metrics")

    @property
    def oracle(self) -> dict | None:
        return self.data.get("oracle")

    @property
    def thresholds(self) -> dict:
        """Decision threshold per label name, tuned on the validation set."""
        return self._required("thresholds")

    @property
    def history(self) -> pd.DataFrame:
        """Training curves, one row per epoch (index ``epoch`` from 1); empty for classical models."""
        curves = self.data.get("history") or {}
        frame = pd.DataFrame({name: pd.Series(values, dtype=float) for name, values in curves.items()})
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
        return frame

    def predictions(self) -> dict[str, np.ndarray]:
        """The arrays of predictions.npz (see :func:`save_predictions`)."""
        path = self.path / PREDICTIONS_FILE
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"run {self.key} has no predictions file {path}") from None
        except (OSError, ValueError) as error:
            raise RegistryError(f"cannot read predictions file {path}: {error}") from error

    @property
    def weights_path(self) -> Path | None:
        path = self.path / WEIGHTS_FILE
        return path if path.is_file() else None


def _metric(record: RunRecord, *path: str):
    """A nested metric of a record; a missing part is an error naming the record file."""
    value = record.metrics
    for part in path:
        if not isinstance(value, dict) or part not in value:
            raise RegistryError(f"registry record {record.record_file} has no metrics entry {'/'.join(path)}")
        value = value[part]
    return value


def _val_map(record: RunRecord) -> float:
    value = _metric(record, "val", "all", "map")
    return -math.inf if value is None else value


# Grid trials share model names across settings; the final model is one per study, whatever its name.
TRIAL_FAMILY = "tuning"
FINAL_FAMILY = "final"


def run_name(record: RunRecord) -> str:
    """The model name plus what sets this run apart from the study's standard setting."""
    hyperparams = record.hyperparams
    variant = []
    if hyperparams.get("black_images") == "kept":
        variant.append("black images kept")
    if hyperparams.get("input_channels", 1) != 1:
        variant.append(f"{hyperparams['input_channels']} channels")
    if "train_fraction" in hyperparams:
        variant.append(f"{hyperparams['train_fraction']:.0%} of the training images")
    if record.family.endswith("_seed"):
        variant.append(f"seed {record.seed}")
    return f"{record.model} ({', '.join(variant)})" if variant else record.model


def latest_runs(records: Iterable[RunRecord]) -> list[RunRecord]:
    """``records`` (in their order) without the runs that a newer run of the same name supersedes.

    The registry keeps every run it finished. When a notebook's network, recipe or
    settings change, the run trained again under the same name, family and seed is a
    new entry, and the older one describes a notebook that no longer exists. Grid trials
    are all kept; of the final model only the newest counts.
    """
    records = list(records)

    def name(record: RunRecord) -> tuple:
        return (record.family, record.data.get("seed"), "" if record.family == FINAL_FAMILY else run_name(record))

    newest: dict[tuple, RunRecord] = {}
    for record in records:
        if record.family != TRIAL_FAMILY:
            current = newest.get(name(record))
            if current is None or record.data.get("created", "") >= current.data.get("created", ""):
                newest[name(record)] = record
    return [record for record in records if record.family == TRIAL_FAMILY or newest[name(record)] is record]


def best_per_family(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The run with the highest validation mAP of each family, best family first."""
    best: dict[str, RunRecord] = {}
    for record in records:
        current = best.get(record.family)
        if current is None or _val_map(record) > _val_map(current):
            best[record.family] = record
    return sorted(best.values(), key=_val_map, reverse=True)


# ----------------------------------------------------------------------------- TensorBoard


def _hparam_values(record: dict) -> dict:
    """The record's identity and hyperparameters as the scalar values HParams accepts (nested names joined by '.')."""
    values = {"model": record["model"], "family": record["family"], "seed": record["seed"]}

    def add(prefix: str, value) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                add(f"{prefix}.{name}", item)
        elif isinstance(value, (bool, int, float, str)):
            values[prefix] = value
        else:  # None, lists: shown as text
            values[prefix] = json.dumps(value)

    for name, value in record["hyperparams"].items():
        add(name, value)
    return values


def write_hparams_summary(log_dir: Path, record: dict) -> None:
    """An HParams summary of one run in ``log_dir``: its hyperparameters and validation mAP
    (all images and non-black ones), so ``tensorboard --logdir runs`` shows every run in one table.
    """
    # tensorboard's record writer and protos, without its EventFileWriter: that one loads
    # TensorFlow (tens of seconds on a busy machine) for a process that may train none.
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams import summary_v2 as hparams_summary
    from tensorboard.plugins.scalar import summary_v2 as scalar_summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    metrics = record.get("metrics") or {}
    scores = {
        "val_map": ((metrics.get("val") or {}).get("all") or {}).get("map"),
        "val_map_non_black": ((metrics.get("val") or {}).get("non_black") or {}).get("map"),
    }
    now = time.time()
    events = [
        Event(wall_time=now, file_version="brain.Event:2"),
        Event(wall_time=now, step=0, summary=hparams_summary.hparams_pb(_hparam_values(record), trial_id=record["key"])),
    ]
    for tag, value in scores.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            events.append(Event(wall_time=now, step=0, summary=scalar_summary.scalar_pb(tag, value)))
    # TensorBoard reads every file named events.out.tfevents.* in the folder.
    path = log_dir / f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.hparams"
    with atomic_output(path) as temporary:
        writer = RecordWriter(open(temporary, "wb"))
        for event in events:
            writer.write(event.SerializeToString())
        writer.close()


# ----------------------------------------------------------------------------- registry


class Registry:
    """The single store of results that every notebook reads (see the module docstring).

    ``lock_timeout_s``: how long to wait for a key locked by another process (alive,
    or on another host) before raising :class:`RunLockedError`; None reads
    ``STUDY_LOCK_TIMEOUT_S``, default 600 s. ``engine_version``: the engine the
    registry's runs must come from (default :func:`engine_version`); entries of
    another engine are neither reused nor listed.
    """

    def __init__(
        self,
        root: Path,
        *,
        lock_timeout_s: float | None = None,
        lock_poll_s: float = 1.0,
        lock_report_s: float = LOCK_REPORT_EVERY_S,
        engine_version: str | None = None,
    ):
        self.root = Path(root).expanduser().absolute()
        if lock_timeout_s is None:
            text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
            try:
                lock_timeout_s = float(text) if text else DEFAULT_LOCK_TIMEOUT_S
            except ValueError:
                raise ValueError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
        if not (isinstance(lock_timeout_s, (int, float)) and math.isfinite(lock_timeout_s) and lock_timeout_s >= 0):
            raise ValueError(f"lock_timeout_s must be a finite number of seconds >= 0, got {lock_timeout_s!r}")
        self.lock_timeout_s = float(lock_timeout_s)
        self.lock_poll_s = lock_poll_s
        self.lock_report_s = lock_report_s
        self.engine_version = engine_version or globals()["engine_version"]()
        self._stale_reported = False

    @staticmethod
    def make_key(
        model: str, hyperparams: dict, data_fingerprint: str, seed: int, engine_version: str | None = None
    ) -> str:
        """``<model>-<12 hex digits>``: SHA-256 of the canonical JSON of what defines the run.

        The same inputs give the same key in every process, whatever the order of the
        hyperparameter dict; note that 1 and 1.0 are different hyperparameter values.
        ``engine_version`` defaults to the running engine's (:func:`engine_version`).
        """
        if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
            raise ValueError(f"model name {model!r} must be letters, digits, '_', '.' or '-'")
        if not isinstance(hyperparams, dict):
            raise TypeError(f"hyperparams must be a dict, got {type(hyperparams).__name__}")
        if not isinstance(data_fingerprint, str) or not data_fingerprint:
            raise ValueError(f"data_fingerprint must be a non-empty string, got {data_fingerprint!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        identity = {
            "model": model,
            "hyperparams": hyperparams,
            "data_fingerprint": data_fingerprint,
            "seed": int(seed),
            "engine_version": engine_version or globals()["engine_version"](),
        }
        digest = hashlib.sha256(_canonical_json(identity, "run identity").encode("utf-8")).hexdigest()
        return f"{model}-{digest[:KEY_HASH_LENGTH]}"

    def get(self, key: str) -> RunRecord | None:
        """The finished entry of ``key``, or None (also for an entry of another engine version)."""
        _check_key(key)
        path = self.root / key
        if not path.exists():
            return None
        record = RunRecord.load(path)
        if not self._current(record):
            logger.warning(
                "registry entry %s was made by engine version %s, not %s: not reused",
                path,
                record.data.get("engine_version"),
                self.engine_version,
            )
            return None
        return record

    def records(self, family: str | None = None) -> list[RunRecord]:
        """Every finished entry (of one family) of this engine version, in key order."""
        if not self.root.is_dir():
            return []
        entries = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        records = [RunRecord.load(path) for path in entries]
        stale = [record for record in records if not self._current(record)]
        if stale and not self._stale_reported:
            self._stale_reported = True
            logger.warning(
                "%d registry entries under %s come from another engine version and are left out (e.g. %s)",
                len(stale),
                self.root,
                stale[0].key,
            )
        return [r for r in records if self._current(r) and (family is None or r.family == family)]

    def fetch_or_run(
        self,
        *,
        model: str,
        family: str,
        hyperparams: dict,
        data_fingerprint: str,
        seed: int,
        run_fn: Callable[[Path], dict],
        force: bool = False,
    ) -> RunRecord:
        """The finished entry of this run, training it first with ``run_fn`` when needed.

        ``run_fn(workdir)`` trains in ``workdir`` (kept across interruptions), may write
        files there and returns the record payload (a JSON-able dict).
        """
        key = self.make_key(model, hyperparams, data_fingerprint, seed, self.engine_version)
        force = force or _force_from_environment()
        seen_before = self._entry_stamp(key)
        if seen_before is not None and not force:
            existing = self.get(key)
            if existing is not None:
                return existing

        (self.root / LOCKS_DIR).mkdir(parents=True, exist_ok=True)
        lock = _KeyLock(self.root / LOCKS_DIR / f"{key}.lock", key, self.lock_timeout_s, self.lock_poll_s, self.lock_report_s)
        with lock:
            seen_now = self._entry_stamp(key)
            # Another process may have finished this key while we waited for its lock:
            # that entry is newer than this call, so even a forced call takes it.
            if seen_now is not None and (not force or seen_now != seen_before):
                finished = self.get(key)
                if finished is not None:
                    return finished
            workdir = self.root / INCOMPLETE_DIR / key
            if force and workdir.exists():
                shutil.rmtree(workdir)  # a forced run starts from scratch, not from an interrupted attempt
            workdir.mkdir(parents=True, exist_ok=True)
            payload = run_fn(workdir)
            record = self._complete(payload, key, model, family, hyperparams, data_fingerprint, seed)
            text = json.dumps(_jsonable(record, "record"), indent=2, allow_nan=False)
            write_text_atomic(workdir / RECORD_FILE, text)
            write_hparams_summary(workdir / TENSORBOARD_DIR, record)
            self._install(workdir, key)
        return self.get(key)

    def table(self, records: Iterable[RunRecord] | None = None) -> pd.DataFrame:
        """One row per run (all finished runs by default), best validation mAP first.

        Columns: model, family, description, ``val AP <label>`` per label, val mAP,
        val mAP (non-black), holdout mAP, holdout mAP (non-black), val F1 macro (tuned),
        holdout F1 macro (tuned), val accuracy (binary accuracy at 0.5), oracle val mAP
        (only when a run has an oracle), params, epochs, best epoch (from 1), stopped by
        ("early stopping" / "epoch cap"; empty for classical models), wall time (s),
        key. Undefined values are NaN.
        """
        records = self.records() if records is None else list(records)
        rows, ap_columns = [], []
        has_oracle = any(record.oracle for record in records)
        for record in records:
            row = {"model": record.model, "family": record.family, "description": record.description}
            for label, ap in _metric(record, "val", "all", "ap").items():
                column = f"val AP {label}"
                row[column] = ap
                if column not in ap_columns:
                    ap_columns.append(column)
            row.update(
                {
                    "val mAP": _metric(record, "val", "all", "map"),
                    "val mAP (non-black)": _metric(record, "val", "non_black", "map"),
                    "holdout mAP": _metric(record, "holdout", "all", "map"),
                    "holdout mAP (non-black)": _metric(record, "holdout", "non_black", "map"),
                    "val F1 macro (tuned)": _metric(record, "val", "all", "f1_macro_tuned"),
                    "holdout F1 macro (tuned)": _metric(record, "holdout", "all", "f1_macro_tuned"),
                    "val accuracy": _metric(record, "val", "all", "accuracy_at_0.5"),
                }
            )
            if has_oracle:
                row["oracle val mAP"] = (record.oracle or {}).get("val", {}).get("all", {}).get("map")
            row.update(
                {
                    "params": record.data.get("params"),
                    "epochs": record.data.get("epochs_run"),
                    "best epoch": record.data.get("best_epoch"),
                    "stopped by": record.data.get("stopped_because") or "",
                    "wall time (s)": record.data.get("wall_time_s"),
                    "key": record.key,
                }
            )
            rows.append(row)
        numeric = [
            *ap_columns,
            "val mAP",
            "val mAP (non-black)",
            "holdout mAP",
            "holdout mAP (non-black)",
            "val F1 macro (tuned)",
            "holdout F1 macro (tuned)",
            "val accuracy",
            *(["oracle val mAP"] if has_oracle else []),
            "params",
            "epochs",
            "best epoch",
            "wall time (s)",
        ]
        columns = ["model", "family", "description", *numeric, "key"]
        columns.insert(columns.index("wall time (s)"), "stopped by")
        frame = pd.DataFrame(rows, columns=columns)
        frame[numeric] = frame[numeric].astype(float)  # null (undefined) values become NaN
        return frame.sort_values("val mAP", ascending=False, na_position="last", kind="stable").reset_index(drop=True)

    # ------------------------------------------------------------------------- internals

    def _entry_stamp(self, key: str) -> tuple[int, int] | None:
        """Identity of the finished entry's record file (None when there is no entry)."""
        try:
            status = (self.root / key / RECORD_FILE).stat()
        except FileNotFoundError:
            return None if not (self.root / key).exists() else (0, 0)
        return status.st_ino, status.st_mtime_ns

    def _current(self, record: RunRecord) -> bool:
        return record.data.get("engine_version") == self.engine_version

    def _complete(self, payload, key, model, family, hyperparams, data_fingerprint, seed) -> dict:
        """The payload plus the registry's identifying fields, the creation time and the provenance."""
        if not isinstance(payload, dict):
            raise TypeError(f"run_fn of {key} must return a dict (the record payload), got {type(payload).__name__}")
        identity = {
            "key": key,
            "model": model,
            "family": family,
            "hyperparams": hyperparams,
            "data_fingerprint": data_fingerprint,
            "seed": int(seed),
            "engine_version": self.engine_version,
        }
        for name in _IDENTITY_FIELDS:
            if name in payload and _canonical_json(payload[name], name) != _canonical_json(identity[name], name):
                raise ValueError(
                    f"run_fn of {key} returned {name}={payload[name]!r}, but the run was registered with "
                    f"{identity[name]!r}"
                )
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        provenance = {"library_versions": library_versions(), "git": git_state()}
        return {**payload, **identity, "created": created, **provenance}

    def _install(self, workdir: Path, key: str) -> None:
        """Rename the finished working directory into place, replacing an older entry."""
        final = self.root / key
        if not final.exists():
            os.rename(workdir, final)
            return
        aside = self.root / REPLACED_DIR / f"{key}.{os.getpid()}.{time.time_ns()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, aside)
        os.rename(workdir, final)
        shutil.rmtree(aside, ignore_errors=True)
