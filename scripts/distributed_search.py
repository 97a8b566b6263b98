"""Run the hyperparameter search of notebook 05 on several processes or machines, through keras-tuner.

One **chief** plans the trials and hands them out over gRPC (keras-tuner's distributed
mode); it trains nothing. Each **worker** asks the chief for a trial, trains it with the
study's engine into the results registry, and asks again until none is left; then the
chief exits. The notebook, run afterwards on the same registry, finds every trial
instead of training it.

    # machine A: the chief, serving the grids of the profile's plan (what notebook 05 runs)
    python scripts/distributed_search.py chief --profile full --bind 0.0.0.0 --port 8000
    # machines B, C, ...: one worker each (or several per machine)
    python scripts/distributed_search.py worker --chief A:8000 --id worker-b

    # a custom grid instead of the plan's: one model, axes of TrainConfig values
    python scripts/distributed_search.py chief --profile default --model fc_3a \\
        --axis learning_rate=0.001,0.01 --axis optimizer=adam,sgd --fixed epochs=5

Every process reads the same data (``--data-dir``, a shared folder or a copy that keeps
file times, e.g. ``rsync -a``: the data fingerprint is part of every registry key, and a
worker refuses trials planned on other data) and writes into the registry of
``--workdir`` (``runs/``): a shared folder, or one per machine merged afterwards by
copying the run folders together. ``--seed`` must match too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from collections import Counter
from pathlib import Path

from contest_study.config import PROFILE_NAMES, StudyContext, default_workdir, get_profile

FAMILIES = ("cnn", "rnn", "fully_connected")


def _axis(text: str) -> tuple[str, list]:
    """``name=v1,v2`` -> (name, typed values); the type is the TrainConfig field's."""
    from contest_study.training import TrainConfig

    name, separator, values = text.partition("=")
    defaults = TrainConfig()
    if not separator or not values or not hasattr(defaults, name) or name == "model_options":
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected FIELD=VALUE[,VALUE...] with FIELD a TrainConfig field such as learning_rate"
        )
    kind = type(getattr(defaults, name))
    parsed = []
    for value in values.split(","):
        try:
            if kind is bool:
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                parsed.append(value.lower() == "true")
            else:
                parsed.append(kind(value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a valid {kind.__name__} for {name}") from None
    return name, parsed


def _chief_address(text: str) -> tuple[str, str]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 10.0.0.5:8000")
    return host, port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None,
                        help="contest data folder (default: STUDY_DATA_DIR or WORKDIR/data/embedded)")
    common.add_argument("--workdir", type=Path, default=None,
                        help="folder of the registry (runs/) and caches (default: STUDY_WORKDIR or the repository)")
    common.add_argument("--seed", type=int, default=int(os.environ.get("STUDY_SEED", 42)),
                        help="the study's seed (must be the chief's; default STUDY_SEED or 42)")

    chief = roles.add_parser("chief", parents=[common], help="plan the trials and hand them out")
    chief.add_argument("--profile", choices=PROFILE_NAMES, default="default", help="whose plan to serve")
    chief.add_argument("--search", nargs="+", choices=FAMILIES, default=list(FAMILIES),
                       help="which of the plan's grids to serve (default: all)")
    chief.add_argument("--model", default=None, help="serve a custom grid of this model instead of the plan's")
    chief.add_argument("--axis", type=_axis, action="append", default=[], metavar="FIELD=V1,V2",
                       help="an axis of the custom grid (repeatable)")
    chief.add_argument("--fixed", type=_axis, action="append", default=[], metavar="FIELD=VALUE",
                       help="a setting every trial of the custom grid shares (repeatable)")
    chief.add_argument("--bind", default="0.0.0.0", help="address the chief listens on (default 0.0.0.0)")
    chief.add_argument("--port", type=int, default=8000, help="port the chief listens on (default 8000)")

    worker = roles.add_parser("worker", parents=[common], help="train the trials the chief hands out")
    worker.add_argument("--chief", type=_chief_address, required=True, metavar="HOST:PORT",
                        help="where the chief listens")
    worker.add_argument("--id", default=f"worker-{socket.gethostname()}-{os.getpid()}",
                        help="this worker's name in the records it trains (default worker-HOST-PID)")
    return parser


def _check_grpc() -> None:
    # keras-tuner imports gRPC only once a chief or worker starts: fail before loading any data.
    if importlib.util.find_spec("grpc") is None:
        raise SystemExit("error: keras-tuner's distributed mode needs grpcio (pip install grpcio)")


def _open_study(args, profile: str):
    from contest_study.study import open_study

    workdir = args.workdir.expanduser().resolve() if args.workdir else default_workdir()
    data_dir = args.data_dir or Path(os.environ.get("STUDY_DATA_DIR") or workdir / "data" / "embedded")
    context = StudyContext(profile=get_profile(profile), workdir=workdir,
                           data_dir=data_dir.expanduser().resolve(), seed=args.seed)
    return open_study(context)


def _chief_trials(args, study, runner):
    from contest_study import tuning

    plan = tuning.plan_for(args.profile)
    if args.model is not None:
        several = [name for name, values in args.fixed if len(values) != 1]
        if several:
            raise SystemExit(f"error: --fixed {', '.join(several)}: one value each (use --axis to vary a setting)")
        fixed = {**plan.fixed, **{name: values[0] for name, values in args.fixed}}
        axes = dict(args.axis)
        return tuning.make_trials(args.model, tuning.grid_combinations([axes], fixed), plan)
    if args.axis or args.fixed:
        raise SystemExit("error: --axis and --fixed describe a custom grid: give --model too")
    trials = []
    for family in args.search:
        model, _ = tuning.plan_model(study, plan, family)
        grids = {"cnn": plan.cnn_grids, "rnn": (plan.rnn_grid,), "fully_connected": (plan.fc_grid,)}[family]
        grids = [grid for grid in grids if grid is not None]
        if grids:
            trials += tuning.make_trials(model, tuning.grid_combinations(grids, plan.fixed), plan)
    return trials


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_grpc()
    if args.role == "chief":
        os.environ.update(KERASTUNER_TUNER_ID="chief", KERASTUNER_ORACLE_IP=args.bind,
                          KERASTUNER_ORACLE_PORT=str(args.port))
    else:
        if "chief" in args.id:
            raise SystemExit(f"error: --id {args.id!r}: a worker's name must not contain 'chief' (keras-tuner's rule)")
        host, port = args.chief
        os.environ.update(KERASTUNER_TUNER_ID=args.id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port)

    from contest_study import tuning

    # A worker's trials carry their own profile and image caps: its profile only names the study.
    study = _open_study(args, args.profile if args.role == "chief" else "default")
    runner = tuning.TrialRunner(study, worker=os.environ["KERASTUNER_TUNER_ID"], verbose=0,
                                log=lambda line: print(f"{runner.registry.stamp['worker']}: {line}", flush=True))
    search_dir = study.context.cache_dir / "keras_tuner"
    if args.role == "chief":
        trials = _chief_trials(args, study, runner)
        if not trials:
            raise SystemExit("error: the plan has no trial to serve for --search " + " ".join(args.search))
        print(f"chief: serving {len(trials)} trials on {args.bind}:{args.port}", flush=True)
        tuning.run_search(runner, trials, directory=search_dir, name="distributed", verbose=1)
        records = [runner.find(trial) for trial in trials]
        workers = Counter((record.data.get("trained_by") or {}).get("worker", "?") for record in records if record)
        print(f"chief: {sum(record is not None for record in records)} of {len(trials)} trials are in the registry "
              f"{study.registry.root}; trained by " + ", ".join(f"{name} ({count})" for name, count in workers.items()),
              flush=True)
        return 0 if all(records) else 1
    host, port = args.chief
    print(f"{args.id}: ready, asking {host}:{port} for trials", flush=True)
    tuning.run_search(runner, (), directory=search_dir, name="distributed")
    print(f"{args.id}: no trial left; trained {len(runner.trained)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
