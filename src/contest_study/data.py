"""Load a contest folder into train / val / holdout / test arrays.

A contest folder holds ``train.csv`` and optionally ``val.csv``, ``holdout.csv``
and ``test.csv``.  The first column of each CSV is the image id (with or
without the file extension), the other columns of the labelled CSVs are the
binary labels, kept under the names found in ``train.csv``.  ``id_column`` and
``label_columns`` name them explicitly.  Images are looked up, per id, in
``<split>_images/``, then ``images/``, then the folder itself (``holdout.csv``
also looks in ``train_images/``, since a hold-out is carved from training
images), or only in the folder given by ``image_dir``.  For each place the id
is tried as a file name, then with ``.png``, ``.jpg`` and ``.jpeg`` appended.

Splits:

- ``val``: ``val.csv`` when present, else a seeded split of ``train.csv``
  (``val_fraction``) stratified on the label combinations.
- ``holdout``: ``holdout.csv`` when present, else a seeded stratified carve-out
  of ``holdout_fraction`` of the training images left after the val split.
  It is never used for training, early stopping, thresholds or model selection.
- ``test``: ``test.csv`` when present (only its id column is read).

Stratification groups images by their full label combination (e.g. ``"101"``);
combinations too rare to reach both sides of a split (fewer than
``ceil(1 / min(f, 1 - f))`` images for a fraction ``f``) are merged into one
group of rare combinations; that group, when itself too small (and, on tiny
data, any group beyond what the split sizes allow), joins the most common
combination.  ``ContestData.notes`` records what was done.

Images become float32 arrays of shape (N, 64, 64, C) scaled to [0, 1].  The
contest stores grayscale images as RGB PNGs, so when every image has three
equal channels they collapse to C = 1 (``keep_channels=True`` keeps C = 3);
if any image has different channels all images keep 3 and a note says which.
Images of another size are resized to 64x64 (Pillow, bilinear) rather than
rejected, because a contest folder is not ours to fix; a warning counts them.

Decoding 20,000 PNGs takes a while, so decoded pixels are cached as uint8
``.npz`` files in ``cache_dir`` (one per folder and option set, in split order,
with the ids of each split), keyed by a fingerprint of the CSV bytes, of each
referenced image's path, size and modification time, and of the loader
options.  Any change in the folder gives a new fingerprint, hence a fresh
decode; the stale file of the same folder and options is then deleted.  The
split assignment is recomputed on every load (it only needs the labels) and
checked against the ids stored in the cache.  Nothing is ever written into the
data folder.
"""

from __future__ import annotations

import csv
import functools
import gc
import hashlib
import io
import json
import math
import mmap
import os
import struct
import sys
import tempfile
import warnings
import zipfile
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

IMAGE_SIZE = 64
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Bump when the decoded pixels or the split logic change, so old caches and
# registry entries keyed by the fingerprint are not reused by mistake.
LOADER_VERSION = 1
# How many offending ids / files an error message lists before "...".
SHOW_FIRST = 5
# Progress lines go to stderr every PROGRESS_STEP decoded images, for folders
# big enough that the first load takes noticeable time.
PROGRESS_STEP = 5000
PROGRESS_MIN_IMAGES = 5000
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
# Images converted to float per task: 1024 grayscale images are 4 MiB of uint8.
CONVERT_CHUNK = 1024
BIG_ARRAY_BYTES = 64 << 20  # see _new_float32
ONE_VALUES = ("1", "1.0")
ZERO_VALUES = ("0", "0.0")


class DataError(ValueError):
    """A contest folder or a loader option is unusable; the message names the file, row or option."""


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
        return int(self.train.images.shape[-1])


# --------------------------------------------------------------------------- CSV reading


@dataclass
class _Table:
    """One CSV of the folder, validated, with its images resolved."""

    key: str  # "train", "val", "holdout" or "test"
    path: Path
    raw: bytes
    ids: list[str]
    lines: list[int]  # CSV line number of each row (header is line 1)
    labels: np.ndarray | None  # int8 (N, n_labels)
    # Plain strings, not Paths: 20,000 pathlib objects cost more than the whole cached load.
    image_paths: list[str] = field(default_factory=list)  # absolute
    image_names: list[str] = field(default_factory=list)  # relative to the data folder

    @property
    def name(self) -> str:
        return self.path.name

    def where(self, row: int) -> str:
        return f"{self.name} line {self.lines[row]}"


