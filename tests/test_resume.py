"""Crash safety: a training killed with SIGKILL at random moments and resumed ends bitwise
identical to the same training uninterrupted, and never leaves a checkpoint that lies."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ckptkd.trajectory import Run
from ckptkd.trajectory.io import sha256_file

EPOCHS = 10
ARGS = ["train", "--data", "digits", "--model", "mlp_m", "--epochs", str(EPOCHS), "--save-every", "1",
        "--batch-size", "16", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CKPTKD_TENSORBOARD": "0"}


def ckptkd(*args):
    return subprocess.Popen([sys.executable, "-m", "ckptkd", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def saved(folder: Path) -> int:
    return len(list((folder / "checkpoints").glob("*.json"))) if (folder / "checkpoints").exists() else 0


def kill_after_checkpoint(proc, folder: Path, target: int, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after its ``target``-th checkpoint; False if it finished first."""
    while saved(folder) < target:
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    time.sleep(delay)  # anywhere inside the next epoch, or inside a save
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def assert_every_checkpoint_is_what_it_claims(folder: Path):
    for ckpt in Run(folder).checkpoints():
        assert sha256_file(ckpt.path) == ckpt.sha256, f"{ckpt.path} is listed but does not match its sidecar"


def test_killed_and_resumed_training_matches_the_uninterrupted_one(tmp_path):
    reference = tmp_path / "reference"
    assert ckptkd(*ARGS, "--out", str(reference)).wait(timeout=300) == 0
    rng = random.Random(1234)
    resumed, kills = tmp_path / "resumed", 0
    targets = sorted(rng.sample(range(1, EPOCHS), 3))  # kill after these many checkpoints
    for attempt, target in enumerate(targets):
        proc = ckptkd(*ARGS, "--out", str(resumed), *(["--resume"] if attempt else []))
        if kill_after_checkpoint(proc, resumed, target, rng.uniform(0.0, 0.3)):
            kills += 1
            assert not Run(resumed).complete
            assert_every_checkpoint_is_what_it_claims(resumed)
        else:
            assert proc.returncode == 0, proc.stderr.read()
    assert kills >= 2, "the training outran the kills; make it longer"
    final = ckptkd(*ARGS, "--out", str(resumed), "--resume")
    assert final.wait(timeout=300) == 0, final.stderr.read()
    assert Run(resumed).complete
    ref, res = Run(reference).checkpoints(), Run(resumed).checkpoints()
    assert [c.epoch for c in res] == [c.epoch for c in ref] == list(range(1, EPOCHS + 1))
    assert [c.sha256 for c in res] == [c.sha256 for c in ref]  # bitwise identical weights, every epoch
    assert [m["epoch"] for m in Run(resumed).metrics()] == list(range(1, EPOCHS + 1))
