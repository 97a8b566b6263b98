"""Print the results registry as a Markdown table (the README's results come from here).

    python scripts/results_table.py [--workdir DIR] [--family cnn ...]

One row per finished run, best validation mAP first: validation and hold-out
mAP on all images and on the non-black ones, the oracle beside them on the
embedded data, parameters, epochs, the best epoch and why training stopped,
and training time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contest_study.config import default_workdir
from contest_study.registry import Registry, latest_runs
from contest_study.study import comparison_table

COLUMNS = {
    "run": "run",
    "family": "family",
    "val mAP": "val mAP",
    "val mAP (non-black)": "val mAP (non-black)",
    "holdout mAP": "hold-out mAP",
    "holdout mAP (non-black)": "hold-out mAP (non-black)",
    "oracle val mAP": "oracle val mAP",
    "params": "params",
    "epochs": "epochs",
    "best epoch": "best epoch",
    "stopped by": "stopped by",
    "wall time (s)": "time (s)",
}


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: undefined (e.g. no epochs for a classical model)
            return "–"
        return f"{value:.0f}" if value >= 100 or value.is_integer() else f"{value:.3f}"
    return str(value) if value != "" else "–"  # "": not applicable (no epochs for a classical model)


def markdown_table(workdir: Path, families: list[str] | None = None) -> str:
    registry = Registry(workdir / "runs")
    # Runs superseded by a newer run of the same name (a notebook edited since) are left out.
    records = [record for record in latest_runs(registry.records()) if not families or record.family in families]
    if not records:
        raise SystemExit(f"no finished runs in {workdir / 'runs'}")
    table = comparison_table(registry, records)
    columns = [column for column in COLUMNS if column in table.columns]
    lines = [
        "| " + " | ".join(COLUMNS[column] for column in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[column]) for column in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="folder holding runs/ (default: the repository)")
    parser.add_argument("--family", nargs="+", help="only these families (cnn, rnn, fully_connected, classical, ...)")
    args = parser.parse_args(argv)
    print(markdown_table(args.workdir or default_workdir(), args.family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
