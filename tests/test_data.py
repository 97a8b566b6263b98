"""The contest-folder loader: what a notebook gets, what a bad folder is told, and the cache."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import contest_study.data as data_module
from contest_study.data import (
    DataError,
    FolderProblems,
    Split,
    black_mask,
    drop_black_images,
    load_contest,
    subsample,
)
from fault_folders import FAULTS, HEALTHY, read_rows, write_rows


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder`` with its size, mtime and bytes."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def all_splits(data):
    return {"train": data.train, "val": data.val, "holdout": data.holdout, "test": data.test}


def assert_same_data(first, second) -> None:
    assert first.fingerprint == second.fingerprint
    for name, split in all_splits(first).items():
        other = all_splits(second)[name]
        if split is None:
            assert other is None
            continue
        np.testing.assert_array_equal(split.ids, other.ids)
        np.testing.assert_array_equal(split.images, other.images)
        if split.labels is None:
            assert other.labels is None
        else:
            np.testing.assert_array_equal(split.labels, other.labels)


# --------------------------------------------------------------------------- what a notebook gets


def test_loads_contest_layout(make_contest_folder):
    folder = make_contest_folder(n_train=30, n_val=10, n_test=8, label_names=("cat", "dog", "bird"))
    data = load_contest(folder)

    assert data.label_names == ["cat", "dog", "bird"]
    assert data.channels == 1
    assert len(data.val) == 10 and len(data.test) == 8
    assert len(data.train) + len(data.holdout) == 30
    for split in (data.train, data.val, data.holdout, data.test):
        assert split.images.dtype == np.float32
        assert split.images.shape == (len(split), 64, 64, 1)
        assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert data.train.labels.dtype == np.int8 and set(np.unique(data.train.labels)) <= {0, 1}
    assert data.test.labels is None and data.test.name == "test"
    assert set(data.val.ids) == {row[0] for row in read_rows(folder / "val.csv")[1:]}

    # Pixels and labels are exactly those of the files, row for row.
    rows = {row[0]: row[1:] for row in read_rows(folder / "train.csv")[1:]}
    first_id = data.train.ids[0]
    expected = np.asarray(Image.open(folder / "train_images" / first_id))[..., 0] / 255
    np.testing.assert_allclose(data.train.images[0, ..., 0], expected, atol=1e-6)
    assert data.train.labels[0].tolist() == [int(v) for v in rows[first_id]]
    assert any("1 channel" in note for note in data.notes)


def with_red_pixel(path: Path) -> np.ndarray:
    """Make one pixel of the image at ``path`` red; return its expected luminance (Pillow's "L")."""
    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    pixels[10, 20] = (255, 0, 0)
    Image.fromarray(pixels).save(path)
    return np.asarray(Image.fromarray(pixels).convert("L")) / 255


def test_a_colour_image_becomes_luminance_with_a_warning_naming_it(make_contest_folder, tmp_path):
    folder = make_contest_folder(black_fraction=0)
    expected = with_red_pixel(folder / "test_images" / "000043.png")
    other = with_red_pixel(folder / "val_images" / "000031.png")
    for _ in range(2):  # decoded, then from the cache: said both times
        with pytest.warns(UserWarning) as caught:
            data = load_contest(folder, cache_dir=tmp_path / "cache")
        (message,) = [str(warning.message) for warning in caught]
        assert message.startswith("2 colour image(s) converted to gray luminance")
        assert "val_images/000031.png, test_images/000043.png" in message and "keep_channels=True" in message
        assert data.channels == 1
        assert all(split.images.shape[-1] == 1 for split in all_splits(data).values())
        row = list(data.test.ids).index("000043.png")
        np.testing.assert_allclose(data.test.images[row, ..., 0], expected, atol=1e-6)
        np.testing.assert_allclose(data.val.images[0, ..., 0], other, atol=1e-6)
    assert data.test.images[row, 10, 20, 0] == np.float32(76 / 255)  # 0.299 * 255, rounded


def test_keep_channels_gives_every_image_three_channels(make_contest_folder, tmp_path):
    folder = make_contest_folder(black_fraction=0)
    with_red_pixel(folder / "test_images" / "000043.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_contest(folder, keep_channels=True, cache_dir=tmp_path / "cache")
    assert data.channels == 3
    for split in all_splits(data).values():
        assert split.images.shape[1:] == (64, 64, 3)
    np.testing.assert_array_equal(data.train.images[..., 0], data.train.images[..., 2])
    row = list(data.test.ids).index("000043.png")
    assert data.test.images[row, 10, 20].tolist() == [1.0, 0.0, 0.0]
    assert any("keep_channels=True: every image has 3 channels (1 of 48 in colour)" in note for note in data.notes)


@pytest.mark.parametrize("layout", ["split", "images", "root"])
def test_images_found_in_each_layout_with_or_without_extension(make_contest_folder, layout):
    folder = make_contest_folder(image_layout=layout, with_extension=False)
    data = load_contest(folder)
    assert data.val.ids[0] == "000031"  # ids kept exactly as in the CSV
    assert len(data.train) + len(data.holdout) == 30


def test_image_dir_option(make_contest_folder, tmp_path):
    folder = make_contest_folder(image_layout="images")
    (folder / "images").rename(folder / "pixels")
    with pytest.raises(DataError, match="not found"):
        load_contest(folder)
    assert len(load_contest(folder, image_dir="pixels").val) == 10
    assert len(load_contest(folder, image_dir=folder / "pixels").val) == 10


def test_id_and_label_column_options(make_contest_folder):
    folder = make_contest_folder(id_column="file", label_names=("a", "b", "c"), n_test=0)
    rows = read_rows(folder / "train.csv")
    # An extra column in front: the id is no longer first, so it has to be named.
    write_rows(folder / "train.csv", [["note"] + rows[0]] + [["x"] + row for row in rows[1:]])
    data = load_contest(folder, id_column="file", label_columns=["c", "a"])
    assert data.label_names == ["c", "a"]
    assert data.train.labels.shape[1] == 2


def test_test_csv_with_label_columns_is_fine(make_contest_folder):
    data = load_contest(make_contest_folder(test_labels=True))
    assert data.test.labels is None and len(data.test) == 8


def test_no_test_csv_gives_no_test_split(make_contest_folder):
    data = load_contest(make_contest_folder(n_test=0))
    assert data.test is None
    assert any("test.csv absent" in note for note in data.notes)


# --------------------------------------------------------------------------- splits


def combination_shares(labels: np.ndarray) -> dict[str, float]:
    keys, counts = np.unique(["".join(map(str, row)) for row in labels], return_counts=True)
    return dict(zip(keys, counts / counts.sum()))


def test_val_absent_gives_stratified_seeded_split(make_contest_folder):
    folder = make_contest_folder(n_train=240, n_val=0, n_test=0, black_fraction=0)
    data = load_contest(folder, holdout_fraction=0)
    assert len(data.val) == 48 and len(data.train) == 192
    assert not set(data.val.ids) & set(data.train.ids)
    everything = combination_shares(np.concatenate([data.train.labels, data.val.labels]))
    in_val = combination_shares(data.val.labels)
    for combination, share in everything.items():
        assert abs(in_val.get(combination, 0) - share) < 0.03, combination
    assert any("val.csv absent" in note and "20%" in note for note in data.notes)

    again = load_contest(folder, holdout_fraction=0)
    np.testing.assert_array_equal(again.val.ids, data.val.ids)
    other_seed = load_contest(folder, holdout_fraction=0, seed=1)
    assert set(other_seed.val.ids) != set(data.val.ids)


def test_holdout_carved_after_val_and_disjoint(make_contest_folder):
    folder = make_contest_folder(n_train=100, n_val=0, n_test=5)
    data = load_contest(folder)
    assert len(data.val) == 20
    assert len(data.holdout) == round(0.12 * 80)
    assert len(data.train) == 80 - len(data.holdout)
    ids = [set(split.ids) for split in (data.train, data.val, data.holdout, data.test)]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 105
    assert data.holdout.labels.shape == (len(data.holdout), 3)
    assert any(note.startswith("holdout: seeded") for note in data.notes)

    bigger = load_contest(folder, holdout_fraction=0.25)
    assert len(bigger.holdout) == 20
    assert len(load_contest(folder, holdout_fraction=0).holdout) == 0


def test_holdout_csv_used_when_present(make_contest_folder):
    folder = make_contest_folder(n_train=30, n_val=10, n_holdout=6)
    data = load_contest(folder, holdout_fraction=0.5)
    assert sorted(data.holdout.ids) == sorted(row[0] for row in read_rows(folder / "holdout.csv")[1:])
    assert len(data.train) == 30
    assert any("holdout.csv" in note for note in data.notes)


def test_rare_label_combinations_are_merged(make_contest_folder):
    folder = make_contest_folder(n_train=60, n_test=0, black_fraction=0)
    rows = read_rows(folder / "train.csv")
    for row in rows[1:]:
        row[1:] = ["0", "0", "0"]
    rows[1][1:] = ["1", "1", "1"]  # a combination with a single image cannot be stratified
    write_rows(folder / "train.csv", rows)
    data = load_contest(folder)
    assert len(data.holdout) == round(0.12 * 60)
    assert any("merged" in note and "111 (1)" in note for note in data.notes)


def test_test_ids_may_repeat_labelled_ids_when_the_files_differ(make_contest_folder):
    folder = make_contest_folder()
    rows = read_rows(folder / "test.csv")
    (folder / "test_images" / rows[1][0]).rename(folder / "test_images" / "000001.png")
    rows[1][0] = "000001.png"  # also an id of train.csv, but test_images/000001.png is another file
    write_rows(folder / "test.csv", rows)
    data = load_contest(folder)
    assert "000001.png" in data.test.ids


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_other_image_modes_load_as_grayscale(make_contest_folder, mode):
    folder = make_contest_folder(black_fraction=0)
    image = folder / "val_images" / "000031.png"
    gray = np.asarray(Image.open(image))[..., 0]
    Image.fromarray(gray, "L").convert(mode).save(image)
    data = load_contest(folder)
    assert data.channels == 1
    np.testing.assert_allclose(data.val.images[0, ..., 0], gray / 255, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does-not-exist.*does not exist"):
        load_contest(tmp_path / "does-not-exist")


def test_column_options_naming_absent_columns(make_contest_folder):
    folder = make_contest_folder()
    with pytest.raises(DataError, match=r"option id_column='file' .*columns found: image_id, label_1"):
        load_contest(folder, id_column="file")
    with pytest.raises(DataError, match="option label_columns .*missing label_9"):
        load_contest(folder, label_columns=["label_1", "label_9"])


def test_bad_option_values(make_contest_folder):
    folder = make_contest_folder()
    with pytest.raises(DataError, match="option holdout_fraction"):
        load_contest(folder, holdout_fraction=1.5)
    with pytest.raises(DataError, match="option val_fraction"):
        load_contest(folder, val_fraction=0)
    with pytest.raises(DataError, match="option image_dir"):
        load_contest(folder, image_dir="nowhere")


def assert_refused(folder: Path, cache: Path, **options) -> FolderProblems:
    """Load ``folder``, expect one FolderProblems, and check that neither the folder nor the cache changed."""
    before = snapshot(folder)
    with pytest.raises(FolderProblems) as error:
        load_contest(folder, cache_dir=cache, **options)
    assert snapshot(folder) == before
    assert not cache.exists() or not list(cache.iterdir())
    return error.value


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_reported_with_its_file_and_line(make_contest_folder, tmp_path, fault):
    folder = make_contest_folder(**HEALTHY)
    kind, where, message = FAULTS[fault](folder)
    error = assert_refused(folder, tmp_path / "cache")
    assert [(problem.kind, problem.where) for problem in error.problems] == [(kind, where)]
    assert re.search(message, error.problems[0].message), error.problems[0].message
    assert f"\n{kind} (1):\n  {where}: " in str(error)


FIVE_FAULTS = ("label_two", "missing_image", "truncated_png", "parent_id", "val_symlink_to_train_image")


def test_five_problems_are_listed_in_one_error_grouped_by_kind(make_contest_folder, tmp_path):
    folder = make_contest_folder(**HEALTHY)
    expected = [FAULTS[fault](folder) for fault in FIVE_FAULTS]
    error = assert_refused(folder, tmp_path / "cache")
    found = {(problem.kind, problem.where): problem.message for problem in error.problems}
    assert len(error.problems) == 5
    for kind, where, message in expected:
        assert re.search(message, found[kind, where])
    report = str(error)
    assert report.startswith(f"contest folder {folder}: 5 problem(s) of 5 kind(s); nothing was loaded\n")
    # Grouped: each kind's heading, then its problem on the next line.
    for kind, where, _ in expected:
        assert f"{kind} (1):\n  {where}: " in report


def test_many_problems_are_capped_and_counted(make_contest_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "MAX_PROBLEMS", 6)
    folder = make_contest_folder(**HEALTHY)
    for number in range(1, 11):
        (folder / "train_images" / f"{number:06d}.png").unlink()
    FAULTS["label_two"](folder)
    error = assert_refused(folder, tmp_path / "cache")
    assert len(error.problems) == 11
    lines = str(error).splitlines()
    # At most 6 // 2 problems of each of the 2 kinds are listed.
    assert lines[1:] == [
        "bad label (1):",
        "  val.csv line 4: column 'label_2': label is '2', not 0 or 1",
        "missing image (10):",
        "  train.csv line 2: image '000001.png' not found in train_images/, the folder itself "
        "(tried the id, then the id + .png/.jpg/.jpeg)",
        *lines[5:7],
        "  ... and 7 more of this kind",
    ]
    assert lines[5].startswith("  train.csv line 3:") and lines[6].startswith("  train.csv line 4:")


def test_lines_are_numbered_as_an_editor_shows_them(make_contest_folder, tmp_path):
    folder = make_contest_folder(**HEALTHY)
    text = (folder / "train.csv").read_text().splitlines()
    # A BOM, CRLF line ends, a blank line, and a quoted id spanning two lines before a bad label.
    text[2] = '"000002\n.png",0,1,0'
    text[3] = text[3].rsplit(",", 1)[0] + ",2"
    (folder / "train.csv").write_bytes(("\ufeff" + "\r\n".join(text[:2] + [""] + text[2:]) + "\r\n").encode())
    error = assert_refused(folder, tmp_path / "cache")
    assert [(problem.kind, problem.where) for problem in error.problems] == [
        ("bad label", "train.csv line 6"),
        ("missing image", "train.csv line 4"),
    ]


def test_a_symlink_inside_the_folder_is_fine(make_contest_folder):
    folder = make_contest_folder(**HEALTHY)
    (folder / "pixels").mkdir()
    (folder / "train_images" / "000005.png").rename(folder / "pixels" / "000005.png")
    (folder / "train_images" / "000005.png").symlink_to(Path("..", "pixels", "000005.png"))
    assert "000005.png" in set(load_contest(folder, holdout_fraction=0).train.ids)


def test_image_dir_outside_the_folder_is_allowed_when_named(make_contest_folder, tmp_path):
    folder = make_contest_folder(image_layout="images")
    (folder / "images").rename(tmp_path / "elsewhere")
    assert len(load_contest(folder, image_dir=tmp_path / "elsewhere").val) == 10


# --------------------------------------------------------------------------- validate command


def run_validate(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "contest_study.data", "validate", *arguments], capture_output=True, text=True
    )


def test_validate_command_lists_the_problems_and_exits_1(make_contest_folder, tmp_path):
    folder = make_contest_folder(**HEALTHY)
    expected = [FAULTS[fault](folder) for fault in FIVE_FAULTS]
    before = snapshot(folder)
    result = run_validate(str(folder))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(f"contest folder {folder}: 5 problem(s)")
    for kind, where, _ in expected:
        assert f"{kind} (1):\n  {where}: " in result.stdout
    assert snapshot(folder) == before


def test_validate_command_on_a_clean_folder_exits_0(make_contest_folder, capsys):
    folder = make_contest_folder(**HEALTHY)
    write_rows(folder / "test_images" / "000017.png", [])  # an empty file: unreadable
    assert data_module.main(["validate", str(folder)]) == 1
    assert "unreadable image (1):\n  test.csv line 2: cannot read image test_images/000017.png" in capsys.readouterr().out

    folder = make_contest_folder("clean", **HEALTHY)
    before = snapshot(folder)
    assert data_module.main(["validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"contest folder {folder}: no problem found\n")
    assert "train.csv: 12 rows" in out and "all 19 images are grayscale" in out
    assert snapshot(folder) == before  # nothing written: no cache, no temporary file


def test_validate_command_usage_errors_exit_2(tmp_path, make_contest_folder, capsys):
    with pytest.raises(SystemExit) as exit_status:
        data_module.main([])
    assert exit_status.value.code == 2
    assert data_module.main(["validate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
    assert data_module.main(["validate", str(make_contest_folder(**HEALTHY)), "--id-column", "file"]) == 2
    assert "option id_column='file'" in capsys.readouterr().err


# --------------------------------------------------------------------------- cache


def test_second_load_reads_the_cache_without_decoding(make_contest_folder, tmp_path, monkeypatch):
    folder = make_contest_folder(n_val=0)
    cache = tmp_path / "cache"
    first = load_contest(folder, cache_dir=cache)
    (entry,) = cache.iterdir()
    # One float32 file per split and the index; no temporary file left behind.
    assert sorted(path.name for path in entry.iterdir()) == ["holdout.npy", "index.npz", "test.npy", "train.npy", "val.npy"]

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(data_module, "_decode_image", no_decoding)
    cached = load_contest(folder, cache_dir=cache)
    assert_same_data(first, cached)
    assert cached.notes == first.notes
    assert_same_data(first, load_contest(folder, cache_dir=cache))


def test_uncached_and_cached_loads_agree(make_contest_folder, tmp_path):
    folder = make_contest_folder(n_val=0, n_test=0)
    assert_same_data(load_contest(folder), load_contest(folder, cache_dir=tmp_path / "cache"))
    assert_same_data(load_contest(folder), load_contest(folder, cache_dir=tmp_path / "cache"))


def test_changes_in_the_folder_invalidate_the_cache(make_contest_folder, tmp_path):
    folder = make_contest_folder(black_fraction=0)
    cache = tmp_path / "cache"
    before = load_contest(folder, cache_dir=cache)

    # New pixels in one PNG (same size on disk is possible, so also a new mtime, as any edit gives).
    image = folder / "val_images" / "000031.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(image)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10_000_000))
    after = load_contest(folder, cache_dir=cache)
    assert after.fingerprint != before.fingerprint
    np.testing.assert_allclose(after.val.images[0], 200 / 255)

    # A label changed in a CSV.
    rows = read_rows(folder / "val.csv")
    rows[1][1] = "1" if rows[1][1] == "0" else "0"
    write_rows(folder / "val.csv", rows)
    relabelled = load_contest(folder, cache_dir=cache)
    assert relabelled.fingerprint != after.fingerprint
    assert relabelled.val.labels[0, 0] != after.val.labels[0, 0]

    # Only touching a file is a change too, and stale cache files do not pile up.
    os.utime(folder / "test_images" / "000041.png")
    assert load_contest(folder, cache_dir=cache).fingerprint != relabelled.fingerprint
    assert len(list(cache.iterdir())) == 1


def test_fingerprint_depends_on_options(make_contest_folder):
    folder = make_contest_folder()
    base = load_contest(folder).fingerprint
    assert load_contest(folder).fingerprint == base
    assert load_contest(folder, seed=3).fingerprint != base
    assert load_contest(folder, keep_channels=True).fingerprint != base


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("file_name", ["index.npz", "train.npy"])
def test_damaged_cache_is_ignored_with_a_warning(make_contest_folder, tmp_path, damage, file_name):
    folder = make_contest_folder()
    cache = tmp_path / "cache"
    first = load_contest(folder, cache_dir=cache)
    (entry,) = cache.iterdir()
    cache_file = entry / file_name
    content = cache_file.read_bytes()
    cache_file.write_bytes(b"garbage" if damage == "garbage" else content[: len(content) // 2])
    with pytest.warns(UserWarning, match="ignoring unreadable cache file"):
        assert_same_data(first, load_contest(folder, cache_dir=cache))
    # The load that found it damaged wrote it again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_data(first, load_contest(folder, cache_dir=cache))


def test_an_interrupted_cache_write_reads_as_absent(make_contest_folder, tmp_path):
    # The index is written last: without it the entry is not a cache, and no warning is due.
    folder = make_contest_folder()
    cache = tmp_path / "cache"
    first = load_contest(folder, cache_dir=cache)
    (entry,) = cache.iterdir()
    (entry / "index.npz").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_data(first, load_contest(folder, cache_dir=cache))
    assert (entry / "index.npz").is_file()


def test_editing_loaded_images_leaves_the_cache_unchanged(make_contest_folder, tmp_path):
    # The cached arrays are mapped copy-on-write: a notebook may normalise in place.
    folder = make_contest_folder()
    cache = tmp_path / "cache"
    first = load_contest(folder, cache_dir=cache)
    cached = load_contest(folder, cache_dir=cache)
    cached.train.images -= 0.5
    cached.test.images[:] = 1.0
    assert_same_data(first, load_contest(folder, cache_dir=cache))


def test_a_cache_from_the_earlier_single_file_format_is_removed(make_contest_folder, tmp_path):
    folder = make_contest_folder()
    cache = tmp_path / "cache"
    load_contest(folder, cache_dir=cache)
    (entry,) = cache.iterdir()
    shutil.rmtree(entry)
    old_format = cache / f"{entry.name.rsplit('-', 1)[0]}-0123456789abcdef0123456789abcdef.npz"
    old_format.write_bytes(b"an npz of the former loader")
    load_contest(folder, cache_dir=cache)
    assert [path.name for path in cache.iterdir()] == [entry.name]


def test_data_folder_is_never_written(make_contest_folder, tmp_path):
    folder = make_contest_folder(n_val=0)
    before = snapshot(folder)
    folders = [folder] + [path for path in folder.rglob("*") if path.is_dir()]
    for path in [folder] + list(folder.rglob("*")):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        load_contest(folder, cache_dir=tmp_path / "cache")
        load_contest(folder, cache_dir=tmp_path / "cache")
    finally:
        for path in folders:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert snapshot(folder) == before


# --------------------------------------------------------------------------- other sizes, progress


def test_images_of_another_size_are_resized_with_a_warning(make_contest_folder, tmp_path):
    folder = make_contest_folder(size=32, n_test=0)
    with pytest.warns(UserWarning, match=r"40 image\(s\) were not 64x64 and were resized \(bilinear\): train_images/000001.png"):
        data = load_contest(folder, cache_dir=tmp_path / "cache")
    assert data.train.images.shape[1:] == (64, 64, 1)
    with pytest.warns(UserWarning, match="40 image"):
        load_contest(folder, cache_dir=tmp_path / "cache")  # from the cache: still said


def test_progress_is_printed_for_big_folders(make_contest_folder, monkeypatch, capsys):
    monkeypatch.setattr(data_module, "PROGRESS_MIN_IMAGES", 10)
    monkeypatch.setattr(data_module, "PROGRESS_STEP", 20)
    load_contest(make_contest_folder())
    assert "decoded 48/48 images" in capsys.readouterr().err


def test_no_warning_for_a_clean_folder(make_contest_folder, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_contest(make_contest_folder(), cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------- helpers on splits


def make_split(black_rows: list[int], count: int = 8) -> Split:
    images = np.full((count, 4, 4, 1), 0.5, np.float32)
    images[black_rows] = 0
    ids = np.array([f"{number:03d}" for number in range(count, 0, -1)])  # ids in reverse order
    return Split(name="train", ids=ids, images=images, labels=np.zeros((count, 3), np.int8))


def test_black_mask():
    split = make_split([1, 4])
    assert black_mask(split.images).tolist() == [False, True, False, False, True, False, False, False]


def test_drop_black_images_keeps_the_smallest_ids():
    split = make_split([1, 4, 6])
    kept = drop_black_images(split, keep=1)
    # Black rows have ids 007, 004, 002: the one kept is 002, and the order is unchanged.
    assert kept.ids.tolist() == ["008", "006", "005", "003", "002", "001"]
    assert black_mask(kept.images).sum() == 1
    assert len(drop_black_images(split, keep=0)) == 5
    assert len(drop_black_images(split, keep=10)) == 8
    with pytest.raises(ValueError, match="keep"):
        drop_black_images(split, keep=-1)


def test_subsample_is_seeded_and_keeps_order():
    split = make_split([], count=50)
    assert subsample(split, None, seed=0) is split
    assert subsample(split, 100, seed=0) is split
    small = subsample(split, 10, seed=0)
    assert len(small) == 10 and small.labels.shape == (10, 3)
    assert small.ids.tolist() == subsample(split, 10, seed=0).ids.tolist()
    assert small.ids.tolist() != subsample(split, 10, seed=1).ids.tolist()
    positions = [split.ids.tolist().index(i) for i in small.ids]
    assert positions == sorted(positions)
