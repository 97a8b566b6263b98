"""Load a contest folder into train / val / holdout / test arrays, after checking all of it.

Every problem of the folder (bad CSV rows, labels, ids, missing or unreadable images, ids
leaving the folder, one image behind two rows) is reported in one :class:`FolderProblems`
error, grouped by kind with file and line; ``python -m contest_study.data validate DIR``
prints that report without loading.  Decoded images are cached as plain float32 ``.npy``
files, mapped into memory on the next load.
"""

from __future__ import annotations

import argparse
import array
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import warnings
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from contest_study.files import atomic_output

IMAGE_SIZE = 64
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Bump when the decoded pixels or the split logic change, so old caches and
# registry entries keyed by the fingerprint are not reused by mistake.
# 2: colour images become luminance instead of turning every image into 3 channels.
LOADER_VERSION = 2
# How many files or ids a message names before "...".
SHOW_FIRST = 10
# How many problems one error lists; the others are only counted.
MAX_PROBLEMS = 50
# Progress lines go to stderr every PROGRESS_STEP decoded images, for folders
# big enough that the first load takes noticeable time.
PROGRESS_STEP = 5000
PROGRESS_MIN_IMAGES = 5000
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
DECODE_CHUNK = 256
ONE_VALUES = ("1", "1.0")
ZERO_VALUES = ("0", "0.0")
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# An absolute id (/x, \x, C:x) or one with a ".." component would name a file outside the folder.
ID_LEAVING_FOLDER = re.compile(r"^(?:[\\/]|[A-Za-z]:)|(?:^|[\\/])\.\.(?:[\\/]|$)", re.MULTILINE)


class DataError(ValueError):
    """A contest folder or a loader option is unusable; the message names the file, row or option."""


@dataclass(frozen=True)
class Problem:
    """One problem of a contest folder; ``where`` is a file, or a file and its line as an editor numbers it."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class FolderProblems(DataError):
    """Every problem found in a contest folder, reported at once (``problems`` holds them all)."""

    def __init__(self, data_dir: Path, problems: list[Problem]):
        self.data_dir = data_dir
        self.problems = problems
        super().__init__(_problem_report(data_dir, problems))


def _problem_report(data_dir: Path, problems: list[Problem]) -> str:
    """The problems grouped by kind (in the order first met), at most MAX_PROBLEMS lines of them."""
    kinds = Counter(problem.kind for problem in problems)
    per_kind = max(1, MAX_PROBLEMS // len(kinds))
    lines = [f"contest folder {data_dir}: {len(problems)} problem(s) of {len(kinds)} kind(s); nothing was loaded"]
    for kind, count in kinds.items():
        lines.append(f"{kind} ({count}):")
        lines.extend(f"  {problem}" for problem in [p for p in problems if p.kind == kind][:per_kind])
        if count > per_kind:
            lines.append(f"  ... and {count - per_kind} more of this kind")
    return "\n".join(lines)


class _Problems(list):
    def add(self, kind: str, where: str, message: str) -> None:
        self.append(Problem(kind, where, message))


@dataclass
class Split:
    """One split: ``ids`` (str, exactly as in the CSV), ``images`` float32 (N, 64, 64, C) in [0, 1],
    ``labels`` int8 (N, n_labels) of 0/1, or None for the test split."""

    name: str  # "train" | "val" | "holdout" | "test"
    ids: np.ndarray
    images: np.ndarray = field(repr=False)
    labels: np.ndarray | None = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices) -> "Split":
        """The images at ``indices`` (in that order), as a split of the same name."""
        indices = np.asarray(indices, dtype=np.intp)
        return Split(
            name=self.name,
            ids=self.ids[indices],
            images=self.images[indices],
            labels=None if self.labels is None else self.labels[indices],
        )


@dataclass
class ContestData:
    """A loaded contest folder; ``fingerprint`` identifies its files and the loader options,
    ``notes`` says in words what the loader did (splits carved, channels, resized images)."""

    data_dir: Path
    label_names: list[str]
    train: Split
    val: Split
    holdout: Split
    test: Split | None
    fingerprint: str
    notes: list[str]

    @property
    def channels(self) -> int:
        """1, or 3 when loaded with ``keep_channels=True`` (the same for every split)."""
        return int(self.train.images.shape[-1])


def _listing(items, total: int | None = None) -> str:
    """'a, b, c, ...' with at most SHOW_FIRST items."""
    items = list(items)
    total = len(items) if total is None else total
    shown = ", ".join(str(item) for item in items[:SHOW_FIRST])
    return shown + (f", ... ({total} in all)" if total > SHOW_FIRST else "")


# --------------------------------------------------------------------------- CSV reading


@dataclass
class _Table:
    """One CSV of the folder with, per row, its image (None where the row has a problem)."""

    key: str  # "train", "val", "holdout" or "test"
    path: Path
    raw: bytes
    ids: list[str]
    lines: list[int]  # line of each row as an editor numbers it (the header is line 1)
    labels: np.ndarray | None = None  # int8 (N, n_labels)
    # Plain strings, not Paths: 20,000 pathlib objects cost more than the whole cached load.
    image_paths: list[str | None] = field(default_factory=list)  # absolute
    image_names: list[str | None] = field(default_factory=list)  # relative to the data folder
    real_paths: list[str | None] = field(default_factory=list)  # symlinks resolved

    @property
    def name(self) -> str:
        return self.path.name

    def where(self, row: int) -> str:
        return f"{self.name} line {self.lines[row]}"


def _parse_csv(path: Path, problems: _Problems) -> tuple[bytes, list[str], list[list[str]], list[int]] | None:
    """Raw bytes, header, rows and the first line of each row; None when the file is unusable."""
    name = path.name
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        problems.add("unreadable CSV", name, f"cannot read it as UTF-8 text ({error})")
        return None
    records, lines = _numbered_records(text, name, problems)
    kept = [index for index, record in enumerate(records) if record and (len(record) > 1 or record[0].strip())]
    if len(kept) < len(records):  # blank lines
        records, lines = [records[index] for index in kept], [lines[index] for index in kept]
    if not records:
        problems.add("CSV format", name, "the file is empty: expected a header line such as image_id,label_1,label_2,label_3")
        return None
    header, width = records[0], len(records[0])
    rows, lines = records[1:], lines[1:]
    misfits = [index for index, record in enumerate(rows) if len(record) != width]
    for index in misfits:
        problems.add("CSV format", f"{name} line {lines[index]}", f"{len(rows[index])} fields where the header has {width}")
    if misfits:
        fitting = [index for index, record in enumerate(rows) if len(record) == width]
        rows, lines = [rows[index] for index in fitting], [lines[index] for index in fitting]
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:
        problems.add("CSV format", f"{name} line 1", f"column(s) {_listing(repeated)} appear more than once in the header")
        return None
    if not rows:
        problems.add("CSV format", name, "the file has a header but no rows")
        return None
    return raw, header, rows, lines


def _numbered_records(text: str, name: str, problems: _Problems) -> tuple[list[list[str]], list[int]]:
    """Every record and the line it starts on, as an editor numbers lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = list(reader)
        if reader.line_num == len(records):  # the usual case: no quoted field spans lines
            return records, list(range(1, len(records) + 1))
    except csv.Error:
        pass
    # Read again record by record, to number records spanning lines or to find the malformed one.
    reader = csv.reader(io.StringIO(text, newline=""))
    records, lines, next_line = [], [], 1
    try:
        for record in reader:
            records.append(record)
            lines.append(next_line)
            next_line = reader.line_num + 1
    except csv.Error as error:
        problems.add("CSV format", f"{name} line {next_line}", f"malformed CSV ({error}); the lines after it were not read")
    return records, lines


