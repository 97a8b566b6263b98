"""End-to-end time of the submission pipeline, from an empty registry and again with nothing changed.

    python scripts/benchmark_pipeline.py --profile smoke        # about 6 minutes on 2 cores
    python scripts/benchmark_pipeline.py --profile default      # about half an hour on 2 cores
    python scripts/benchmark_pipeline.py --profile default --data-dir /path/to/contest

Each measurement runs ``scripts/export_submission.py`` in a fresh process on a
scratch ``--workdir`` (its own pixel cache, registry, figures and build/, so
nothing of the repository's own runs is reused or touched) and a scratch
``--out``: first from an empty registry, then a second time with nothing
changed (every run must come from the registry). The data folder is only
read; by default it is the repository's embedded dataset (``make data``).
The printed lines, with the machine and its load, are what the README quotes.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contest_study.config import PROFILE_NAMES, repository_root


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_export(root: Path, args: list[str], log_path: Path) -> tuple[float, float]:
    """Run the export script with ``args``; return (wall, CPU) seconds. The log keeps its output."""
    command = [sys.executable, str(root / "scripts" / "export_submission.py"), *args]
    cpu_before, started = children_cpu_seconds(), time.perf_counter()
    with open(log_path, "w") as log:
        completed = subprocess.run(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_before
    if completed.returncode != 0:
        raise SystemExit(f"export failed (exit {completed.returncode}); its output is in {log_path}")
    return wall, cpu


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="smoke")
    parser.add_argument("--data-dir", type=Path, default=None, help="contest folder (default: data/embedded)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch registry, cache and build too (the logs and the zip are always kept; the path is printed)")
    args = parser.parse_args(argv)
    root = repository_root()
    if root is None:
        parser.error("run this script from the project repository")
    data_dir = (args.data_dir or root / "data" / "embedded").expanduser().resolve()
    if not (data_dir / "train.csv").is_file():
        parser.error(f"--data-dir {data_dir}: no train.csv there (make data writes the embedded dataset)")

    scratch = Path(tempfile.mkdtemp(prefix=f"benchmark-{args.profile}-"))
    export_args = [
        "--profile", args.profile, "--data-dir", str(data_dir),
        "--workdir", str(scratch / "work"), "--out", str(scratch / "dist"),
    ]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"profile {args.profile}, data {data_dir}, scratch {scratch}", flush=True)
    first = timed_export(root, export_args, scratch / "first_run.log")
    print(f"empty registry:       {minutes(first[0])} wall, {minutes(first[1])} CPU "
          f"(load average now {os.getloadavg()[0]:.2f})", flush=True)
    second = timed_export(root, export_args, scratch / "second_run.log")
    print(f"nothing changed:      {minutes(second[0])} wall, {minutes(second[1])} CPU "
          f"(load average now {os.getloadavg()[0]:.2f})")
    print(f"logs: {scratch / 'first_run.log'}, {scratch / 'second_run.log'}")
    if not args.keep:
        shutil.rmtree(scratch / "work", ignore_errors=True)


if __name__ == "__main__":
    main()
