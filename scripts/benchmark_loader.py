"""Time the contest loader against the naive per-file loop; fail if the cache is not 20x faster.

    python scripts/benchmark_loader.py                       # the embedded dataset (make data)
    python scripts/benchmark_loader.py --data-dir DIR        # any contest folder
    python scripts/benchmark_loader.py --synthetic-size 15000 --synthetic-test-size 5000

Each timing runs in a fresh Python process (as a new notebook kernel would
load the data; imports are not timed), after one read of every file so that
none of them pays for the disk:

(a) naive: for each row of train.csv and val.csv (the labelled images), then
    of test.csv, PIL open, np.array, /255, append to a list (images in
    ``<split>_images/<id>``, the contest layout).  The clock is read after
    the labelled images and after all of them.
(b) cold: ``load_contest`` with an empty cache (decodes and writes the cache);
(c) warm: ``load_contest`` again (maps the cache), median of ``--repeats``;
    the naive loop is the median of ``--naive-repeats``.

Both ``load_contest`` timings end with one pass over every pixel (``np.max``
of each split): the warm load maps the cached files, so the pages are read
when first used, and that reading belongs in the clock.

The pass mark compares like with like: the naive loop over the same images
``load_contest`` returns (labelled + test) against the warm load.  The ratio
with the naive loop over the labelled images only is printed too.  Exit
status 1 when the pass-mark ratio is below ``--min-ratio`` (default 20).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def naive_load(data_dir: Path) -> dict:
    """The per-file loop the cache must beat: timings after the labelled images and after all images."""
    from PIL import Image

    start, cpu_start = time.perf_counter(), cpu_seconds()
    images = []
    timings = {}
    for split in ("train", "val", "test"):
        table = data_dir / f"{split}.csv"
        if table.is_file():
            with open(table, newline="") as handle:
                for row in list(csv.reader(handle))[1:]:
                    image = Image.open(data_dir / f"{split}_images" / row[0])
                    images.append(np.array(image) / 255)
        if split != "train":
            elapsed = {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu_start}
            timings["labelled" if split == "val" else "all"] = {**elapsed, "images": len(images)}
    return timings


def measure(kind: str, data_dir: Path, cache_dir: Path) -> dict:
    """Run one timing in this process (the --measure entry point); imports happen before the clock starts."""
    from contest_study.data import load_contest

    if kind == "naive":
        return naive_load(data_dir)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    data = load_contest(data_dir, cache_dir=cache_dir)
    splits = [split for split in (data.train, data.val, data.holdout, data.test) if split is not None]
    for split in splits:
        np.max(split.images)
    count = sum(len(split) for split in splits)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_seconds() - cpu_start, "images": count}


def measure_in_subprocess(kind: str, data_dir: Path, cache_dir: Path) -> dict:
    command = [sys.executable, __file__, "--measure", kind, "--data-dir", str(data_dir), "--cache-dir", str(cache_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the {kind} timing failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def warm_file_cache(data_dir: Path) -> None:
    """Read every file once, so no timing pays for the disk."""
    for path in data_dir.rglob("*"):
        if path.is_file():
            path.read_bytes()


def write_random_folder(root: Path, n_labelled: int, n_test: int, seed: int = 0) -> Path:
    """A contest folder of smooth random grayscale PNGs (3 equal channels), a third black, random labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n_train = round(n_labelled * 0.8)
    number = 1
    for split, count in (("train", n_train), ("val", n_labelled - n_train), ("test", n_test)):
        folder = root / f"{split}_images"
        folder.mkdir(parents=True)
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image_id"] + ([] if split == "test" else ["label_1", "label_2", "label_3"]))
            for _ in range(count):
                gray = np.zeros((64, 64), np.uint8)
                if rng.random() >= 1 / 3:
                    coarse = Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8))
                    gray = np.asarray(coarse.resize((64, 64), Image.Resampling.BILINEAR))
                name = f"{number:06d}.png"
                Image.fromarray(np.stack([gray] * 3, axis=-1)).save(folder / name)
                writer.writerow([name] + ([] if split == "test" else rng.integers(0, 2, 3).tolist()))
                number += 1
                if number % 5000 == 0:
                    print(f"  wrote {number} images", file=sys.stderr, flush=True)
    return root