def _listing(items, total: int | None = None) -> str:
    """'a, b, c, ...' with at most SHOW_FIRST items."""
    items = list(items)
    total = len(items) if total is None else total
    shown = ", ".join(str(item) for item in items[:SHOW_FIRST])
    return shown + (", ..." if total > SHOW_FIRST else "")


def _parse_csv(path: Path) -> tuple[bytes, list[str], list[list[str]], list[int]]:
    """Header, rows and the line number of each row; blank lines are skipped."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            if header is None:
                header = record
                continue
            if len(record) != len(header):
                raise DataError(
                    f"{path}, line {reader.line_num}: {len(record)} fields where the header has {len(header)}"
                )
            rows.append(record)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from None
    if header is None:
        raise DataError(f"{path} is empty: expected a header line such as image_id,label_1,label_2,label_3")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: column(s) {_listing(repeated)} appear more than once in the header")
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    return raw, header, rows, lines


def _training_columns(header: list[str], path: Path, id_column, label_columns) -> tuple[str, list[str]]:
    """The id column and label columns, from the options or from train.csv's header."""
    if id_column is None:
        id_column = header[0]
    elif id_column not in header:
        raise DataError(
            f"option id_column={id_column!r} names no column of {path} (columns found: {', '.join(header)})"
        )
    if label_columns is None:
        label_columns = [name for name in header if name != id_column]
        if not label_columns:
            raise DataError(f"{path} has no label columns besides the id column {id_column!r}")
    else:
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


def _read_table(
    key: str, path: Path, id_column: str | None, label_columns: list[str] | None
) -> tuple[_Table, str, list[str]]:
    """Read and validate one CSV; ``label_columns=None`` on a non-train table means ids only (test.csv)."""
    raw, header, rows, lines = _parse_csv(path)
    if key == "train":
        id_column, label_columns = _training_columns(header, path, id_column, label_columns)
    else:
        expected = [id_column] + (label_columns or [])
        missing = [name for name in expected if name not in header]
        if missing:
            raise DataError(
                f"{path} lacks the expected column(s) {', '.join(missing)}; columns found: {', '.join(header)}"
            )
    columns = list(zip(*rows))
    ids = list(columns[header.index(id_column)])
    table = _Table(key=key, path=path, raw=raw, ids=ids, lines=lines, labels=None)

    if not all(map(str.strip, ids)):
        row = next(row for row, image_id in enumerate(ids) if not image_id.strip())
        raise DataError(f"{table.where(row)}: the image id (column {id_column!r}) is empty")
    if len(set(ids)) != len(ids):
        first_row: dict[str, int] = {}
        for row, image_id in enumerate(ids):
            if image_id in first_row:
                raise DataError(
                    f"{path}: image id {image_id!r} is listed twice "
                    f"(lines {lines[first_row[image_id]]} and {lines[row]})"
                )
            first_row[image_id] = row

    if label_columns is not None:
        table.labels = _parse_labels(table, [columns[header.index(name)] for name in label_columns], label_columns)
    return table, id_column, label_columns


def _parse_labels(table: _Table, columns: list[tuple[str, ...]], names: list[str]) -> np.ndarray:
    """int8 (N, n_labels) from the label columns' text; fail naming the first value that is not 0/1."""
    if all(set(column) <= {"0", "1"} for column in columns):
        # The usual case, without a per-value Python loop: the digits' bytes minus ord("0").
        digits = [np.frombuffer("".join(column).encode("ascii"), np.uint8) for column in columns]
        return (np.stack(digits, axis=1) - ord("0")).astype(np.int8)
    values = np.strings.strip(np.array(columns, dtype=str).T)
    known = np.isin(values, ONE_VALUES + ZERO_VALUES)
    if not known.all():
        bad_rows, bad_cols = np.nonzero(~known)
        row, col = int(bad_rows[0]), int(bad_cols[0])
        value = str(values[row, col])
        problem = "is empty" if value == "" else f"is {value!r}, not 0 or 1"
        raise DataError(
            f"{table.where(row)}, column {names[col]!r}: label {problem} "
            f"({len(bad_rows)} bad label value(s) in this file)"
        )
    return np.isin(values, ONE_VALUES).astype(np.int8)


