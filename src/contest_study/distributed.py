"""The grid search spread over processes and machines: a chief hands trials out over gRPC, workers train them.

keras-tuner's gRPC service (unauthenticated) carries the trials; this module adds what a
real cluster needs around it: the chief listens on 127.0.0.1 unless told otherwise, puts
back in the queue a trial whose worker fell silent (a worker heartbeats while it trains),
and exits once every trial has a result; a worker gives up, with a message saying so, when
the chief has been unreachable for longer than its timeout.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path

from contest_study.grid import TrialSpec
from contest_study.search import PlannedTrialsOracle, RegistryTuner, TrialRunner

DEFAULT_BIND = "127.0.0.1"
WORKER_TIMEOUT_S = 120.0  # chief: a trial whose worker is silent this long goes back to the queue
CHIEF_TIMEOUT_S = 300.0  # worker: give up when the chief has not answered for this long
HEARTBEAT_S = 10.0  # worker: how often it tells the chief it is still training
# After the last result, the chief keeps answering for this long so that waiting workers hear "stop".
LINGER_S = 5.0


class ChiefUnreachable(RuntimeError):
    """The chief has not answered a worker for longer than the worker's timeout."""


def _set_role(tuner_id: str, host: str, port: int) -> None:
    # keras-tuner reads its distributed role from these variables when a tuner is created.
    os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))


def serve(oracle: PlannedTrialsOracle, *, bind: str, port: int, worker_timeout_s: float = WORKER_TIMEOUT_S,
          linger_s: float = LINGER_S, log: Callable[[str], None] = print, poll_s: float = 0.5) -> None:
    """Serve ``oracle``'s trials on ``bind:port`` until every trial has a result.

    keras-tuner's own server loop waits for every worker that ever asked, so one dead worker
    keeps it waiting forever; this one requeues that worker's trial instead.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    protos.get_service_grpc().add_OracleServicer_to_server(OracleServicer(oracle), server)
    if server.add_insecure_port(f"{bind}:{port}") == 0:
        raise OSError(f"the chief cannot listen on {bind}:{port} (address in use or not on this machine)")
    server.start()
    try:
        while not oracle.finished():
            for tuner_id, trial in oracle.requeue_silent(worker_timeout_s):
                log(f"chief: {tuner_id} silent for more than {worker_timeout_s:g} s; its trial goes back to the "
                    f"queue: {TrialSpec.from_json(trial).label()}")
            time.sleep(poll_s)
        time.sleep(linger_s)
    finally:
        server.stop(grace=1)


def run_chief(runner: TrialRunner, trials: Sequence[TrialSpec], *, directory: Path, bind: str = DEFAULT_BIND,
              port: int = 8000, worker_timeout_s: float = WORKER_TIMEOUT_S, linger_s: float = LINGER_S,
              log: Callable[[str], None] = print) -> None:
    """Hand ``trials`` out to workers until each has a result (the chief trains nothing)."""
    _set_role("chief", bind, port)
    oracle = PlannedTrialsOracle(trials, identity=runner.identity(), max_consecutive_failed_trials=len(trials) + 1)
    # The tuner gives the oracle its bookkeeping folder; the chief never runs its search loop.
    RegistryTuner(oracle, runner, directory=str(Path(directory) / "chief"), project_name="distributed", overwrite=True)
    serve(oracle, bind=bind, port=port, worker_timeout_s=worker_timeout_s, linger_s=linger_s, log=log)


@contextlib.contextmanager
def heartbeat(oracle, trial, every_s: float):
    """Tell the chief every ``every_s`` seconds that ``trial`` is still being trained (a thread)."""
    stop = threading.Event()

    def beat():
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):  # a missed beat is not fatal; the chief's timeout judges
                oracle.get_trial(trial.trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def run_worker(runner: TrialRunner, *, chief: tuple[str, int], worker_id: str, directory: Path,
               heartbeat_s: float = HEARTBEAT_S, chief_timeout_s: float = CHIEF_TIMEOUT_S, idle_wait_s: float = 1.0,
               log: Callable[[str], None] = print) -> None:
    """Ask the chief for trials and train them until it says none is left.

    Raises :class:`ChiefUnreachable` when a request to the chief gets no answer within
    ``chief_timeout_s`` (the trial being trained, if any, is in the registry or resumes later).
    """
    import grpc
    from keras_tuner.src.distribute import oracle_client

    if "chief" in worker_id:
        raise ValueError(f"worker id {worker_id!r}: a worker's name must not contain 'chief' (keras-tuner's rule)")
    host, port = chief
    _set_role(worker_id, host, port)
    # keras-tuner waits up to an hour for an answer; a worker here gives up after its own timeout.
    oracle_client.TIMEOUT = chief_timeout_s
    oracle = PlannedTrialsOracle(identity=runner.identity())
    try:
        tuner = RegistryTuner(oracle, runner, directory=str(Path(directory) / worker_id), project_name="distributed",
                              overwrite=True, idle_wait_s=idle_wait_s,
                              trial_guard=lambda trial: heartbeat(tuner.oracle, trial, heartbeat_s),
                              on_claim=lambda spec: log(f"{worker_id}: claimed {spec.label()}"))
        tuner.search()
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            raise ChiefUnreachable(
                f"{worker_id}: the chief at {host}:{port} has not answered for {chief_timeout_s:g} s; giving up. "
                f"Trials this worker finished are in the registry {runner.study.registry.root}; an interrupted "
                "one resumes when a worker takes it again."
            ) from None
        raise