def _training_columns(header: list[str], path: Path, id_column, label_columns) -> tuple[str, list[str]]:
    """The id column and label columns, from the options or from train.csv's header."""
    if id_column is None:
        id_column = header[0]
    elif id_column not in header:
        raise DataError(
            f"option id_column={id_column!r} names no column of {path} (columns found: {', '.join(header)})"
        )
    if label_columns is None:
        return id_column, [name for name in header if name != id_column]
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    missing = [name for name in label_columns if name not in header]
    if missing or not label_columns:
        raise DataError(
            f"option label_columns names column(s) absent from {path}: "
            f"missing {', '.join(missing) or '(none given)'}; columns found: {', '.join(header)}"
        )
    if id_column in label_columns:
        raise DataError(f"option label_columns includes the id column {id_column!r}")
    return id_column, label_columns


def _check_ids(table: _Table, id_column: str, problems: _Problems) -> set[int]:
    """Rows whose id is empty, leaves the folder or repeats an earlier row: no image is looked up for them."""
    ids = table.ids
    joined = "\n".join(ids)
    # Plain substring tests first: a regular expression over 20,000 ids costs more than a cached load's CSV reading.
    suspicious = ".." in joined or ":" in joined or "\n/" in joined or "\n\\" in joined or joined[:1] in ("/", "\\")
    if all(map(str.strip, ids)) and len(set(ids)) == len(ids) and not (suspicious and ID_LEAVING_FOLDER.search(joined)):
        return set()
    bad: set[int] = set()
    first_row: dict[str, int] = {}
    for row, image_id in enumerate(ids):
        if not image_id.strip():
            problems.add("bad image id", table.where(row), f"the image id (column {id_column!r}) is empty")
            bad.add(row)
        elif ID_LEAVING_FOLDER.search(image_id):
            problems.add(
                "bad image id", table.where(row),
                f"image id {image_id!r} is absolute or contains '..': an id names a file inside the data folder",
            )
            bad.add(row)
        if image_id in first_row:
            problems.add(
                "repeated row", table.where(row),
                f"image id {image_id!r} is listed twice in {table.name} (lines {table.lines[first_row[image_id]]} "
                f"and {table.lines[row]})",
            )
            bad.add(row)
        else:
            first_row[image_id] = row
    return bad


