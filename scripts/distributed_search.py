"""Run the hyperparameter grid of notebook 05 on several processes or machines, through keras-tuner.

One **chief** plans the trials and hands them out over gRPC; it trains nothing. Each
**worker** asks the chief for a trial, trains it with the study's engine into the results
registry, and asks again until every trial has a result; then the chief exits. The notebook,
run afterwards on the same registry, finds every trial instead of training it.

    # machine A: the chief, serving the profile's grid on the best CNN of notebook 02
    python scripts/distributed_search.py chief --profile full --port 8000
    # machines B, C, ...: reach the chief through an SSH tunnel, then one worker each
    ssh -N -L 8000:127.0.0.1:8000 A &
    python scripts/distributed_search.py worker --chief 127.0.0.1:8000 --id worker-b

    # a custom grid instead of the profile's: axes of TrainConfig values
    python scripts/distributed_search.py chief --axis learning_rate=0.001,0.01 --axis optimizer=adam,sgd

keras-tuner's gRPC service has no authentication: the chief listens on 127.0.0.1 unless
``--bind`` says otherwise. Every process reads the same data (``--data-dir``: a shared folder
or a copy that keeps file times, e.g. ``rsync -a``) and the same registry (``--workdir``,
shared, holding the runs of notebooks 02-04 whose architectures the trials train); ``--seed``
must match too.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections import Counter
from pathlib import Path

from contest_study.config import PROFILE_NAMES, get_profile

FAMILIES = ("cnn", "rnn", "fully_connected")


def _axis(text: str) -> tuple[str, list]:
    """``name=v1,v2`` -> (name, typed values); the type is the TrainConfig field's."""
    from contest_study.training import TrainConfig

    name, separator, values = text.partition("=")
    defaults = TrainConfig()
    if not separator or not values or not hasattr(defaults, name):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected FIELD=VALUE[,VALUE...] with FIELD a TrainConfig field such as learning_rate")
    kind = type(getattr(defaults, name))
    parsed = []
    for value in values.split(","):
        try:
            parsed.append(kind(value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a valid {kind.__name__} for {name}") from None
    return name, parsed


def _chief_address(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    from contest_study import distributed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None, help="contest data folder (default: the embedded dataset)")
    common.add_argument("--workdir", type=Path, default=None, help="folder of the registry (runs/) and caches")
    common.add_argument("--seed", type=int, default=42, help="the study's seed (the same on every process)")

    chief = roles.add_parser("chief", parents=[common], help="plan the trials and hand them out")
    chief.add_argument("--profile", choices=PROFILE_NAMES, default="default", help="whose grid to serve")
    chief.add_argument("--family", choices=FAMILIES, default="cnn",
                       help="tune the best network of this family in the registry (default cnn)")
    chief.add_argument("--architecture", default=None, metavar="KEY",
                       help="tune the architecture of this registry run instead")
    chief.add_argument("--axis", type=_axis, action="append", default=[], metavar="FIELD=V1,V2",
                       help="an axis of a custom grid instead of the profile's (repeatable)")
    chief.add_argument("--bind", default=distributed.DEFAULT_BIND,
                       help=f"address to listen on (default {distributed.DEFAULT_BIND}: reach it through an SSH tunnel)")
    chief.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    chief.add_argument("--worker-timeout", type=_positive, default=distributed.WORKER_TIMEOUT_S, metavar="S",
                       help="a trial whose worker is silent this long goes back to the queue "
                            f"(default {distributed.WORKER_TIMEOUT_S:g})")

    worker = roles.add_parser("worker", parents=[common], help="train the trials the chief hands out")
    worker.add_argument("--chief", type=_chief_address, required=True, metavar="HOST:PORT", help="where the chief listens")
    worker.add_argument("--id", default=f"worker-{socket.gethostname()}-{os.getpid()}",
                        help="this worker's name in the records it trains (default worker-HOST-PID)")
    worker.add_argument("--chief-timeout", type=_positive, default=distributed.CHIEF_TIMEOUT_S, metavar="S",
                        help=f"give up when the chief has not answered for this long (default {distributed.CHIEF_TIMEOUT_S:g})")
    worker.add_argument("--heartbeat", type=_positive, default=distributed.HEARTBEAT_S, metavar="S",
                        help=f"seconds between heartbeats while training (default {distributed.HEARTBEAT_S:g})")
    return parser


def _chief_trials(args, study):
    from contest_study import grid

    profile = get_profile(args.profile)
    if args.architecture:
        architecture = args.architecture
    else:
        records = study.registry.records(family=args.family)
        if not records:
            raise SystemExit(f"error: the registry {study.registry.root} holds no {args.family} run to tune: "
                             "run its notebook first, or give --architecture KEY")
        architecture = study.best(records).key
    cells = grid.expand_grid(dict(args.axis), {"lr_schedule": "constant"}) if args.axis else grid.grid_cells(profile)
    return grid.make_trials(architecture, cells, profile)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.role == "worker" and "chief" in args.id:
        raise SystemExit(f"error: --id {args.id!r}: a worker's name must not contain 'chief' (keras-tuner's rule)")

    from contest_study import distributed
    from contest_study.search import TrialRunner
    from contest_study.study import open_study

    # A trial carries its own settings and share of the images: the profile only names the study.
    study = open_study(profile=args.profile if args.role == "chief" else "default", data_dir=args.data_dir,
                       workdir=args.workdir, seed=args.seed)
    name = "chief" if args.role == "chief" else args.id
    runner = TrialRunner(study, worker=name, log=lambda line: print(f"{name}: {line}", flush=True))
    directory = study.context.cache_dir / "keras_tuner"
    if args.role == "chief":
        trials = _chief_trials(args, study)
        print(f"chief: serving {len(trials)} trials on {args.bind}:{args.port}", flush=True)
        distributed.run_chief(runner, trials, directory=directory, bind=args.bind, port=args.port,
                              worker_timeout_s=args.worker_timeout, log=lambda line: print(line, flush=True))
        records = [runner.find(trial) for trial in trials]
        workers = Counter((record.data.get("trained_by") or {}).get("worker", "?") for record in records if record)
        print(f"chief: {sum(record is not None for record in records)} of {len(trials)} trials are in the registry "
              f"{study.registry.root}; trained by " + ", ".join(f"{who} ({count})" for who, count in workers.items()),
              flush=True)
        return 0 if all(records) else 1
    host, port = args.chief
    print(f"{args.id}: ready, asking {host}:{port} for trials", flush=True)
    try:
        distributed.run_worker(runner, chief=args.chief, worker_id=args.id, directory=directory,
                               heartbeat_s=args.heartbeat, chief_timeout_s=args.chief_timeout,
                               log=lambda line: print(line, flush=True))
    except distributed.ChiefUnreachable as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    print(f"{args.id}: no trial left; trained {len(runner.trained)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
