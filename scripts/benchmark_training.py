"""Training throughput (images per second) of every network of the study.

    python scripts/benchmark_training.py                    # every model, with and without augmentation
    python scripts/benchmark_training.py --models cnn_1e fc_3a --images 2048 --no-augment-only

Each model is compiled exactly as the training engine compiles it (Adam,
binary cross-entropy, the default profile's batch size) and fitted on random
images of the contest's shape: the throughput of a network does not depend on
what the pixels show. One epoch warms up (graph tracing, memory), then the
median of ``--repeats`` timed epochs gives the figure; the validation pass of
a real epoch is not included. The table printed at the end is what the README
quotes, with the machine it was measured on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def measure(model_name: str, *, augment: bool, images: np.ndarray, labels: np.ndarray, batch_size: int, repeats: int) -> float:
    """Images per second of one training epoch of ``model_name`` (median of ``repeats`` epochs)."""
    import keras

    from contest_study.models import get_model_spec
    from contest_study.training import compile_model, config_for_profile, make_dataset

    keras.utils.set_random_seed(0)
    config = config_for_profile("default", augment=augment, batch_size=batch_size)
    model = get_model_spec(model_name).builder(images.shape[1:], labels.shape[1], augment=augment)
    compile_model(model, config, steps_per_epoch=int(np.ceil(len(images) / batch_size)))
    dataset = make_dataset(images, labels, batch_size, shuffle=True, seed=0)
    model.fit(dataset, epochs=1, verbose=0)  # warm-up: tracing and first allocations
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - started)
    keras.backend.clear_session()
    return len(images) / statistics.median(seconds)


def main(argv=None) -> None:
    from contest_study.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL")
    parser.add_argument("--images", type=int, default=2048, help="images per timed epoch (default 2048)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per model (median)")
    parser.add_argument("--no-augment-only", action="store_true", help="skip the runs with augmentation layers")
    args = parser.parse_args(argv)
    if args.images < args.batch_size:
        parser.error(f"--images ({args.images}) must be at least --batch-size ({args.batch_size})")

    rng = np.random.default_rng(0)
    images = rng.random((args.images, 64, 64, 1), dtype=np.float32)
    labels = (rng.random((args.images, 3)) < 0.5).astype(np.float32)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"{args.images} random 64x64x1 images per epoch, batch {args.batch_size}, median of {args.repeats} epochs\n")
    print(f"{'model':<12} {'params':>9} {'img/s no aug':>13} {'img/s aug':>10} {'aug cost':>9}")
    for name in args.models:
        plain = measure(name, augment=False, images=images, labels=labels, batch_size=args.batch_size, repeats=args.repeats)
        if args.no_augment_only:
            augmented_text, cost_text = "-", "-"
        else:
            augmented = measure(name, augment=True, images=images, labels=labels, batch_size=args.batch_size, repeats=args.repeats)
            augmented_text, cost_text = f"{augmented:10.0f}", f"{plain / augmented:8.2f}x"
        params = MODELS[name].builder((64, 64, 1), 3).count_params()
        print(f"{name:<12} {params:>9,} {plain:13.0f} {augmented_text:>10} {cost_text:>9}", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