def _parse_labels(table: _Table, columns: list[tuple[str, ...]], names: list[str], problems: _Problems) -> np.ndarray:
    """int8 (N, n_labels) from the label columns' text; every value that is not 0/1 is a problem."""
    if all(set(column) <= {"0", "1"} for column in columns):
        # The usual case, without a per-value Python loop: the digits' bytes minus ord("0").
        digits = [np.frombuffer("".join(column).encode("ascii"), np.uint8) for column in columns]
        return (np.stack(digits, axis=1) - ord("0")).astype(np.int8)
    values = np.strings.strip(np.array(columns, dtype=str).T)
    for row, col in zip(*np.nonzero(~np.isin(values, ONE_VALUES + ZERO_VALUES))):
        value = str(values[row, col])
        problem = "is empty" if value == "" else f"is {value!r}, not 0 or 1"
        problems.add("bad label", table.where(int(row)), f"column {names[col]!r}: label {problem}")
    return np.isin(values, ONE_VALUES).astype(np.int8)


def _read_table(key: str, path: Path, parsed, id_column: str, label_columns: list[str] | None, problems: _Problems):
    """One parsed CSV with its ids and labels (``label_columns=None``: ids only) and the rows not to look up."""
    raw, header, rows, lines = parsed
    if id_column not in header:
        problems.add("missing column", f"{path.name} line 1", f"no id column {id_column!r}; columns found: {', '.join(header)}")
        return None, set()
    columns = list(zip(*rows))
    table = _Table(key=key, path=path, raw=raw, ids=list(columns[header.index(id_column)]), lines=lines)
    bad_rows = _check_ids(table, id_column, problems)
    if label_columns:
        missing = [name for name in label_columns if name not in header]
        if missing:
            problems.add(
                "missing column", f"{path.name} line 1",
                f"label column(s) {', '.join(missing)} of train.csv missing; columns found: {', '.join(header)}",
            )
        else:
            table.labels = _parse_labels(table, [columns[header.index(name)] for name in label_columns], label_columns, problems)
    return table, bad_rows


# --------------------------------------------------------------------------- image lookup


@dataclass
class _Place:
    """A folder images are looked up in, listed once."""

    absolute: str  # with a trailing separator
    relative: str  # relative to the data folder, "" for the folder itself
    real: str  # symlinks resolved, with a trailing separator
    files: set[str]  # entries that are not folders
    links: set[str]  # entries that are symbolic links


def _place(directory: Path, data_dir: Path, known: dict[Path, _Place]) -> _Place:
    if directory not in known:
        with os.scandir(directory) as scan:
            entries = list(scan)
        relative = os.path.relpath(directory, data_dir)
        known[directory] = _Place(
            absolute=str(directory) + os.sep,
            relative="" if relative == "." else relative + os.sep,
            real=os.path.realpath(directory) + os.sep,
            files={entry.name for entry in entries if not entry.is_dir(follow_symlinks=False)},
            links={entry.name for entry in entries if entry.is_symlink()},
        )
    return known[directory]


def _candidate_dirs(key: str, data_dir: Path, image_dir: Path | None) -> list[Path]:
    """Where the images of ``key``.csv are looked up, in order."""
    if image_dir is not None:
        return [image_dir]
    names = [f"{key}_images"] + (["train_images"] if key == "holdout" else []) + ["images"]
    return [data_dir / name for name in names if (data_dir / name).is_dir()] + [data_dir]


def _resolve_images(table: _Table, places: list[_Place], skip: set[int], roots: tuple[str, ...], problems: _Problems) -> None:
    """Find each row's image: in each place in turn, the id as a file name, then with each extension."""
    count = len(table.ids)
    table.image_paths, table.image_names, table.real_paths = [None] * count, [None] * count, [None] * count
    pending = [row for row in range(count) if row not in skip]
    for place in places:
        for suffix in ("",) + IMAGE_EXTENSIONS:
            still_missing = []
            for row in pending:
                name = table.ids[row] + suffix
                # Ids holding a sub-path ("a/b.png") are not in the flat listing: ask the file system.
                nested = "/" in name or os.sep in name
                if not (name in place.files or (nested and os.path.isfile(place.absolute + name))):
                    still_missing.append(row)
                    continue
                absolute = place.absolute + name
                if nested or name in place.links:
                    real = os.path.realpath(absolute)
                else:
                    real = absolute if place.real == place.absolute else place.real + name
                if not real.startswith(roots):
                    problems.add(
                        "image outside the data folder", table.where(row),
                        f"{place.relative + name} leads to {real}, outside {roots[0].rstrip(os.sep)} "
                        "(a symbolic link leaves the folder; the image_dir option reads images from elsewhere)",
                    )
                    continue
                table.image_paths[row], table.image_names[row], table.real_paths[row] = absolute, place.relative + name, real
            pending = still_missing
    looked_in = ", ".join(place.relative or "the folder itself" for place in places)
    for row in pending:
        problems.add(
            "missing image", table.where(row),
            f"image {table.ids[row]!r} not found in {looked_in} (tried the id, then the id + {'/'.join(IMAGE_EXTENSIONS)})",
        )


