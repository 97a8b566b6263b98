"""A training process killed with SIGKILL resumes to the same result as an uninterrupted one.

Each run is a subprocess training a tiny network with the engine's ``fit`` (op
determinism on): one runs through, one kills itself after epoch ``KILL_AFTER``
(once its backup is written) and is then started again in the same folder. The
resumed run must end with the same best epoch, stop reason, history and weights:
early stopping, the checkpoint and ReduceLROnPlateau continue from their saved state.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

KILL_AFTER = 4

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from types import SimpleNamespace

    import keras
    import numpy as np
    import tensorflow as tf

    from contest_study.training import TrainConfig, fit

    workdir, kill_after = Path(sys.argv[1]), int(sys.argv[2])
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    # Noisy labels: the validation loss stalls and wobbles, so the callbacks have state to keep.
    images = rng.random((96, 8, 8, 1), dtype=np.float32)
    labels = ((images[:, :4, :4, 0].mean(axis=(1, 2)) > 0.5)[:, None] ^ (rng.random((96, 3)) < 0.3)).astype(np.int8)
    train = SimpleNamespace(name="train", images=images[:64], labels=labels[:64])
    val = SimpleNamespace(name="val", images=images[64:], labels=labels[64:])
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid", name="labels")(hidden), name="tiny")


    class KillAfter(keras.callbacks.Callback):
        # After the engine's callbacks: the epoch is backed up when the process dies.
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)


    config = TrainConfig(epochs=12, batch_size=16, learning_rate=0.01, patience=3)
    extra = [KillAfter()] if kill_after else []
    outcome = fit(model, train, val, config, workdir, seed=5, verbose=0, extra_callbacks=extra)
    np.savez(workdir / "final_weights.npz", *model.get_weights())
    print(json.dumps({name: outcome[name] for name in ("history", "epochs_run", "best_epoch", "stopped_because")}))
    """
)


def train(workdir, kill_after=0):
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(workdir), str(kill_after)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "STUDY_TERMINAL_PROGRESS": "0"},
    )


def outcome_of(process):
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def weights(workdir):
    with np.load(workdir / "final_weights.npz") as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference = outcome_of(train(tmp_path / "reference"))
    # The scenario only tests something if training goes past the kill and the callbacks matter.
    assert reference["epochs_run"] > KILL_AFTER + 1
    assert reference["best_epoch"] <= KILL_AFTER < reference["epochs_run"]
    assert reference["stopped_because"] == "early stopping"
    assert reference["history"]["learning_rate"][-1] < reference["history"]["learning_rate"][KILL_AFTER - 1]

    interrupted = tmp_path / "interrupted"
    killed = train(interrupted, kill_after=KILL_AFTER)
    assert killed.returncode == -signal.SIGKILL
    assert (interrupted / "backup" / "callback_state.json").is_file()
    resumed = outcome_of(train(interrupted))

    assert resumed["best_epoch"] == reference["best_epoch"]
    assert resumed["stopped_because"] == reference["stopped_because"]
    assert resumed["epochs_run"] == reference["epochs_run"]
    assert resumed["history"].keys() == reference["history"].keys()
    for name, values in reference["history"].items():
        np.testing.assert_allclose(resumed["history"][name], values, rtol=1e-6, err_msg=name)
    for resumed_array, reference_array in zip(weights(interrupted), weights(tmp_path / "reference")):
        np.testing.assert_allclose(resumed_array, reference_array, rtol=1e-6)
    assert not (interrupted / "backup").exists()