# --------------------------------------------------------------------------- image lookup


def _candidate_dirs(key: str, data_dir: Path, image_dir: Path | None) -> list[Path]:
    if image_dir is not None:
        return [image_dir]
    names = [f"{key}_images"] + (["train_images"] if key == "holdout" else []) + ["images"]
    return [data_dir / name for name in names if (data_dir / name).is_dir()] + [data_dir]


def _resolve_images(table: _Table, dirs: list[Path], data_dir: Path, listings: dict[Path, set[str]]) -> None:
    """Fill the table's image paths; fail listing the ids whose image is in none of ``dirs``."""
    places = []
    for directory in dirs:
        if directory not in listings:
            listings[directory] = set(os.listdir(directory))
        relative = os.path.relpath(directory, data_dir)
        places.append((str(directory) + os.sep, "" if relative == "." else relative + os.sep, listings[directory]))
    suffixes = ("",) + IMAGE_EXTENSIONS
    if _resolve_all_alike(table, places, suffixes):
        return
    missing: list[int] = []
    for row, image_id in enumerate(table.ids):
        # Ids holding a sub-path ("a/b.png") are not in the flat listings: ask the file system.
        nested = "/" in image_id or os.sep in image_id
        found = None
        for absolute, relative, listing in places:
            for suffix in suffixes:
                name = image_id + suffix
                if name in listing or (nested and os.path.isfile(absolute + name)):
                    found = (absolute + name, relative + name)
                    break
            if found is not None:
                break
        if found is None:
            missing.append(row)
        else:
            table.image_paths.append(found[0])
            table.image_names.append(found[1])
    if missing:
        shown = [f"{table.ids[row]!r} ({table.where(row)})" for row in missing]
        raise DataError(
            f"{len(missing)} image(s) listed in {table.path} not found in {', '.join(str(d) for d in dirs)} "
            f"(tried the id, then id + {'/'.join(IMAGE_EXTENSIONS)}): {_listing(shown)}"
        )


def _resolve_all_alike(table: _Table, places: list, suffixes: tuple[str, ...]) -> bool:
    """The usual case in a few set operations: every image is in the first place, under the first name, tried.

    True when it applied: the first (place, suffix) pair that matches any id
    matches all of them, which is what the per-id search would conclude.
    """
    if any("/" in image_id or os.sep in image_id for image_id in table.ids):
        return False
    for absolute, relative, listing in places:
        for suffix in suffixes:
            names = [image_id + suffix for image_id in table.ids]
            if listing.isdisjoint(names):
                continue
            if not listing.issuperset(names):
                return False
            table.image_paths = [absolute + name for name in names]
            table.image_names = [relative + name for name in names]
            return True
    return False


def _check_no_repeats(tables: list[_Table], what: str) -> None:
    """Fail naming both places of any value seen twice: ids across labelled CSVs, or image files anywhere.

    The same id in two labelled splits, or one file behind two rows (say
    ``0001`` in train.csv and ``0001.png`` in val.csv), would leak an image
    between training and evaluation.  Test ids may reuse labelled ids (some
    contests number each split from 1) as long as the files differ.
    """
    if what == "image id":
        selected, values_of = [table for table in tables if table.key != "test"], (lambda table: table.ids)
    else:
        selected, values_of = tables, (lambda table: table.image_names)
    everything = [value for table in selected for value in values_of(table)]
    if len(set(everything)) == len(everything):
        return
    # Only now pay for remembering where each value was seen, to name both places.
    seen: dict[str, tuple[_Table, int]] = {}
    clashes = []
    for table in selected:
        for row, value in enumerate(values_of(table)):
            if value in seen:
                other, other_row = seen[value]
                clashes.append(f"{value!r} ({other.where(other_row)}, {table.where(row)})")
            else:
                seen[value] = (table, row)
    raise DataError(
        f"{len(clashes)} {what}(s) appear in more than one split or row, which would leak images between "
        f"training and evaluation: {_listing(clashes)}"
    )


# --------------------------------------------------------------------------- fingerprint and cache