def _check_no_leaks(tables: list[_Table], problems: _Problems) -> None:
    """The same id in two labelled CSVs, or one file (symlinks resolved) behind two rows, would leak
    an image between training and evaluation.  Test ids may repeat labelled ids when the files differ."""
    labelled = [table for table in tables if table.key != "test"]
    for what, selected, values_of in (
        ("id in two splits", labelled, lambda table: table.ids),
        ("one image behind two rows", tables, lambda table: table.real_paths),
    ):
        values = [value for table in selected for value in values_of(table) if value]
        if len(set(values)) == len(values):
            continue
        # Only now pay for remembering where each value was seen, to name both places.
        seen: dict[str, tuple[_Table, int]] = {}
        for table in selected:
            for row, value in enumerate(values_of(table)):
                if not value:
                    continue
                if value not in seen:
                    seen[value] = (table, row)
                    continue
                other, other_row = seen[value]
                if what == "id in two splits":
                    if other is table:
                        continue  # a repeated row of one file, reported already
                    same = f"image id {value!r} is also in {other.where(other_row)}"
                else:
                    same = (
                        f"{table.image_names[row]!r} is the same file as {other.image_names[other_row]!r} "
                        f"({other.where(other_row)})"
                    )
                problems.add(what, table.where(row), same + ": one image in two rows would leak between training and evaluation")


@dataclass
class _Folder:
    """A contest folder's CSVs, read and checked, with the problems found."""

    data_dir: Path
    id_column: str
    label_columns: list[str]
    tables: list[_Table]
    problems: _Problems

    @property
    def by_key(self) -> dict[str, _Table]:
        return {table.key: table for table in self.tables}


def _read_folder(data_dir, id_column, label_columns, image_dir) -> tuple[_Folder, Path | None]:
    """Read every CSV of the folder and look up every image; gather the problems (option errors raise)."""
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist or is not a folder "
            "(option data_dir; the embedded dataset is created by `make data`)"
        )
    if image_dir is not None:
        image_dir = (data_dir / Path(image_dir).expanduser()).resolve()
        if not image_dir.is_dir():
            raise DataError(f"option image_dir={str(image_dir)!r} is not a folder")
    problems = _Problems()
    folder = _Folder(data_dir, id_column or "", [], [], problems)
    if not (data_dir / "train.csv").is_file():
        found = sorted(path.name for path in data_dir.iterdir())
        problems.add("missing file", "train.csv", f"not found: a contest folder needs train.csv (found: {_listing(found)})")
    parsed = {
        key: _parse_csv(data_dir / f"{key}.csv", problems)
        for key in ("train", "val", "holdout", "test")
        if (data_dir / f"{key}.csv").is_file()
    }
    if parsed.get("train") is None:
        return folder, image_dir
    train_csv = data_dir / "train.csv"
    folder.id_column, folder.label_columns = _training_columns(parsed["train"][1], train_csv, id_column, label_columns)
    if not folder.label_columns:
        problems.add("missing column", "train.csv line 1", f"no label columns besides the id column {folder.id_column!r}")
    skipped = {}
    for key, labelled in (("train", True), ("val", True), ("holdout", True), ("test", False)):
        if parsed.get(key) is not None:
            table, skipped[key] = _read_table(
                key, data_dir / f"{key}.csv", parsed[key], folder.id_column,
                folder.label_columns if labelled else None, problems,
            )
            if table is not None:
                folder.tables.append(table)
    roots = tuple(os.path.realpath(root) + os.sep for root in (data_dir, image_dir) if root is not None)
    places: dict[Path, _Place] = {}
    for table in folder.tables:
        table_places = [_place(directory, data_dir, places) for directory in _candidate_dirs(table.key, data_dir, image_dir)]
        _resolve_images(table, table_places, skipped[table.key], roots, problems)
    _check_no_leaks(folder.tables, problems)
    return folder, image_dir


# --------------------------------------------------------------------------- decoding


def _decode_image(path: str, keep_channels: bool) -> tuple[np.ndarray, bool, bool]:
    """uint8 (64, 64, C) pixels of one image, whether it is colour and whether it was resized.

    C is 3 with ``keep_channels`` (gray images repeated), else 1: colour images
    (channels not all equal) become luminance, as Pillow's "L" (ITU-R 601-2).
    """
    with Image.open(path) as image:
        if image.mode in HIGH_DEPTH_MODES:
            raise ValueError(f"{image.mode} images (16-bit or float) are not supported; expected 8-bit gray or RGB")
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")
        resized = image.size != (IMAGE_SIZE, IMAGE_SIZE)
        if resized:
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
        colour = pixels.ndim == 3 and not (
            np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
        )
        if keep_channels:
            pixels = pixels if pixels.ndim == 3 else np.repeat(pixels[..., np.newaxis], 3, axis=-1)
        elif colour:
            pixels = np.asarray(image.convert("L"))[..., np.newaxis]
        else:
            pixels = (pixels[..., 0] if pixels.ndim == 3 else pixels)[..., np.newaxis]
    return pixels, colour, resized


