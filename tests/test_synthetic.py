"""The embedded dataset generator: layout, image format, statistics, oracle, reuse and safety."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from contest_study import synthetic
from contest_study.synthetic import ensure_dataset, generate_dataset, load_oracle

LABELS = ["label_1", "label_2", "label_3"]
TINY = {"n_labelled": 90, "n_test": 30, "seed": 0}


def _gray_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)[:, :, 0]


def _read_csv(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name, dtype={"image_id": str})


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("tiny") / "data", **TINY)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    """Enough images for label statistics, still about a second to write."""
    return generate_dataset(tmp_path_factory.mktemp("medium") / "data", n_labelled=600, n_test=6, seed=3)


# --------------------------------------------------------------------------- layout and images


def test_writes_the_contest_layout(tiny):
    train, val, test = (_read_csv(tiny, f"{split}.csv") for split in ("train", "val", "test"))
    assert list(train.columns) == ["image_id", *LABELS]
    assert list(val.columns) == ["image_id", *LABELS]
    assert list(test.columns) == ["image_id"]
    assert (len(train), len(val), len(test)) == (72, 18, 30)
    all_ids = pd.concat([train.image_id, val.image_id, test.image_id])
    assert all_ids.is_unique
    assert all(re.fullmatch(r"\d{6}\.png", image_id) for image_id in all_ids)
    for split, frame in (("train", train), ("val", val), ("test", test)):
        assert sorted(path.name for path in (tiny / f"{split}_images").iterdir()) == sorted(frame.image_id)
    assert set(train[LABELS].stack().unique()) <= {0, 1}
    assert (tiny / "oracle" / "bayes_probabilities.csv").is_file()
    card = json.loads((tiny / "dataset_card.json").read_text())
    assert card["generator"] == "contest_study.synthetic"
    assert card["parameters"] == {**TINY, "val_fraction": 0.2, "black_fraction": 1 / 3}
    assert set(card["labels"]) == set(LABELS) and all("target" in card["labels"][name] for name in LABELS)
    # Nothing but the contest files and our two extras.
    assert {path.name for path in tiny.iterdir()} == {
        "train.csv", "val.csv", "test.csv", "train_images", "val_images", "test_images", "oracle", "dataset_card.json"
    }  # fmt: skip


def test_images_are_64x64_rgb_pngs_with_three_equal_channels(tiny):
    for path in sorted(tiny.glob("*_images/*.png")):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
            pixels = np.asarray(image)
        assert np.array_equal(pixels[:, :, 0], pixels[:, :, 1]) and np.array_equal(pixels[:, :, 0], pixels[:, :, 2])


def test_a_third_of_every_split_is_totally_black(tiny):
    for split, size in (("train", 72), ("val", 18), ("test", 30)):
        maxima = [_gray_pixels(path).max() for path in (tiny / f"{split}_images").iterdir()]
        n_black = sum(value == 0 for value in maxima)
        assert n_black == round(size / 3), split
        # The other images are far from black: a visible background.
        assert min(value for value in maxima if value > 0) > 20


def test_no_two_non_black_images_are_identical(tiny, medium):
    for folder in (tiny, medium):
        grays = [_gray_pixels(path) for path in folder.glob("*_images/*.png")]
        digests = [hashlib.sha256(gray.tobytes()).hexdigest() for gray in grays if gray.any()]
        assert len(digests) == len(set(digests)) > 0


def test_a_duplicate_image_is_drawn_again(tmp_path, monkeypatch):
    # Every other render is the same flat picture: each repeat must be redrawn.
    render = synthetic._render_non_black
    calls = []

    def render_with_repeats(z, rng):
        calls.append(1)
        image = render(z, rng)
        return np.full_like(image, 128) if len(calls) % 2 else image

    monkeypatch.setattr(synthetic, "_render_non_black", render_with_repeats)
    folder = generate_dataset(tmp_path / "data", n_labelled=12, n_test=3, black_fraction=0.0)
    grays = [_gray_pixels(path).tobytes() for path in folder.glob("*_images/*.png")]
    assert len(calls) > len(grays) == 15
    assert len(set(grays)) == len(grays)


# --------------------------------------------------------------------------- labels


def test_label_rates_differ_correlate_and_carry_a_little_noise(medium):
    labelled = pd.concat([_read_csv(medium, "train.csv"), _read_csv(medium, "val.csv")])
    oracle = _read_csv(medium / "oracle", "bayes_probabilities.csv").set_index("image_id").loc[labelled.image_id]
    non_black = oracle.is_black.to_numpy() == 0
    labels = labelled[LABELS].to_numpy()[non_black]
    presence = oracle[LABELS].to_numpy()[non_black] > 0.5  # the latent z behind each label

    rates = labels.mean(axis=0)
    assert rates[0] > rates[1] > rates[2] > 0.08
    assert 0.35 < rates[0] < 0.55 and 0.2 < rates[1] < 0.4 and 0.1 < rates[2] < 0.3
    # label_3 is likelier when label_1 is present.
    assert presence[presence[:, 0], 2].mean() > presence[~presence[:, 0], 2].mean() + 0.1
    # About 5% of the labels disagree with what the image shows.
    assert 0.02 < (labels != presence).mean() < 0.09
    # Black images carry coin-flip labels.
    black_labels = labelled[LABELS].to_numpy()[~non_black]
    assert 0.35 < black_labels.mean() < 0.65


def test_oriented_shapes_stay_apart_under_small_rotations():
    # Augmentation rotates by up to about 10 degrees: plus and X, horizontal and vertical bars stay apart.
    rng = np.random.default_rng(0)
    angles = {
        kind: [math.degrees(synthetic._plan_object(kind, rng).angle) for _ in range(300)]
        for kind in ("plus", "x_cross", "h_bars", "v_bars", "square")
    }
    assert max(abs(a) for a in angles["plus"]) <= 6 and all(39 <= a <= 51 for a in angles["x_cross"])
    assert max(abs(a) for a in angles["h_bars"]) <= 6 and all(84 <= a <= 96 for a in angles["v_bars"])
    assert max(abs(a) for a in angles["square"]) <= 10


def _bright_pixels(z, monkeypatch, distractor_probability: float, seed: int) -> np.ndarray:
    """Where an image rendered on a flat, noiseless background has ink."""
    monkeypatch.setattr(synthetic, "DISTRACTOR_PROBABILITY", distractor_probability)
    monkeypatch.setattr(synthetic, "NOISE_SIGMA", (0.0, 0.0))
    monkeypatch.setattr(synthetic, "BACKGROUND_GRADIENT", (0.0, 0.0))
    monkeypatch.setattr(synthetic, "BACKGROUND_LEVEL", (0.2, 0.2))
    image = synthetic._render_non_black(np.asarray(z, dtype=np.int8), np.random.default_rng(seed))
    return np.argwhere(image > round(0.2 * 255) + 1)


def test_each_label_draws_its_object_in_its_home_slot(monkeypatch):
    for slot in range(3):
        z = np.eye(3, dtype=np.int8)[slot]
        (row, col), reach = synthetic.SLOT_CENTRES[slot], np.add(synthetic.SLOT_JITTER, 13)
        for seed in range(20):
            ink = _bright_pixels(z, monkeypatch, distractor_probability=0.0, seed=seed)
            assert len(ink) > 30
            assert (np.abs(ink - [row, col]) <= reach).all(), (slot, seed)
            # Inside the border margin: shifts and zooms of augmentation do not cut it.
            assert ink.min() >= synthetic.BORDER_MARGIN - 1 and ink.max() <= 63 - synthetic.BORDER_MARGIN + 1


def test_an_absent_label_leaves_its_slot_empty_or_shows_the_distractor(monkeypatch):
    assert len(_bright_pixels([0, 0, 0], monkeypatch, distractor_probability=0.0, seed=0)) == 0
    monkeypatch.undo()
    drawn = []
    place = synthetic._place
    monkeypatch.setattr(synthetic, "_place", lambda slotted, rng: drawn.append(slotted) or place(slotted, rng))
    rng = np.random.default_rng(0)
    for _ in range(300):
        synthetic._render_non_black(np.array([0, 1, 0], dtype=np.int8), rng)
    kinds = [{slot: obj.kind for slot, obj in slotted} for slotted in drawn]
    assert all(image[1] == "plus" for image in kinds)
    # The slot of an absent label holds its distractor about DISTRACTOR_PROBABILITY of the time: a partial cue.
    for slot, distractor in ((0, "square"), (2, "v_bars")):
        shown = [image[slot] for image in kinds if slot in image]
        assert set(shown) == {distractor}
        assert abs(len(shown) / len(kinds) - synthetic.DISTRACTOR_PROBABILITY) < 0.1


def test_objects_never_overlap():
    rng = np.random.default_rng(2)
    for _ in range(200):
        slotted = [(slot, synthetic._plan_object(kind, rng)) for slot, (kind, _) in enumerate(synthetic._FAMILIES)]
        centres = synthetic._place(slotted, rng)
        for i in range(3):
            for j in range(i):
                gap = math.dist(centres[i], centres[j])
                assert gap >= slotted[i][1].bounding_radius + slotted[j][1].bounding_radius


# --------------------------------------------------------------------------- determinism


def test_same_seed_writes_identical_files(tiny, tmp_path):
    again = generate_dataset(tmp_path / "again", **TINY)
    assert _folder_bytes(again) == _folder_bytes(tiny)


def test_another_seed_writes_another_dataset(tiny, tmp_path):
    other = generate_dataset(tmp_path / "other", **{**TINY, "seed": 1})
    assert (other / "train.csv").read_bytes() != (tiny / "train.csv").read_bytes()
    differing = [
        name
        for name in (path.name for path in (tiny / "train_images").iterdir())
        if (other / "train_images" / name).read_bytes() != (tiny / "train_images" / name).read_bytes()
    ]
    assert len(differing) > 40


# --------------------------------------------------------------------------- oracle


def test_oracle_is_aligned_to_the_ids_asked_for(tiny):
    table = _read_csv(tiny / "oracle", "bayes_probabilities.csv")
    assert list(table.columns) == ["image_id", "split", "is_black", *LABELS]
    val_ids = _read_csv(tiny, "val.csv").image_id.to_numpy()
    train_ids = _read_csv(tiny, "train.csv").image_id.to_numpy()
    assert sorted(table.image_id) == sorted([*train_ids, *val_ids])

    asked = np.concatenate([val_ids[::-1], train_ids[:5]])
    probabilities = load_oracle(tiny, asked)
    assert probabilities.shape == (len(asked), 3)
    expected = table.set_index("image_id").loc[asked, LABELS].to_numpy()
    assert np.allclose(probabilities, expected, rtol=0, atol=1e-6)
    # The same image gets the same value whatever else is asked for.
    assert np.array_equal(load_oracle(tiny, asked[:1]), probabilities[:1])


def test_oracle_values_follow_the_generative_model(tiny):
    table = _read_csv(tiny / "oracle", "bayes_probabilities.csv").set_index("image_id")
    for split in ("train", "val"):
        for image_id, row in table[table.split == split].iterrows():
            black = not _gray_pixels(tiny / f"{split}_images" / image_id).any()
            assert row.is_black == int(black)
            if black:
                assert set(row[LABELS]) == {0.5}, image_id
                continue
            # The latent presences the image was drawn from (first draw of its own stream).
            z = synthetic._draw_latent_presence(synthetic._image_rng(TINY["seed"], int(image_id[:6]), 0))
            assert row[LABELS].tolist() == [0.95 if present else 0.05 for present in z], image_id


def test_oracle_is_calibrated(medium):
    # P(label = 1 | oracle value) must match the value: 0.95 and 0.05 up to binomial noise.
    labelled = pd.concat([_read_csv(medium, "train.csv"), _read_csv(medium, "val.csv")]).set_index("image_id")
    oracle = _read_csv(medium / "oracle", "bayes_probabilities.csv").set_index("image_id").loc[labelled.index]
    labels, probabilities = labelled[LABELS].to_numpy().ravel(), oracle[LABELS].to_numpy().ravel()
    for value in (0.05, 0.5, 0.95):
        observed = labels[probabilities == value]
        tolerance = 4 * math.sqrt(value * (1 - value) / len(observed))
        assert abs(observed.mean() - value) < tolerance, value


def test_oracle_ties_are_broken_without_moving_the_probabilities(tiny):
    ids = _read_csv(tiny, "train.csv").image_id.to_numpy()
    exact = _read_csv(tiny / "oracle", "bayes_probabilities.csv").set_index("image_id").loc[ids, LABELS].to_numpy()
    probabilities = load_oracle(tiny, ids)
    offsets = probabilities - exact
    assert np.abs(offsets).max() < 1e-6
    assert len(np.unique(probabilities)) == probabilities.size


def test_oracle_is_none_for_a_real_contest_folder(make_contest_folder):
    folder = make_contest_folder()
    assert load_oracle(folder, ["000001.png"]) is None


def test_oracle_names_unknown_ids_and_bad_files(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"bayes_probabilities\.csv.*1 image id.*'999999\.png'"):
        load_oracle(tiny, ["999999.png"])
    broken = tmp_path / "broken"
    (broken / "oracle").mkdir(parents=True)
    (broken / "oracle" / "bayes_probabilities.csv").write_text("image_id,label_1\n000001.png,0.5\n")
    with pytest.raises(ValueError, match="missing column.*label_2, label_3"):
        load_oracle(broken, ["000001.png"])
    (broken / "oracle" / "bayes_probabilities.csv").write_text(
        "image_id,label_1,label_2,label_3\n000001.png,0.5,0.5,0.5\n000001.png,0.5,0.5,0.5\n"
    )
    with pytest.raises(ValueError, match="'000001.png' appears more than once"):
        load_oracle(broken, ["000001.png"])


# --------------------------------------------------------------------------- reuse and safety


def test_ensure_dataset_reuses_a_complete_dataset_without_writing(tiny, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the dataset was written again")

    monkeypatch.setattr(synthetic, "_write_dataset", fail)
    assert ensure_dataset(tiny, **TINY) == tiny


def test_ensure_dataset_generates_a_missing_or_empty_folder(tmp_path):
    assert (ensure_dataset(tmp_path / "new" / "data", n_labelled=9, n_test=3) / "dataset_card.json").is_file()
    (tmp_path / "empty").mkdir()
    assert (ensure_dataset(tmp_path / "empty", n_labelled=9, n_test=3) / "train.csv").is_file()


def test_ensure_dataset_regenerates_one_of_ours_with_missing_files(tmp_path):
    folder = generate_dataset(tmp_path / "data", n_labelled=9, n_test=3)
    before = _folder_bytes(folder)
    next((folder / "test_images").iterdir()).unlink()
    ensure_dataset(folder, n_labelled=9, n_test=3)
    assert _folder_bytes(folder) == before


def test_ensure_dataset_refuses_other_parameters(tiny):
    before = _folder_bytes(tiny)
    with pytest.raises(FileExistsError, match=r"not the requested.*--force"):
        ensure_dataset(tiny, **{**TINY, "seed": 5})
    assert _folder_bytes(tiny) == before


def test_a_foreign_folder_is_never_overwritten(tmp_path):
    foreign = tmp_path / "contest"
    foreign.mkdir()
    (foreign / "train.csv").write_text("image_id,label_1\nmine.png,1\n")
    not_ours = tmp_path / "not_ours"
    not_ours.mkdir()
    (not_ours / "dataset_card.json").write_text(json.dumps({"generator": "someone else"}))
    for folder in (foreign, not_ours):
        before = _folder_bytes(folder)
        with pytest.raises(FileExistsError, match="refusing|not a synthetic dataset"):
            ensure_dataset(folder, n_labelled=9, n_test=3)
        with pytest.raises(FileExistsError, match="refusing to overwrite it, even with --force"):
            generate_dataset(folder, n_labelled=9, n_test=3, force=True)
        assert _folder_bytes(folder) == before
    plain_file = tmp_path / "a_file"
    plain_file.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        generate_dataset(plain_file, n_labelled=9, n_test=3)


def test_generate_replaces_our_dataset_only_with_force(tmp_path):
    folder = generate_dataset(tmp_path / "data", n_labelled=9, n_test=3, seed=0)
    with pytest.raises(FileExistsError, match="--force"):
        generate_dataset(folder, n_labelled=9, n_test=3, seed=1)
    generate_dataset(folder, n_labelled=12, n_test=3, seed=1, force=True)
    assert json.loads((folder / "dataset_card.json").read_text())["parameters"]["n_labelled"] == 12
    assert len(_read_csv(folder, "train.csv")) + len(_read_csv(folder, "val.csv")) == 12
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]  # no work folders left


def _interrupt_after(monkeypatch, saved_images: int) -> None:
    save = synthetic._save_png
    count = {"saved": 0}

    def save_then_interrupt(gray, path):
        if count["saved"] == saved_images:
            raise KeyboardInterrupt
        count["saved"] += 1
        save(gray, path)

    monkeypatch.setattr(synthetic, "_save_png", save_then_interrupt)


def test_an_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, saved_images=20)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "data", n_labelled=30, n_test=9)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert (ensure_dataset(tmp_path / "data", n_labelled=30, n_test=9) / "dataset_card.json").is_file()


def test_an_interrupted_regeneration_keeps_the_old_dataset(tmp_path, monkeypatch):
    folder = generate_dataset(tmp_path / "data", n_labelled=9, n_test=3)
    before = _folder_bytes(folder)
    _interrupt_after(monkeypatch, saved_images=5)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(folder, n_labelled=9, n_test=3, seed=4, force=True)
    assert _folder_bytes(folder) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_work_folders_of_killed_runs_are_cleaned_up_but_nothing_else(tmp_path):
    dead = tmp_path / ".data.incomplete-999999999-00aa"  # beyond any pid: that process is gone
    dead.mkdir()
    (dead / "train.csv").write_text("half written")
    alive = tmp_path / f".data.incomplete-{os.getpid()}-00bb"  # a run still going
    alive.mkdir()
    unrelated = tmp_path / ".data.incomplete-notes"
    unrelated.mkdir()
    generate_dataset(tmp_path / "data", n_labelled=9, n_test=3)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["data", alive.name, unrelated.name])


# --------------------------------------------------------------------------- options and command line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_labelled": 1}, "train or val split empty"),
        ({"n_labelled": 10.5}, "n_labelled must be an integer"),
        ({"n_labelled": True}, "n_labelled must be an integer"),
        ({"n_test": 0}, "n_test must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"val_fraction": 0.0}, "val_fraction must be strictly between 0 and 1"),
        ({"val_fraction": "0.2"}, "val_fraction must be a number"),
        ({"black_fraction": 1.0}, r"black_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "data", **{"n_labelled": 9, "n_test": 3, **options})
    assert not (tmp_path / "data").exists()


def test_progress_is_printed_for_large_sets_only(tmp_path, monkeypatch, capsys):
    generate_dataset(tmp_path / "quiet", n_labelled=9, n_test=3)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(synthetic, "PROGRESS_EVERY", 5)
    generate_dataset(tmp_path / "loud", n_labelled=9, n_test=3)
    assert "synthetic dataset: 5/12 images" in capsys.readouterr().out


def test_command_line_writes_reuses_and_forces(tmp_path, capsys):
    out = tmp_path / "data"
    assert synthetic.main(["--out", str(out), "--labelled", "9", "--test", "3", "--seed", "2"]) == 0
    card = json.loads((out / "dataset_card.json").read_text())
    assert card["parameters"]["seed"] == 2 and card["splits"]["test"]["images"] == 3
    assert synthetic.main(["--out", str(out), "--labelled", "9", "--test", "3", "--seed", "2"]) == 0
    assert synthetic.main(["--out", str(out), "--labelled", "9", "--test", "3"]) == 1
    assert "--force" in capsys.readouterr().err
    assert synthetic.main(["--out", str(out), "--labelled", "9", "--test", "3", "--force"]) == 0
    assert json.loads((out / "dataset_card.json").read_text())["parameters"]["seed"] == 0


def test_command_line_rejects_bad_options_and_foreign_folders(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--out", str(tmp_path / "data"), "--labelled", "1"])
    assert exit_info.value.code == 2 and "train or val split empty" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert synthetic.main(["--out", str(foreign), "--force"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
