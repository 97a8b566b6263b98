"""End-to-end time of the submission pipeline: from an empty registry, then again with nothing changed.

    python scripts/benchmark_pipeline.py --profile smoke [--jobs 2] [--data-dir DIR] [--keep]

Each pass runs ``scripts/export_submission.py`` in a fresh process on a scratch
``--workdir`` and ``--out`` (nothing of the repository's own runs is reused or touched).
It prints the wall and CPU time of each pass, then, per notebook of the first pass, its
time, its kernel's CPU time (user + system, from ``/proc``) and the stop reason of every
registry run it trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from contest_study.config import PROFILE_NAMES, repository_root
from contest_study.export import PARALLEL_NOTEBOOKS
from contest_study.report import RUN_METADATA_KEY


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_export(root: Path, args: list[str], log_path: Path) -> tuple[float, float] | None:
    """Run the export script with ``args``; (wall, CPU) seconds of it and its kernels, None if it failed.

    The log keeps its output.
    """
    command = [sys.executable, str(root / "scripts" / "export_submission.py"), *args]
    cpu_before, started = children_cpu_seconds(), time.perf_counter()
    with open(log_path, "w") as log:
        completed = subprocess.run(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_before
    if completed.returncode != 0:
        print(f"export failed (exit {completed.returncode}) after {minutes(wall)}; its output is in {log_path}")
        return None
    return wall, cpu


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def stop_reason(record_file: Path) -> str:
    """``key: N epochs (best M), <why it stopped>`` from a registry record."""
    record = json.loads(record_file.read_text())
    epochs = record.get("epochs", record.get("epochs_run"))
    best, why = record.get("best_epoch"), record.get("stopped_because")
    if epochs is None and why is None:
        return f"{record_file.parent.name}: no training epochs (not a network)"
    return f"{record_file.parent.name}: {epochs} epochs (best {best}), {why or 'reason not recorded'}"


def print_notebooks(workdir: Path) -> None:
    """Per notebook: wall time, kernel CPU time and cores used, then its runs' stop reasons."""
    print(f"\n{'notebook':<28}{'wall':>14}{'kernel CPU':>14}{'cores':>7}{'threads':>9}{'runs':>6}")
    for path in sorted((workdir / "build" / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if path.name.endswith(".failed.ipynb"):
            continue
        facts = nbformat.read(path, as_version=4).metadata.get(RUN_METADATA_KEY, {})
        wall, cpu, runs = facts.get("seconds"), facts.get("cpu_seconds"), facts.get("runs", [])
        cores = f"{cpu / wall:.2f}" if wall and cpu is not None else "?"
        print(f"{path.stem:<28}{minutes(wall):>14}{minutes(cpu):>14}{cores:>7}{facts.get('threads', '?'):>9}{len(runs):>6}")
        for key in runs:
            record_file = workdir / "runs" / key / "record.json"
            print(f"    {stop_reason(record_file) if record_file.is_file() else key + ': record gone'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="smoke")
    parser.add_argument("--data-dir", type=Path, default=None, help="contest folder (default: data/embedded)")
    parser.add_argument("--jobs", type=int, default=PARALLEL_NOTEBOOKS, help="notebooks executed at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch registry, cache and build too (the logs and the zip are always kept; the path is printed)")
    args = parser.parse_args(argv)
    root = repository_root()
    if root is None:
        parser.error("run this script from the project repository")
    data_dir = (args.data_dir or root / "data" / "embedded").expanduser().resolve()
    if not (data_dir / "train.csv").is_file():
        parser.error(f"--data-dir {data_dir}: no train.csv there (make data writes the embedded dataset)")

    scratch = Path(tempfile.mkdtemp(prefix=f"benchmark-{args.profile}-"))
    workdir = scratch / "work"
    export_args = [
        "--profile", args.profile, "--data-dir", str(data_dir), "--jobs", str(args.jobs),
        "--workdir", str(workdir), "--out", str(scratch / "dist"),
    ]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"profile {args.profile}, {args.jobs} notebook(s) at once, data {data_dir}, scratch {scratch}", flush=True)
    first = timed_export(root, export_args, scratch / "first_run.log")
    if first is None:
        print_notebooks(workdir)  # those that ran
        raise SystemExit(1)
    print(f"empty registry:       {minutes(first[0])} wall, {minutes(first[1])} CPU ({first[1] / first[0]:.2f} cores; "
          f"load average now {os.getloadavg()[0]:.2f})", flush=True)
    print_notebooks(workdir)
    second = timed_export(root, export_args, scratch / "second_run.log")
    if second is None:
        raise SystemExit(1)
    print(f"\nnothing changed:      {minutes(second[0])} wall, {minutes(second[1])} CPU "
          f"(load average now {os.getloadavg()[0]:.2f})")
    print(f"logs: {scratch / 'first_run.log'}, {scratch / 'second_run.log'}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
