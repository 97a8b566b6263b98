"""Faults of a contest folder, one per function, injected in a healthy tiny folder.

The healthy folder is ``make_contest_folder(**HEALTHY)``: train.csv lists 000001-000012.png
(lines 2-13), val.csv 000013-000016.png (lines 2-5), test.csv 000017-000019.png, each image
in ``<split>_images/``.  Each fault changes the folder (and may write a file beside it, never
read by a correct loader) and returns what the loader must report: the problem's kind, where
(file and line) and a regular expression of its message.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

HEALTHY = {"n_train": 12, "n_val": 4, "n_test": 3, "black_fraction": 0}


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def set_cell(path: Path, line: int, column: int, value: str) -> None:
    rows = read_rows(path)
    rows[line - 1][column] = value
    write_rows(path, rows)


def outside_image(folder: Path) -> Path:
    """A valid PNG beside the folder: loading it would mean an id or a link escaped."""
    path = folder.parent / "outside.png"
    Image.fromarray(np.full((64, 64), 99, np.uint8)).save(path)
    return path


def truncated_png(folder):
    image = folder / "val_images" / "000015.png"
    image.write_bytes(image.read_bytes()[:200])
    return "unreadable image", "val.csv line 4", r"cannot read image val_images/000015.png: .*truncated"


def text_named_png(folder):
    (folder / "train_images" / "000004.png").write_text("image_id,label_1\n")
    return "unreadable image", "train.csv line 5", r"cannot read image train_images/000004.png: cannot identify image"


def sixteen_bit_png(folder):
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(folder / "val_images" / "000013.png")
    return "unreadable image", "val.csv line 2", r"cannot read image val_images/000013.png: I;16 images"


def label_two(folder):
    set_cell(folder / "val.csv", 4, 2, "2")
    return "bad label", "val.csv line 4", r"column 'label_2': label is '2', not 0 or 1"


def empty_label(folder):
    set_cell(folder / "train.csv", 7, 3, "")
    return "bad label", "train.csv line 7", r"column 'label_3': label is empty"


def missing_image(folder):
    (folder / "train_images" / "000003.png").unlink()
    return "missing image", "train.csv line 4", r"image '000003.png' not found in train_images/, the folder itself"


def duplicate_row(folder):
    set_cell(folder / "train.csv", 6, 0, "000002.png")
    return "repeated row", "train.csv line 6", r"image id '000002.png' is listed twice in train.csv \(lines 3 and 6\)"


def id_in_two_splits(folder):
    rows = read_rows(folder / "val.csv")
    write_rows(folder / "val.csv", rows + [read_rows(folder / "train.csv")[1]])
    # Another file under the same id: the id alone says it is the same image.
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(folder / "val_images" / "000001.png")
    return "id in two splits", "val.csv line 6", r"image id '000001.png' is also in train.csv line 2"


def header_only_csv(folder):
    write_rows(folder / "val.csv", read_rows(folder / "val.csv")[:1])
    return "CSV format", "val.csv", r"the file has a header but no rows"


def no_label_columns(folder):
    write_rows(folder / "train.csv", [row[:1] for row in read_rows(folder / "train.csv")])
    return "missing column", "train.csv line 1", r"no label columns besides the id column 'image_id'"


def wrong_field_count(folder):
    with open(folder / "train.csv", "a", newline="") as handle:
        handle.write("000099.png,1,0\n")
    return "CSV format", "train.csv line 14", r"3 fields where the header has 4"


def empty_id(folder):
    set_cell(folder / "train.csv", 5, 0, " ")
    return "bad image id", "train.csv line 5", r"the image id \(column 'image_id'\) is empty"


def parent_id(folder):
    outside_image(folder)
    set_cell(folder / "train.csv", 10, 0, "../../outside.png")
    return "bad image id", "train.csv line 10", r"image id '../../outside.png' is absolute or contains '..'"


def absolute_id(folder):
    set_cell(folder / "test.csv", 2, 0, str(outside_image(folder)))
    return "bad image id", "test.csv line 2", r"image id '/.*/outside.png' is absolute or contains '..'"


def val_id_reaching_train_images(folder):
    set_cell(folder / "val.csv", 3, 0, "../train_images/000001.png")
    return "bad image id", "val.csv line 3", r"image id '../train_images/000001.png' is absolute or contains '..'"


def symlink_leaving_folder(folder):
    link = folder / "train_images" / "000008.png"
    link.unlink()
    link.symlink_to(outside_image(folder))
    return (
        "image outside the data folder",
        "train.csv line 9",
        r"train_images/000008.png leads to /.*/outside.png, outside /.*",
    )


def val_symlink_to_train_image(folder):
    link = folder / "val_images" / "000014.png"
    link.unlink()
    link.symlink_to(os.path.join("..", "train_images", "000002.png"))
    return (
        "one image behind two rows",
        "val.csv line 3",
        r"'val_images/000014.png' is the same file as 'train_images/000002.png' \(train.csv line 3\)",
    )


def holdout_row_reusing_train_image(folder):
    # holdout.csv falls back to train_images/, where 000002.png is train.csv's image.
    write_rows(folder / "holdout.csv", [["image_id", "label_1", "label_2", "label_3"], ["000002", "0", "1", "0"]])
    return (
        "one image behind two rows",
        "holdout.csv line 2",
        r"'train_images/000002.png' is the same file as 'train_images/000002.png' \(train.csv line 3\)",
    )


def val_csv_without_a_label_column(folder):
    write_rows(folder / "val.csv", [[row[0], row[1], row[3]] for row in read_rows(folder / "val.csv")])
    return "missing column", "val.csv line 1", r"label column\(s\) label_2 of train.csv missing; columns found: image_id, label_1, label_3"


def empty_train_csv(folder):
    (folder / "train.csv").write_text("")
    return "CSV format", "train.csv", r"the file is empty"


def no_train_csv(folder):
    (folder / "train.csv").unlink()
    return "missing file", "train.csv", r"not found: a contest folder needs train.csv \(found: test.csv, test_images"


FAULTS = {
    function.__name__: function
    for function in (
        truncated_png,
        text_named_png,
        sixteen_bit_png,
        label_two,
        empty_label,
        missing_image,
        duplicate_row,
        id_in_two_splits,
        header_only_csv,
        no_label_columns,
        wrong_field_count,
        empty_id,
        parent_id,
        absolute_id,
        val_id_reaching_train_images,
        symlink_leaving_folder,
        val_symlink_to_train_image,
        holdout_row_reusing_train_image,
        val_csv_without_a_label_column,
        empty_train_csv,
        no_train_csv,
    )
}
