"""Training throughput (images per second) of every network the study has trained.

    python scripts/benchmark_training.py                       # every architecture in <workdir>/runs
    python scripts/benchmark_training.py --models cnn_1e fc_3a --images 2048

The architectures come from the results registry (each run's saved Keras config), so
run the study first. Each one is compiled as the training engine compiles it (Adam,
binary cross-entropy, accuracy and PR-AUC) and fitted on random images of its input
shape: a network's throughput does not depend on what the pixels show. One epoch warms
up (graph tracing, memory), then the median of ``--repeats`` timed epochs gives the
figure; the validation pass of a real epoch is not included.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def measure(model, *, n_images: int, batch_size: int, repeats: int) -> float:
    """Images per second of one training epoch of ``model`` (median of ``repeats`` epochs)."""
    from contest_study.training import compile_model, config_for_profile, make_dataset

    rng = np.random.default_rng(0)
    images = rng.random((n_images, *model.input_shape[1:]), dtype=np.float32)
    labels = (rng.random((n_images, model.output_shape[-1])) < 0.5).astype(np.float32)
    config = config_for_profile("default", batch_size=batch_size)
    compile_model(model, config, steps_per_epoch=int(np.ceil(n_images / batch_size)))
    dataset = make_dataset(images, labels, batch_size, shuffle=True, seed=0)
    model.fit(dataset, epochs=1, verbose=0)  # warm-up: tracing and first allocations
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - started)
    return n_images / statistics.median(seconds)


def architectures(runs_dir: Path) -> dict:
    """One registry run per model name (the newest), for each model whose architecture was saved."""
    from contest_study.registry import Registry
    from contest_study.training import MODEL_FILE

    newest = {}
    for record in sorted(Registry(runs_dir).records(), key=lambda record: record.record_file.stat().st_mtime):
        if (record.path / MODEL_FILE).is_file():
            newest[record.model] = record
    return newest


def main(argv=None) -> None:
    from contest_study.config import default_workdir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="the study's folder (default: the repository)")
    parser.add_argument("--models", nargs="+", metavar="MODEL", help="model names (default: every one in the registry)")
    parser.add_argument("--images", type=int, default=2048, help="images per timed epoch (default 2048)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per model (median)")
    args = parser.parse_args(argv)
    if args.images < args.batch_size:
        parser.error(f"--images ({args.images}) must be at least --batch-size ({args.batch_size})")
    runs_dir = (args.workdir or default_workdir()) / "runs"
    found = architectures(runs_dir)
    if not found:
        parser.error(f"no trained architecture in {runs_dir}: run the study first (make submission)")
    unknown = sorted(set(args.models or ()) - set(found))
    if unknown:
        parser.error(f"not in {runs_dir}: {', '.join(unknown)}; known: {', '.join(sorted(found))}")

    import keras

    from contest_study.training import model_from_record

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"{args.images} random images per epoch, batch {args.batch_size}, median of {args.repeats} epochs\n")
    print(f"{'model':<22} {'params':>10} {'img/s':>8}")
    for name in args.models or sorted(found):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = model_from_record(found[name])
        speed = measure(model, n_images=args.images, batch_size=args.batch_size, repeats=args.repeats)
        print(f"{name:<22} {model.count_params():>10,} {speed:8.0f}", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