def median_timing(runs: list[dict]) -> dict:
    return {"seconds": statistics.median(run["seconds"] for run in runs),
            "cpu_seconds": statistics.median(run["cpu_seconds"] for run in runs),
            "images": runs[0]["images"]}


def report(data_dir: Path, naive_runs: list[dict], cold: dict, warm_runs: list[dict], min_ratio: float) -> float:
    """Print the timings; return the pass-mark ratio (median naive over the same images / median warm)."""
    naive = {part: median_timing([run[part] for run in naive_runs]) for part in ("labelled", "all")}
    warm = median_timing(warm_runs)
    print(f"contest folder: {data_dir}")
    # Wall times on a shared machine depend on what else runs: say how busy it was.
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{load:.1f}' for load in os.getloadavg())}")
    print(f"{'':36}wall time   CPU time (all threads)")
    for label, timing, what in (
        ("(a) naive loop, labelled images", naive["labelled"], f"images (train.csv + val.csv; median of {len(naive_runs)})"),
        ("(a) naive loop, all images", naive["all"], "images (+ test.csv: what load_contest returns)"),
        ("(b) load_contest, cold", cold, "images (decode + write the cache, + one pass over the pixels)"),
        ("(c) load_contest, warm", warm, f"images (map the cache + one pass; median of {len(warm_runs)})"),
    ):
        print(f"{label:34}{timing['seconds']:8.3f} s  {timing['cpu_seconds']:8.3f} s   {timing['images']} {what}")
    print(f"    naive wall times, all images: {', '.join(format(run['all']['seconds'], '.3f') for run in naive_runs)}")
    print(f"    warm wall times: {', '.join(format(run['seconds'], '.3f') for run in warm_runs)}")
    ratio = naive["all"]["seconds"] / warm["seconds"]
    print(
        f"speed-up naive / warm, same images: {ratio:.1f}x wall (pass mark {min_ratio:g}x), "
        f"{naive['all']['cpu_seconds'] / warm['cpu_seconds']:.1f}x CPU time"
    )
    print(f"speed-up naive over the labelled images only / warm: {naive['labelled']['seconds'] / warm['seconds']:.1f}x")
    return ratio


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="contest folder to benchmark (default: the embedded dataset)")
    parser.add_argument("--synthetic-size", type=int, help="write a temporary folder of N labelled random PNGs instead")
    parser.add_argument("--synthetic-test-size", type=int, help="test images in that folder (default: N / 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--repeats", type=int, default=5, help="warm loads to time (the median is used)")
    parser.add_argument("--naive-repeats", type=int, default=3, help="naive loops to time (the median is used)")
    parser.add_argument("--min-ratio", type=float, default=20.0, help="fail below this naive / warm ratio")
    parser.add_argument("--measure", choices=["naive", "cold", "warm"], help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    arguments = parse_arguments()
    if arguments.measure:
        print(json.dumps(measure(arguments.measure, arguments.data_dir, arguments.cache_dir)))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="benchmark-loader-"))
    try:
        if arguments.synthetic_size:
            n_test = arguments.synthetic_test_size
            n_test = arguments.synthetic_size // 3 if n_test is None else n_test
            folder = scratch / "contest"
            print(f"writing {arguments.synthetic_size} + {n_test} random PNGs in {folder}", file=sys.stderr)
            data_dir = write_random_folder(folder, arguments.synthetic_size, n_test)
        else:
            from contest_study.config import study_context

            data_dir = (arguments.data_dir or study_context().data_dir).expanduser().resolve()
            if not (data_dir / "train.csv").is_file():
                print(
                    f"no contest folder at {data_dir}: create the embedded dataset with `make data`, "
                    "or pass --data-dir DIR or --synthetic-size N",
                    file=sys.stderr,
                )
                return 2
        cache_dir = scratch / "cache"
        warm_file_cache(data_dir)
        naive_runs = [measure_in_subprocess("naive", data_dir, cache_dir) for _ in range(arguments.naive_repeats)]
        cold = measure_in_subprocess("cold", data_dir, cache_dir)
        warm_runs = [measure_in_subprocess("warm", data_dir, cache_dir) for _ in range(arguments.repeats)]
        ratio = report(data_dir, naive_runs, cold, warm_runs, arguments.min_ratio)
        return 0 if ratio >= arguments.min_ratio else 1
    finally:
        if arguments.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
