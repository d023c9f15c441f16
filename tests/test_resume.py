"""Crash safety and --resume.

A training killed at a named point of a save point (``CKPTKD_FAULT``, see
ckptkd/trajectory/run.py) leaves exactly the state that point implies, and ``--resume``
continues from the last complete save point: it trains only the epochs after it and ends
bitwise identical to the uninterrupted training. One more test kills at a random moment and
accepts whatever state that leaves, a finished run included.

Which epochs a resumed run actually trains is counted by wrapping ``Run.log`` (one call per
epoch trained), so a resume that quietly starts again from scratch fails here even though
it would end with the same weights.
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ckptkd import CkptkdError
from ckptkd.cli import main
from ckptkd.io import sha256_file
from ckptkd.trajectory import Run

EPOCHS = 6
ARGS = ["train", "--data", "digits", "--model", "mlp_m", "--epochs", str(EPOCHS), "--save-every", "1",
        "--batch-size", "16", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CKPTKD_TENSORBOARD": "0"}


def ckptkd(*args, fault: str | None = None) -> subprocess.Popen:
    env = {**ENV, "CKPTKD_FAULT": fault} if fault else {k: v for k, v in ENV.items() if k != "CKPTKD_FAULT"}
    return subprocess.Popen([sys.executable, "-m", "ckptkd", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def killed_at(fault: str, *args) -> None:
    """Run ``ckptkd ARGS`` with ``CKPTKD_FAULT=fault`` and check that it died there."""
    proc = ckptkd(*args, fault=fault)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (fault, proc.returncode, proc.stderr.read())


@pytest.fixture
def trained_epochs(monkeypatch):
    """(run folder name, epoch) for every epoch trained in this process from now on."""
    seen = []
    log = Run.log

    def counting_log(self, record):
        seen.append((self.path.name, record["epoch"]))
        log(self, record)

    monkeypatch.setattr(Run, "log", counting_log)
    monkeypatch.setenv("CKPTKD_TENSORBOARD", "0")
    monkeypatch.delenv("CKPTKD_FAULT", raising=False)
    return seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Run:
    """The uninterrupted training."""
    path = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CKPTKD_TENSORBOARD", "0")
        assert main([*ARGS, "--out", str(path)]) == 0
    return Run(path)


def assert_every_checkpoint_is_what_it_claims(folder: Path):
    for ckpt in Run(folder).checkpoints():
        assert sha256_file(ckpt.path) == ckpt.sha256, f"{ckpt.path} is listed but does not match its sidecar"


def assert_same_as(run: Run, reference: Run):
    assert run.complete
    ref, got = reference.checkpoints(), run.checkpoints()
    assert [c.epoch for c in got] == [c.epoch for c in ref] == list(range(1, EPOCHS + 1))
    assert [c.sha256 for c in got] == [c.sha256 for c in ref]  # bitwise identical weights, every epoch
    assert [m["epoch"] for m in run.metrics()] == list(range(1, EPOCHS + 1))
    assert run.manifest["final"]["test_acc"] == reference.manifest["final"]["test_acc"]


# (fault, valid checkpoints it leaves, epoch of the resume state it leaves)
FAULTS = [
    ("mid-save:3", [1, 2], 2),  # epoch 3's weights file is written, its sidecar is not
    ("before-state:3", [1, 2, 3], 2),  # checkpoint 3 is complete, the resume state is still epoch 2's
    ("after-save:3", [1, 2, 3], 3),
    (f"after-save:{EPOCHS}", list(range(1, EPOCHS + 1)), EPOCHS),  # everything saved, not marked complete
]


@pytest.mark.parametrize("fault,checkpoints,state_epoch", FAULTS, ids=[f[0] for f in FAULTS])
def test_a_kill_at_a_named_point_resumes_from_the_last_complete_save_point(
        tmp_path, reference, trained_epochs, fault, checkpoints, state_epoch):
    out = tmp_path / "run"
    killed_at(fault, *ARGS, "--out", str(out))

    run = Run(out)
    assert not run.complete
    assert [c.epoch for c in run.checkpoints()] == checkpoints
    assert_every_checkpoint_is_what_it_claims(out)
    assert run.load_state()["epoch"] == state_epoch
    if fault.startswith("mid-save"):  # the half-written save point is on disk but not listed
        assert (out / "checkpoints" / "epoch_0003.safetensors").exists()
        assert not (out / "checkpoints" / "epoch_0003.json").exists()
    before = {c.epoch: c.sha256 for c in run.checkpoints()}

    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert trained_epochs == [("run", e) for e in range(state_epoch + 1, EPOCHS + 1)]  # resumed, not restarted
    resumed = Run(out)
    assert_same_as(resumed, reference)
    assert all(before[c.epoch] == c.sha256 for c in resumed.checkpoints() if c.epoch in before)


@pytest.mark.parametrize("again", ["--resume", "plain"])
@pytest.mark.parametrize("fault", ["mid-create:1", "mid-overwrite:1"])
def test_a_kill_while_a_run_folder_is_made_or_replaced_leaves_no_half_run(tmp_path, reference, trained_epochs, fault,
                                                                          again, capsys):
    """The folder appears whole or not at all: after the kill --out holds nothing, and the same
    command again, or the command with --resume (in place of --overwrite, which it contradicts),
    starts a new run there, clears the leftovers and says so (--resume also says that there was
    nothing to resume)."""
    out = tmp_path / "run"
    if fault.startswith("mid-overwrite"):
        assert main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0  # the run --overwrite replaces
        trained_epochs.clear()
        command = [*ARGS, "--out", str(out), "--overwrite"]
    else:
        command = [*ARGS, "--out", str(out)]
    killed_at(fault, *command)
    assert not out.exists()
    left = f".run.ckptkd-{'removing' if 'overwrite' in fault else 'creating'}"
    assert [p.name for p in tmp_path.iterdir()] == [left]

    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--resume"] if again == "--resume" else command) == 0
    printed = capsys.readouterr()
    assert trained_epochs == [("run", e) for e in range(1, EPOCHS + 1)]
    assert_same_as(Run(out), reference)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    said = [line for line in printed.err.splitlines() if left in line]
    when = "while --overwrite deleted the old run" if "overwrite" in fault else "while it created the run"
    assert said == [f"ckptkd: warning: removed {left}, left beside {str(out)!r} by a ckptkd killed {when}; "
                    f"starting {str(out)!r} as a new run"]
    resumed = [line for line in printed.out.splitlines() if "resum" in line]
    assert resumed == ([f"{out}: nothing saved to resume from; training from epoch 1"] if again == "--resume" else [])


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(CkptkdError, match="resume and overwrite contradict each other"):
        Run.create(tmp_path / "run", {}, model="mlp_xs", num_classes=10, in_shape=(1, 8, 8), data_fingerprint="",
                   resume=True, overwrite=True)
    assert not (tmp_path / "run").exists()


def test_resume_says_where_it_continues(tmp_path, reference, trained_epochs, capsys):
    out = tmp_path / "run"
    killed_at("before-state:3", *ARGS, "--out", str(out))  # checkpoint 3 complete, the state still epoch 2's
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert f"{out}: resuming after epoch 2, its last complete save point" in capsys.readouterr().out.splitlines()
    assert trained_epochs == [("run", e) for e in range(3, EPOCHS + 1)]


def test_a_resume_uses_the_saved_optimizer_and_order_state(tmp_path, reference, trained_epochs):
    """Resuming from a state.pt whose optimizer momentum and shuffling state were reset
    (the weights kept) must end elsewhere: the resume really reads them."""
    import io

    import torch

    out = tmp_path / "run"
    killed_at("after-save:3", *ARGS, "--out", str(out))
    state = Run(out).load_state()
    state["optimizer"]["state"] = {}  # no momentum buffers
    state["order"] = torch.Generator().manual_seed(0).get_state()  # the shuffling of epoch 1 again
    buf = io.BytesIO()
    torch.save(state, buf)
    (out / "state.pt").write_bytes(buf.getvalue())
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert trained_epochs == [("run", e) for e in range(4, EPOCHS + 1)]
    got = {c.epoch: c.sha256 for c in Run(out).checkpoints()}
    ref = {c.epoch: c.sha256 for c in reference.checkpoints()}
    assert [got[e] for e in (1, 2, 3)] == [ref[e] for e in (1, 2, 3)]
    assert all(got[e] != ref[e] for e in range(4, EPOCHS + 1))


def test_killed_at_random_moments_and_resumed_matches_the_uninterrupted_training(tmp_path, reference):
    """SIGKILL at random moments of the training. Any moment is legal, including after the
    run has finished; whatever it leaves must be consistent, and resuming must end bitwise
    where the uninterrupted training ends. The moments are drawn within the time one
    uninterrupted subprocess takes here, so most of them land inside the training on any
    machine; none of the assertions depends on where they land."""
    t0 = time.monotonic()
    whole = ckptkd(*ARGS, "--out", str(tmp_path / "timing"))
    assert whole.wait() == 0, whole.stderr.read()
    duration = time.monotonic() - t0
    rng = random.Random(1234)
    out = tmp_path / "resumed"
    for _ in range(3):
        assert not out.exists() or (out / "manifest.json").exists()  # Run.create is all or nothing
        proc = ckptkd(*ARGS, "--out", str(out), "--resume")  # the same command each time
        try:
            proc.wait(timeout=rng.uniform(0.0, duration))  # not a race: either outcome is accepted
            assert proc.returncode == 0, proc.stderr.read()
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if not (out / "manifest.json").exists():
            continue  # killed before the run existed: the next attempt starts it afresh
        run = Run(out)
        assert_every_checkpoint_is_what_it_claims(out)
        epochs = [c.epoch for c in run.checkpoints()]
        assert epochs == list(range(1, len(epochs) + 1))
        state = run.load_state()
        if state is not None:  # the state is the last checkpoint's, or the one before (killed between them)
            assert state["epoch"] in epochs[-2:]
        if run.complete:
            assert epochs == list(range(1, EPOCHS + 1))
    final = ckptkd(*ARGS, "--out", str(out), "--resume")
    assert final.wait() == 0, final.stderr.read()
    assert_same_as(Run(out), reference)


def test_a_killed_distillation_resumes(tmp_path, trained_run, trained_epochs):
    teacher = str(trained_run.checkpoints()[-1].path)
    args = ["distill", "--teacher", teacher, "--data", "digits", "--model", "mlp_xs", "--epochs", "4",
            "--save-every", "1", "--batch-size", "64", "--quiet"]
    killed_at("after-save:2", *args, "--out", str(tmp_path / "student"))
    assert [c.epoch for c in Run(tmp_path / "student").checkpoints()] == [1, 2]
    assert main([*args, "--out", str(tmp_path / "student"), "--resume"]) == 0
    assert trained_epochs == [("student", 3), ("student", 4)]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    resumed, one = Run(tmp_path / "student"), Run(tmp_path / "one")
    assert resumed.complete and [m["epoch"] for m in resumed.metrics()] == [1, 2, 3, 4]
    assert [c.sha256 for c in resumed.checkpoints()] == [c.sha256 for c in one.checkpoints()]


def test_a_killed_ckptkd_run_resumes_the_stage_it_was_in(tmp_path, trained_epochs):
    """Save points in order: the teacher's 1-3, then two per student (nokd, full, chosen).
    Killed after the 6th (the full teacher's student, epoch 1), --resume trains epoch 2 of
    that student and the students after it, nothing before."""
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "data": {"spec": "digits", "augment": False}, "info": {"probe_size": 200},
        "teacher": {"model": "mlp_xs", "epochs": 3, "save_every": 1, "batch_size": 64},
        "student": {"model": "mlp_xs", "epochs": 2, "save_every": 1, "batch_size": 64},
        "select": {"policy": "halfway"}}))  # epoch 1: never the full teacher, so three students
    args = ["run", str(job), "--quiet"]
    killed_at("after-save:6", *args, "--out", str(tmp_path / "killed"))
    assert not (tmp_path / "killed" / "students" / "chosen").exists()
    assert main([*args, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert trained_epochs == [("full", 2), ("chosen", 1), ("chosen", 2)]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    for stage in ("teacher", "students/nokd", "students/full", "students/chosen"):
        resumed, one = Run(tmp_path / "killed" / stage), Run(tmp_path / "one" / stage)
        assert resumed.complete
        assert [c.sha256 for c in resumed.checkpoints()] == [c.sha256 for c in one.checkpoints()], stage