def _fingerprint(tables: list[_Table], options: dict) -> str:
    """sha256 of the loader options, each CSV's bytes and each image's relative path, size and mtime."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"loader_version": LOADER_VERSION, **options}, sort_keys=True).encode())
    for table in tables:
        digest.update(f"\0{table.name}\0{len(table.raw)}\0".encode())
        digest.update(table.raw)
        digest.update("\0".join(table.image_names).encode())
        statuses = [os.stat(path) for path in table.image_paths]
        sizes_and_times = [(status.st_size, status.st_mtime_ns) for status in statuses]
        digest.update(np.array(sizes_and_times, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _cache_file(cache_dir: Path, data_dir: Path, options: dict, fingerprint: str) -> Path:
    # The prefix identifies "this folder loaded with these options", so a newer
    # fingerprint of the same folder can replace the stale file instead of piling up.
    source = json.dumps({"data_dir": str(data_dir), **options}, sort_keys=True).encode()
    return cache_dir / f"contest-{hashlib.sha256(source).hexdigest()[:16]}-{fingerprint[:32]}.npz"


class _CacheUnusable(Exception):
    """The cache file cannot serve this load; decode instead."""


def _npz_members(path: Path) -> dict[str, tuple[int, tuple, np.dtype]]:
    """Data offset, shape and dtype of each array in an uncompressed .npz.

    np.load reads .npz members through zipfile in 256 KiB pieces with a CRC
    check, and needs the whole uint8 array in memory before the float
    conversion; reading the bytes at their offset is what makes a cached load
    20x faster than decoding.  Cache files are written atomically, so the CRC
    would guard nothing.
    """
    members = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                raise _CacheUnusable(f"unexpected member {info.filename}")
            handle.seek(info.header_offset)
            name_length, extra_length = struct.unpack("<HH", handle.read(30)[26:30])
            handle.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
            if fortran_order or dtype.hasobject:
                raise _CacheUnusable(f"unexpected layout of {info.filename}")
            members[info.filename[: -len(".npy")]] = (handle.tell(), shape, dtype)
    return members


def _read_member(path: Path, member: tuple[int, tuple, np.dtype]) -> np.ndarray:
    offset, shape, dtype = member
    count = math.prod(shape)
    array = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if array.size != count:
        raise _CacheUnusable("truncated file")
    return array.reshape(shape)


def _read_cache(
    path: Path, plan: dict[str, "_Planned"], prepared: dict[str, np.ndarray], pool: ThreadPoolExecutor
) -> tuple[dict[str, np.ndarray], dict] | None:
    """Float images per split and the decode facts from the cache, or None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        members = _npz_members(path)
        meta = json.loads(str(_read_member(path, members["meta"])))
        images = {}
        for name, planned in plan.items():
            if not np.array_equal(_read_member(path, members[f"ids_{name}"]), planned.ids):
                raise _CacheUnusable(f"the {name} ids differ from this load's split")
            offset, shape, dtype = members[f"pixels_{name}"]
            if dtype != np.uint8 or shape[:3] != (len(planned.ids), IMAGE_SIZE, IMAGE_SIZE) or len(shape) != 4:
                raise _CacheUnusable(f"unexpected pixels for {name}")
            images[name] = _mapped_to_float(path, offset, _output_array(prepared, name, shape), pool)
    except (_CacheUnusable, OSError, ValueError, KeyError, zipfile.BadZipFile, struct.error) as error:
        # A bad cache is only a missed shortcut.
        warnings.warn(f"ignoring unreadable cache file {path}: {error}", stacklevel=4)
        return None
    return images, meta


def _write_cache(path: Path, pixels: dict[str, np.ndarray], plan: dict[str, "_Planned"], meta: dict) -> None:
    """Write atomically (temp file in the same folder + os.replace) and drop stale versions."""
    arrays = {"meta": np.array(json.dumps(meta))}
    for name, planned in plan.items():
        arrays[f"ids_{name}"] = planned.ids
        arrays[f"pixels_{name}"] = pixels[name]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False)
        try:
            with handle:
                np.savez(handle, **arrays)  # stored, not compressed: see _npz_members
            os.replace(handle.name, path)
        except BaseException:
            os.unlink(handle.name)
            raise
    except OSError as error:
        warnings.warn(f"could not write the image cache {path} ({error}); the next load decodes again", stacklevel=4)
        return
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for stale in path.parent.glob(prefix + "*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------- decoding


def _decode_image(path: str) -> tuple[np.ndarray, bool]:
    """uint8 pixels of one image at 64x64 and whether it had to be resized.

    Returns a 2-D array when the image has a single channel or three equal
    channels (checked on every pixel), a (64, 64, 3) array otherwise.
    """
    with Image.open(path) as image:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            raise ValueError(f"{image.mode} images (16-bit or float) are not supported; expected 8-bit gray or RGB")
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in ("1", "LA", "La") else "RGB")
        resized = image.size != (IMAGE_SIZE, IMAGE_SIZE)
        if resized:
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
    if pixels.ndim == 3:
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        if np.array_equal(red, green) and np.array_equal(green, blue):
            pixels = red
    return pixels, resized