def _decode_tables(tables: list[_Table], keep_channels: bool, problems: _Problems) -> tuple[dict[str, np.ndarray], dict]:
    """uint8 (N, 64, 64, C) pixels per table and the facts worth a note; unreadable images become problems.

    A small thread pool decodes: Pillow releases the GIL while it inflates a PNG.
    """
    items = [(table, row) for table in tables for row, path in enumerate(table.image_paths) if path is not None]
    channels = 3 if keep_channels else 1
    pixels = {table.key: np.zeros((len(table.ids), IMAGE_SIZE, IMAGE_SIZE, channels), np.uint8) for table in tables}
    colour, resized, unreadable = [], [], []

    def decode(start: int) -> int:
        stop = min(start + DECODE_CHUNK, len(items))
        for index in range(start, stop):
            table, row = items[index]
            try:
                image, is_colour, was_resized = _decode_image(table.image_paths[row], keep_channels)
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
                unreadable.append((index, error))
                continue
            pixels[table.key][row] = image
            if is_colour:
                colour.append(index)
            if was_resized:
                resized.append(index)
        return stop - start

    show_progress = len(items) >= PROGRESS_MIN_IMAGES
    done = 0
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        for count in pool.map(decode, range(0, len(items), DECODE_CHUNK)):
            before, done = done, done + count
            if show_progress and (done // PROGRESS_STEP > before // PROGRESS_STEP or done == len(items)):
                print(f"contest loader: decoded {done}/{len(items)} images", file=sys.stderr, flush=True)
    for index, error in sorted(unreadable, key=lambda pair: pair[0]):
        table, row = items[index]
        problems.add("unreadable image", table.where(row), f"cannot read image {table.image_names[row]}: {error}")
    colour.sort()
    resized.sort()
    meta = {
        "n_images": len(items),
        "n_colour": len(colour),
        "colour_files": [items[index][0].image_names[items[index][1]] for index in colour[:SHOW_FIRST]],
        "n_resized": len(resized),
        "resized_files": [items[index][0].image_names[items[index][1]] for index in resized[:SHOW_FIRST]],
    }
    return pixels, meta


def _image_notes(meta: dict, keep_channels: bool) -> list[str]:
    """Notes on channels and sizes; colour conversion and resizing are also warnings, cached or not."""
    notes = []
    colour = meta["n_colour"]
    if keep_channels:
        notes.append(f"keep_channels=True: every image has 3 channels ({colour} of {meta['n_images']} in colour)")
    elif colour:
        message = (
            f"{colour} colour image(s) converted to gray luminance (0.299 R + 0.587 G + 0.114 B, as Pillow's 'L'): "
            f"{_listing(meta['colour_files'], colour)}; load with keep_channels=True to feed 3 channels instead"
        )
        notes.append(message)
        warnings.warn(message, stacklevel=3)
    else:
        notes.append(f"all {meta['n_images']} images are grayscale: loaded as 1 channel")
    if meta["n_resized"]:
        message = (
            f"{meta['n_resized']} image(s) were not {IMAGE_SIZE}x{IMAGE_SIZE} and were resized (bilinear): "
            f"{_listing(meta['resized_files'], meta['n_resized'])}"
        )
        notes.append(message)
        warnings.warn(message, stacklevel=3)
    return notes


def _to_float(pixels: np.ndarray) -> np.ndarray:
    return np.divide(pixels, np.float32(255), dtype=np.float32)


# --------------------------------------------------------------------------- fingerprint and cache


def _fingerprint(tables: list[_Table], options: dict) -> str:
    """sha256 of the loader options, each CSV's bytes and each image's relative path, size and mtime."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"loader_version": LOADER_VERSION, **options}, sort_keys=True).encode())
    for table in tables:
        digest.update(f"\0{table.name}\0{len(table.raw)}\0".encode())
        digest.update(table.raw)
        digest.update("\0".join(table.image_names).encode())
        # One flat int64 buffer, each stat result dropped at once: a third faster than
        # keeping 10,000 of them (scripts/benchmark_loader.py), and the same bytes.
        sizes_and_times = array.array("q")
        for status in map(os.stat, table.image_paths):
            sizes_and_times.extend((status.st_size, status.st_mtime_ns))
        digest.update(sizes_and_times.tobytes())
    return digest.hexdigest()


def _cache_entry(cache_dir: Path, data_dir: Path, options: dict, fingerprint: str) -> Path:
    """The cache folder of one load: ``index.npz`` (ids, decode facts) and one float32 ``<split>.npy`` per split."""
    # The prefix identifies "this folder loaded with these options", so a newer
    # fingerprint of the same folder can replace the stale entry instead of piling up.
    source = json.dumps({"data_dir": str(data_dir), **options}, sort_keys=True).encode()
    return cache_dir / f"contest-{hashlib.sha256(source).hexdigest()[:16]}-{fingerprint[:32]}"


def _read_cache(entry: Path, plan: dict[str, "_Planned"], channels: int) -> tuple[dict[str, np.ndarray], dict] | None:
    """Float images per split and the decode facts from the cache, or None when absent or unusable."""
    index = entry / "index.npz"
    if not index.is_file():
        return None
    try:
        with np.load(index) as archive:
            meta = json.loads(str(archive["meta"]))
            for name, planned in plan.items():
                if not np.array_equal(archive[f"ids_{name}"], planned.ids):
                    raise ValueError(f"the {name} ids differ from this load's split")
        images = {}
        for name, planned in plan.items():
            # Mapped, not read: the pages come from the OS file cache as the images are
            # first used, and copy-on-write ("c") lets a caller edit its arrays without
            # touching the cache.
            pixels = np.load(entry / f"{name}.npy", mmap_mode="c")
            if pixels.dtype != np.float32 or pixels.shape != (len(planned.ids), IMAGE_SIZE, IMAGE_SIZE, channels):
                raise ValueError(f"unexpected pixels for {name}: {pixels.dtype} {pixels.shape}")
            images[name] = np.asarray(pixels)  # a plain ndarray view of the mapping
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        # A bad cache is only a missed shortcut.
        warnings.warn(f"ignoring unreadable cache file in {entry}: {error}", stacklevel=3)
        return None
    return images, meta


def _write_cache(entry: Path, images: dict[str, np.ndarray], plan: dict[str, "_Planned"], meta: dict) -> None:
    """Write the float images, then the index that makes the entry valid; drop stale entries.

    Each file is written atomically and the index last, so an interrupted write
    leaves an entry without index, which reads as absent.
    """
    arrays = {"meta": np.array(json.dumps(meta))}
    try:
        for name, planned in plan.items():
            arrays[f"ids_{name}"] = planned.ids
            # File objects, because np.save and np.savez append their suffix to a name without it.
            with atomic_output(entry / f"{name}.npy") as temporary, open(temporary, "wb") as handle:
                np.save(handle, images[name])
        with atomic_output(entry / "index.npz") as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as error:
        warnings.warn(f"could not write the image cache {entry} ({error}); the next load decodes again", stacklevel=3)
        return
    prefix = entry.name.rsplit("-", 1)[0] + "-"
    for stale in entry.parent.glob(prefix + "*"):
        if stale != entry:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:  # the single .npz file the loader wrote before the mapped cache
                stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- splitting


def _combination_codes(labels: np.ndarray) -> np.ndarray:
    """One integer per label combination (row of 0/1 read as a binary number)."""
    return labels.astype(np.int64) @ (1 << np.arange(labels.shape[1] - 1, -1, -1, dtype=np.int64))


def _stratification_groups(labels: np.ndarray, fraction: float) -> tuple[np.ndarray | None, list[str]]:
    """Group ids for a stratified split of ``fraction``.

    Combinations too rare to reach both sides (fewer than ceil(1 / min(f, 1 - f))
    images) are merged into one group; then the smallest group joins the largest
    until scikit-learn can stratify (2+ members each, no more groups than images
    on either side).
    """
    codes = _combination_codes(labels)
    combos, counts = np.unique(codes, return_counts=True)
    minimum = max(2, math.ceil(1 / min(fraction, 1 - fraction)))
    rare = combos[counts < minimum]
    facts = []
    groups = codes.copy()
    if len(rare):
        width = labels.shape[1]
        facts.append(
            f"label combinations with fewer than {minimum} images were merged into one group: "
            + ", ".join(f"{c:0{width}b} ({n})" for c, n in zip(combos, counts) if n < minimum)
        )
        groups[np.isin(codes, rare)] = -1
    n_total = len(labels)
    n_carved = round(n_total * fraction)
    while True:
        names, sizes = np.unique(groups, return_counts=True)
        if len(names) <= 1:
            return None, facts + ["too few images per label combination to stratify: plain seeded shuffle"]
        if sizes.min() >= 2 and len(names) <= min(n_carved, n_total - n_carved):
            return groups, facts
        smallest, largest = names[np.argmin(sizes)], names[np.argmax(sizes)]
        groups[groups == smallest] = largest


@dataclass
class _Planned:
    """Which rows of which CSV make one split."""

    table: _Table
    rows: np.ndarray  # row indices into the table, in CSV order

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.table.ids)[self.rows]

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.table.labels is None else self.table.labels[self.rows]


def _carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Indices kept and carved out (both in row order) for a seeded stratified split."""
    n_total = len(labels)
    n_carved = round(n_total * fraction)
    everything = np.arange(n_total)
    if fraction == 0:
        return everything, everything[:0], ["fraction 0: nothing carved"]
    if n_carved == 0:
        return everything, everything[:0], [f"{n_total} images are too few to carve {fraction:.0%}: nothing carved"]
    if n_carved >= n_total:
        raise DataError(
            f"only {n_total} training image(s) left: too few to carve out {fraction:.0%} and keep some for training"
        )
    groups, facts = _stratification_groups(labels, fraction)
    kept, carved = train_test_split(everything, test_size=n_carved, random_state=seed, stratify=groups)
    return np.sort(kept), np.sort(carved), facts


def _plan_splits(
    tables: dict[str, _Table], holdout_fraction: float, val_fraction: float, seed: int
) -> tuple[dict[str, _Planned], list[str]]:
    """Rows of each split and notes saying how; deterministic in ``seed`` so cached and fresh loads agree."""
    train = tables["train"]
    rows = np.arange(len(train.ids))
    plan: dict[str, _Planned] = {}
    notes = []
    if "val" in tables:
        plan["val"] = _Planned(tables["val"], np.arange(len(tables["val"].ids)))
        notes.append(f"val: val.csv ({len(plan['val'].rows)} images)")
    else:
        kept, carved, facts = _carve(train.labels, val_fraction, seed)
        plan["val"], rows = _Planned(train, rows[carved]), rows[kept]
        notes.append(
            f"val.csv absent: val is a seeded (seed {seed}) split of {val_fraction:.0%} of train.csv "
            f"stratified on label combinations ({len(carved)} images)"
        )
        notes.extend(f"val split: {fact}" for fact in facts)

    if "holdout" in tables:
        plan["holdout"] = _Planned(tables["holdout"], np.arange(len(tables["holdout"].ids)))
        notes.append(f"holdout: holdout.csv ({len(plan['holdout'].rows)} images; holdout_fraction ignored)")
    else:
        # A different seed from the val carve, so the two draws are not the same permutation.
        kept, carved, facts = _carve(train.labels[rows], holdout_fraction, seed + 1)
        plan["holdout"], rows = _Planned(train, rows[carved]), rows[kept]
        notes.append(
            f"holdout: seeded (seed {seed + 1}) carve-out of {holdout_fraction:.0%} of the remaining training "
            f"images, stratified on label combinations ({len(carved)} images); "
            "never used for training or model selection"
        )
        notes.extend(f"holdout split: {fact}" for fact in facts)

    plan["train"] = _Planned(train, rows)
    notes.append(f"train: {len(rows)} images from train.csv")
    if "test" in tables:
        plan["test"] = _Planned(tables["test"], np.arange(len(tables["test"].ids)))
        notes.append(f"test: test.csv ({len(plan['test'].rows)} images, unlabelled)")
    else:
        notes.append("test.csv absent: no test split")
    return plan, notes


# --------------------------------------------------------------------------- public API


def _check_options(holdout_fraction: float, val_fraction: float, seed: int) -> None:
    if not 0 <= holdout_fraction < 1:
        raise DataError(f"option holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    if not 0 < val_fraction < 1:
        raise DataError(f"option val_fraction must be in (0, 1), got {val_fraction!r}")
    if not isinstance(seed, (int, np.integer)):
        raise DataError(f"option seed must be an integer, got {seed!r}")


def validate_contest(data_dir, *, id_column=None, label_columns=None, image_dir=None) -> list[str]:
    """Check every CSV row and decode every image of ``data_dir`` without keeping or caching pixels.

    Returns notes on what a load would do (colour images, resizing); raises
    :class:`FolderProblems` listing every problem found.
    """
    folder, _ = _read_folder(data_dir, id_column, label_columns, image_dir)
    _, meta = _decode_tables(folder.tables, False, folder.problems)
    if folder.problems:
        raise FolderProblems(folder.data_dir, folder.problems)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        notes = _image_notes(meta, keep_channels=False)
    return [f"{table.name}: {len(table.ids)} rows" for table in folder.tables] + notes


def load_contest(
    data_dir,
    *,
    id_column: str | None = None,
    label_columns: list[str] | None = None,
    image_dir=None,
    keep_channels: bool = False,
    holdout_fraction: float = 0.12,
    val_fraction: float = 0.2,
    seed: int = 0,
    cache_dir=None,
) -> ContestData:
    """Load the contest folder ``data_dir``, or raise one :class:`FolderProblems` listing all its problems.

    - CSVs: ``train.csv``, and ``val.csv``, ``holdout.csv``, ``test.csv`` when present.  The
      id column is the first (``id_column``), the labels are the other columns of train.csv
      (``label_columns``), each 0 or 1; test.csv needs only the id column.
    - Images: per id, in ``<split>_images/``, then ``images/``, then the folder itself
      (``holdout.csv`` also looks in ``train_images/``), or only in ``image_dir``; the id is
      tried as a file name, then with .png, .jpg and .jpeg appended.  Ids stay inside the folder.
    - Channels: 1, colour images converted to luminance with a warning; ``keep_channels=True``
      gives every image 3 channels.  Images of another size are resized to 64x64 with a warning.
    - Splits: val is val.csv or a seeded stratified ``val_fraction`` of train.csv; holdout is
      holdout.csv or a seeded stratified ``holdout_fraction`` of the rest, used for nothing but scores.
    - ``cache_dir``: where decoded pixels are cached, keyed by the CSVs' bytes, each image's
      path, size and mtime and the options (None: no cache).  The data folder is never written.
    """
    _check_options(holdout_fraction, val_fraction, seed)
    folder, image_dir = _read_folder(data_dir, id_column, label_columns, image_dir)
    if folder.problems:
        _decode_tables(folder.tables, keep_channels, folder.problems)  # to list unreadable images too
        raise FolderProblems(folder.data_dir, folder.problems)
    plan, split_notes = _plan_splits(folder.by_key, holdout_fraction, val_fraction, int(seed))
    options = {
        "id_column": folder.id_column,
        "label_columns": folder.label_columns,
        "image_dir": None if image_dir is None else os.path.relpath(image_dir, folder.data_dir),
        "keep_channels": bool(keep_channels),
        "holdout_fraction": float(holdout_fraction),
        "val_fraction": float(val_fraction),
        "seed": int(seed),
    }
    fingerprint = _fingerprint(folder.tables, options)
    channels = 3 if keep_channels else 1
    cached = None
    if cache_dir is not None:
        cache_entry = _cache_entry(Path(cache_dir).expanduser().resolve(), folder.data_dir, options, fingerprint)
        cached = _read_cache(cache_entry, plan, channels)
    if cached is None:
        table_pixels, meta = _decode_tables(folder.tables, keep_channels, folder.problems)
        if folder.problems:
            raise FolderProblems(folder.data_dir, folder.problems)
        decoded = {name: _to_float(table_pixels[planned.table.key][planned.rows]) for name, planned in plan.items()}
        if cache_dir is not None:
            _write_cache(cache_entry, decoded, plan, meta)
        cached = decoded, meta
    images, meta = cached
    splits = {
        name: Split(name=name, ids=planned.ids, images=images[name], labels=planned.labels)
        for name, planned in plan.items()
    }
    return ContestData(
        data_dir=folder.data_dir,
        label_names=list(folder.label_columns),
        train=splits["train"],
        val=splits["val"],
        holdout=splits["holdout"],
        test=splits.get("test"),
        fingerprint=fingerprint,
        notes=_image_notes(meta, keep_channels) + split_notes,
    )


def black_mask(images: np.ndarray) -> np.ndarray:
    """True for totally black images (every pixel 0)."""
    images = np.asarray(images)
    return images.reshape(len(images), -1).max(axis=1) == 0


def drop_black_images(split: Split, keep: int = 1) -> Split:
    """The split without its black images, except the ``keep`` ones with the smallest ids (order kept)."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    black = np.flatnonzero(black_mask(split.images))
    kept_black = black[np.argsort(split.ids[black], kind="stable")[:keep]]
    dropped = np.setdiff1d(black, kept_black)
    return split.take(np.setdiff1d(np.arange(len(split)), dropped))


def subsample(split: Split, max_images: int | None, seed: int) -> Split:
    """At most ``max_images`` images drawn without replacement (seeded, order kept); None = unchanged."""
    if max_images is None or max_images >= len(split):
        return split
    if max_images < 0:
        raise ValueError(f"max_images must be >= 0 or None, got {max_images}")
    chosen = np.random.default_rng(seed).choice(len(split), size=max_images, replace=False)
    return split.take(np.sort(chosen))


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m contest_study.data validate DIR``: 0 when the folder is clean, 1 with problems, 2 on usage errors."""
    parser = argparse.ArgumentParser(prog="python -m contest_study.data", description="Check a contest folder.")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="list every problem of a contest folder, without loading it")
    validate.add_argument("data_dir", type=Path, metavar="DIR")
    validate.add_argument("--id-column", help="the id column (default: the first column of train.csv)")
    validate.add_argument("--label-columns", help="comma-separated label columns (default: all but the id column)")
    validate.add_argument("--image-dir", help="folder holding every image (default: the contest layout)")
    arguments = parser.parse_args(argv)
    try:
        notes = validate_contest(
            arguments.data_dir,
            id_column=arguments.id_column,
            label_columns=None if arguments.label_columns is None else arguments.label_columns.split(","),
            image_dir=arguments.image_dir,
        )
    except FolderProblems as error:
        print(error)
        return 1
    except DataError as error:
        print(f"{parser.prog} validate: {error}", file=sys.stderr)
        return 2
    print(f"contest folder {Path(arguments.data_dir).resolve()}: no problem found")
    for note in notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
