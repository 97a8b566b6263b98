"""Time of the noise floor: bootstrap intervals of a run's mAP and the paired comparison of two runs.

    python scripts/benchmark_bootstrap.py                     # 2,000 images, 3 labels, 1,000 resamples
    python scripts/benchmark_bootstrap.py --images 3000 --repeats 5

Scores are random but informative (the time does not depend on what they say). Prints
the median wall and CPU time of one interval (:func:`metrics.bootstrap_map_interval`,
computed four times per run: validation and hold-out, all and non-black images) and of
one paired comparison (:func:`metrics.compare`), with the machine's load beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from contest_study.metrics import BOOTSTRAP_RESAMPLES, bootstrap_counts, bootstrap_map_interval, compare


def timed(function, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``repeats`` calls (the cached resample counts are dropped each time)."""
    walls, cpus = [], []
    for _ in range(repeats):
        bootstrap_counts.cache_clear()
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    y_true = (rng.random((options.images, options.labels)) < 0.35).astype(np.int8)
    score_a = np.clip(0.3 * y_true + 0.7 * rng.random(y_true.shape), 0, 1)
    score_b = np.clip(0.25 * y_true + 0.75 * rng.random(y_true.shape), 0, 1)
    print(f"{options.images} images x {options.labels} labels x {BOOTSTRAP_RESAMPLES} resamples; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, function in (
        ("interval of one mAP", lambda: bootstrap_map_interval(y_true, score_a)),
        ("paired comparison", lambda: compare(score_a, score_b, y_true)),
    ):
        wall, cpu = timed(function, options.repeats)
        print(f"  {name}: {wall:.3f} s wall, {cpu:.3f} s CPU (median of {options.repeats})")


if __name__ == "__main__":
    main()