@dataclass
class _Decoded:
    gray: np.ndarray  # (N, 64, 64) uint8; for colour images the first channel
    colour: dict[int, np.ndarray]  # row -> (64, 64, 3) for images whose channels differ
    resized: list[int]


def _decode_all(paths: list[str], where, pool: ThreadPoolExecutor) -> _Decoded:
    """Decode every image on a small thread pool (Pillow releases the GIL while it inflates a PNG).

    ``where(row)`` names the CSV line of an image for error messages.
    """
    total = len(paths)
    decoded = _Decoded(gray=np.empty((total, IMAGE_SIZE, IMAGE_SIZE), np.uint8), colour={}, resized=[])

    def decode_chunk(rows: range) -> int:
        for row in rows:
            try:
                pixels, resized = _decode_image(paths[row])
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
                raise DataError(f"cannot read image {paths[row]} ({where(row)}): {error}") from None
            if pixels.ndim == 3:
                decoded.colour[row] = pixels
                decoded.gray[row] = pixels[..., 0]
            else:
                decoded.gray[row] = pixels
            if resized:
                decoded.resized.append(row)
        return len(rows)

    chunk = 250
    show_progress = total >= PROGRESS_MIN_IMAGES
    done = 0
    pending = {pool.submit(decode_chunk, range(start, min(start + chunk, total))) for start in range(0, total, chunk)}
    while pending:
        finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for future in finished:
            if future.exception() is not None:
                for other in pending:
                    other.cancel()
                raise future.exception()
            before, done = done, done + future.result()
            if show_progress and (done // PROGRESS_STEP > before // PROGRESS_STEP or done == total):
                print(f"contest loader: decoded {done}/{total} images", file=sys.stderr, flush=True)
    decoded.resized.sort()
    return decoded


def _decode_tables(
    tables: list[_Table], keep_channels: bool, pool: ThreadPoolExecutor
) -> tuple[dict[str, np.ndarray], dict]:
    """uint8 pixels (N, 64, 64, C) per table, with C shared by all tables, and the facts worth a note."""
    paths = [path for table in tables for path in table.image_paths]
    owners = [(table, row) for table in tables for row in range(len(table.ids))]
    decoded = _decode_all(paths, lambda row: owners[row][0].where(owners[row][1]), pool)
    relative = [name for table in tables for name in table.image_names]
    colour_rows = sorted(decoded.colour)
    channels = 3 if keep_channels or colour_rows else 1
    if channels == 1:
        everything = decoded.gray[..., np.newaxis]
    else:
        everything = np.repeat(decoded.gray[..., np.newaxis], 3, axis=-1)
        for row, pixels in decoded.colour.items():
            everything[row] = pixels
    pixels, start = {}, 0
    for table in tables:
        pixels[table.key] = everything[start : start + len(table.ids)]
        start += len(table.ids)
    meta = {
        "channels": channels,
        "n_images": len(paths),
        "colour_files": [relative[row] for row in colour_rows[:SHOW_FIRST]],
        "n_colour": len(colour_rows),
        "resized_files": [relative[row] for row in decoded.resized[:SHOW_FIRST]],
        "n_resized": len(decoded.resized),
    }
    return pixels, meta


def _new_float32(shape: tuple) -> np.ndarray:
    """An uninitialised float32 array; big ones come with their memory already faulted in.

    numpy asks for transparent huge pages on big arrays; on the 2-core VM this
    was measured on, faulting in those few hundred MB took anywhere from 0.1 to
    2 s, a cached load's whole budget.  Big arrays here are an anonymous mapping
    of normal pages written once per page right away (on a pool thread, while
    the main thread reads the file stats), which took a steady ~0.1 s.  The
    mapping is released with the last array viewing it.
    """
    nbytes = math.prod(shape) * 4
    if nbytes < BIG_ARRAY_BYTES or not hasattr(mmap, "MAP_ANONYMOUS"):
        return np.empty(shape, np.float32)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    flat = np.frombuffer(memory, np.float32)
    flat[:: mmap.PAGESIZE // 4] = 0  # one write per page faults it in
    return flat.reshape(shape)


def _prepare_outputs(plan: dict[str, "_Planned"], channels: int, pool: ThreadPoolExecutor) -> dict[str, Future]:
    """Float32 arrays for every split, for the likely channel count, made on the pool threads."""
    return {
        name: pool.submit(_new_float32, (len(planned.rows), IMAGE_SIZE, IMAGE_SIZE, channels))
        for name, planned in plan.items()
    }


def _output_array(prepared: dict[str, np.ndarray], name: str, shape: tuple) -> np.ndarray:
    """The array prepared for split ``name`` if its shape is right (the channel count was a guess), else a new one."""
    out = prepared.pop(name, None)
    return out if out is not None and out.shape == tuple(shape) else _new_float32(tuple(shape))


def _fill_in_chunks(out: np.ndarray, fill, pool: ThreadPoolExecutor) -> np.ndarray:
    """Fill ``out`` by ``fill(start, stop, out[start:stop])`` calls on a thread pool.

    Converting 20,000 images to float is most of a cached load; numpy releases
    the GIL, so slices run in parallel.
    """
    count = len(out)

    def work(start: int) -> None:
        stop = min(start + CONVERT_CHUNK, count)
        fill(start, stop, out[start:stop])

    list(pool.map(work, range(0, count, CONVERT_CHUNK)))
    return out


def _to_float(pixels: np.ndarray, out: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], written into ``out``."""

    def fill(start: int, stop: int, out_slice: np.ndarray) -> None:
        np.divide(pixels[start:stop], np.float32(255), out=out_slice, dtype=np.float32)

    return _fill_in_chunks(out, fill, pool)


def _mapped_to_float(path: Path, offset: int, out: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
    """uint8 pixels stored at ``offset`` of ``path`` -> float32 in [0, 1] in ``out``.

    The file is mapped, not read: the conversion reads the OS file cache directly.
    """
    return _to_float(np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=out.shape), out, pool)


# --------------------------------------------------------------------------- splitting


def _combination_codes(labels: np.ndarray) -> np.ndarray:
    """One integer per label combination (row of 0/1 read as a binary number)."""
    return labels.astype(np.int64) @ (1 << np.arange(labels.shape[1] - 1, -1, -1, dtype=np.int64))


def _stratification_groups(labels: np.ndarray, fraction: float) -> tuple[np.ndarray | None, list[str]]:
    """Group ids for a stratified split of ``fraction``, merging rare label combinations (see module doc)."""
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
    # sklearn needs every group to have 2+ members and at most as many groups as
    # images on each side: fold the smallest group into the largest until it holds.
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


# --------------------------------------------------------------------------- public API


def _check_options(holdout_fraction: float, val_fraction: float, seed: int) -> None:
    if not 0 <= holdout_fraction < 1:
        raise DataError(f"option holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    if not 0 < val_fraction < 1:
        raise DataError(f"option val_fraction must be in (0, 1), got {val_fraction!r}")
    if not isinstance(seed, (int, np.integer)):
        raise DataError(f"option seed must be an integer, got {seed!r}")


def _without_cyclic_gc(function):
    """Run ``function`` with Python's cyclic garbage collector paused.

    Reading 20,000 CSV rows and file stats allocates enough container objects
    to trigger full collections over everything numpy, scikit-learn (and, in a
    notebook, TensorFlow) created: ~100 ms, a third of a cached load.
    Reference counting still frees everything at once; only cycles wait.
    """

    @functools.wraps(function)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return function(*args, **kwargs)
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            gc.enable()

    return paused


@_without_cyclic_gc
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
    """Load the contest folder ``data_dir`` (see the module docstring for the rules).

    ``image_dir`` (absolute or relative to ``data_dir``) replaces the default
    image folders for every CSV.  ``cache_dir=None`` disables the pixel cache;
    notebooks pass ``StudyContext.cache_dir``.
    """
    _check_options(holdout_fraction, val_fraction, seed)
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist or is not a folder "
            "(option data_dir / STUDY_DATA_DIR; the embedded dataset is created by `make data`)"
        )
    train_csv = data_dir / "train.csv"
    if not train_csv.is_file():
        found = sorted(p.name for p in data_dir.iterdir())
        raise DataError(
            f"{train_csv} not found: a contest folder needs train.csv (found: {_listing(found, len(found))})"
        )
    if image_dir is not None:
        image_dir = (data_dir / Path(image_dir).expanduser()).resolve()
        if not image_dir.is_dir():
            raise DataError(f"option image_dir={str(image_dir)!r} is not a folder")

    train, id_column, label_columns = _read_table("train", train_csv, id_column, label_columns)
    tables = [train]
    for key, labelled in (("val", True), ("holdout", True), ("test", False)):
        path = data_dir / f"{key}.csv"
        if path.is_file():
            tables.append(_read_table(key, path, id_column, label_columns if labelled else None)[0])
    by_key = {table.key: table for table in tables}

    _check_no_repeats(tables, "image id")
    plan, split_notes = _plan_splits(by_key, holdout_fraction, val_fraction, int(seed))

    # One pool for the whole load: starting threads is slow on a busy machine.
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        # Faulting in a few hundred MB of output takes about as long as the
        # file lookups and stats below: a pool thread does it meanwhile.
        preparing = _prepare_outputs(plan, 3 if keep_channels else 1, pool)
        listings: dict[Path, set[str]] = {}
        for table in tables:
            _resolve_images(table, _candidate_dirs(table.key, data_dir, image_dir), data_dir, listings)
        _check_no_repeats(tables, "image file")
        options = {
            "id_column": id_column,
            "label_columns": label_columns,
            "image_dir": None if image_dir is None else os.path.relpath(image_dir, data_dir),
            "keep_channels": bool(keep_channels),
            "holdout_fraction": float(holdout_fraction),
            "val_fraction": float(val_fraction),
            "seed": int(seed),
        }
        fingerprint = _fingerprint(tables, options)
        prepared = {name: future.result() for name, future in preparing.items()}

        loaded = None
        if cache_dir is not None:
            cache_file = _cache_file(Path(cache_dir).expanduser().resolve(), data_dir, options, fingerprint)
            loaded = _read_cache(cache_file, plan, prepared, pool)
        if loaded is None:
            table_pixels, meta = _decode_tables(tables, keep_channels, pool)
            pixels = {name: table_pixels[planned.table.key][planned.rows] for name, planned in plan.items()}
            if cache_dir is not None:
                _write_cache(cache_file, pixels, plan, meta)
            images = {
                name: _to_float(split_pixels, _output_array(prepared, name, split_pixels.shape), pool)
                for name, split_pixels in pixels.items()
            }
            loaded = images, meta
    images, meta = loaded

    splits = {
        name: Split(name=name, ids=planned.ids, images=images[name], labels=planned.labels)
        for name, planned in plan.items()
    }
    return ContestData(
        data_dir=data_dir,
        label_names=list(label_columns),
        train=splits["train"],
        val=splits["val"],
        holdout=splits["holdout"],
        test=splits.get("test"),
        fingerprint=fingerprint,
        notes=_image_notes(meta, keep_channels) + split_notes,
    )


def _image_notes(meta: dict, keep_channels: bool) -> list[str]:
    notes = []
    if meta["n_colour"]:
        notes.append(
            f"{meta['n_colour']} image(s) have three different channels "
            f"(first: {_listing(meta['colour_files'], meta['n_colour'])}): all images keep 3 channels"
        )
    elif keep_channels:
        notes.append("keep_channels=True: images keep 3 (equal) channels")
    else:
        notes.append(f"all {meta['n_images']} images are grayscale (three equal channels): loaded as 1 channel")
    if meta["n_resized"]:
        message = (
            f"{meta['n_resized']} image(s) were not {IMAGE_SIZE}x{IMAGE_SIZE} and were resized (bilinear): "
            f"{_listing(meta['resized_files'], meta['n_resized'])}"
        )
        notes.append(message)
        warnings.warn(message, stacklevel=4)
    return notes


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
