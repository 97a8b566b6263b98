"""Build the submission: sync the notebooks with their .py twins, run them, predict, report, zip.

    python scripts/export_submission.py [--profile smoke|default|full] [--data-dir DIR]
        [--name FAMILY_FIRST] [--out DIR] [--notebooks 01 03_name ...] [--force-retrain]
        [--jobs N] [--skip-execution]

Writes ``OUT/NAME.zip`` (code folder, README, report), the test-set predictions of
the final model (``OUT/NAME_test_probabilities.csv`` and ``OUT/NAME_test_labels.csv``),
the technical report (``build/report/report.html`` and ``report.pdf`` under the work
folder), the executed notebooks (``build/notebooks/``) and the figures (``figures/``),
and prints where each one is. Relative paths are taken from the current directory.
The work itself is done by :mod:`contest_study.export`; this is its command-line
front end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contest_study.config import PROFILE_NAMES, SUBMISSION_NAME, default_workdir, repository_root
from contest_study.export import (
    PARALLEL_NOTEBOOKS,
    SUBMISSION_NAME_RULE,
    ExportError,
    ProjectLayout,
    export_submission,
    validate_submission_name,
)


def _submission_name(text: str) -> str:
    try:
        return validate_submission_name(text)
    except ExportError:
        # argparse itself prefixes the message with "argument --name:".
        raise argparse.ArgumentTypeError(f"{text!r}: {SUBMISSION_NAME_RULE}") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of notebooks, at least 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Sync, execute and zip the study notebooks into the submission archive.",
        epilog="Relative paths are resolved against the current directory.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="contest data folder (default: the embedded dataset data/embedded, generated when missing)",
    )
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="default", help="how much work the study does")
    parser.add_argument(
        "--name",
        type=_submission_name,
        default=SUBMISSION_NAME,
        help=f"FAMILY_FIRST name of the zip and of its code folder (default {SUBMISSION_NAME})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("dist"),
        help="folder receiving NAME.zip and the test-set prediction CSVs (default dist/)",
    )
    parser.add_argument(
        "--notebooks",
        nargs="+",
        metavar="NOTEBOOK",
        help="run only these notebooks, by number (3, 03) or name (03_cnn); for development",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed set in the notebooks' parameters cell")
    parser.add_argument(
        "--force-retrain",
        action="store_true",
        help="re-execute every notebook and retrain instead of reusing finished runs of the results registry",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=PARALLEL_NOTEBOOKS,
        help=f"notebooks executed at once, each with its share of the cores (default {PARALLEL_NOTEBOOKS})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder receiving data, cache, registry, figures and build/ (default: the repository)",
    )
    parser.add_argument(
        "--skip-execution",
        action="store_true",
        help="only sync the notebooks and build the zip (with the report already built, if any)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the profile's plan (grid cells, epochs, patience, networks) and its estimated time; train nothing",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = repository_root()
    if root is None:
        print("error: run this script from the project repository (no pyproject.toml above the package)", file=sys.stderr)
        return 1
    workdir = args.workdir.expanduser().resolve() if args.workdir else default_workdir()
    if args.dry_run:
        from contest_study.grid import dry_run_report

        print(dry_run_report(args.profile, data_dir=args.data_dir, workdir=workdir, seed=args.seed))
        return 0
    try:
        export_submission(
            ProjectLayout(root, workdir),
            name=args.name,
            out_dir=args.out.expanduser().resolve(),
            profile=args.profile,
            data_dir=args.data_dir,
            seed=args.seed,
            notebooks=args.notebooks,
            force_retrain=args.force_retrain,
            skip_execution=args.skip_execution,
            parallel=args.jobs,
        )
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
