"""torchrun: two CPU processes (gloo) train the model that one process trains.

Each rank takes half of every global batch and DDP averages the gradients, so the two
runs differ only in float summation order. BatchNorm would add a real difference: under
DDP it normalises each rank's half on its own, and PyTorch's SyncBatchNorm runs on CUDA
only. The comparison therefore uses a model without BatchNorm, ``plain_mlp`` below,
which the subprocesses import from this file.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ckptkd.cli import main
from ckptkd.trajectory import Run

ARGS = ["train", "--data", "digits", "--model", "test_distributed:plain_mlp", "--epochs", "2",
        "--batch-size", "64", "--save-every", "1", "--device", "cpu", "--quiet"]


def plain_mlp(num_classes, in_shape):
    """A BatchNorm-free classifier (model spec ``test_distributed:plain_mlp``)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 32), nn.ReLU(), nn.Linear(32, num_classes))


def _torchrun_cmd(args: list[str]) -> tuple[list[str], dict]:
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ckptkd", *args]
    return cmd, env


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m ckptkd ARGS`` on CPU; fails the test if it fails."""
    cmd, env = _torchrun_cmd(args)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def assert_same_weights(a: Run, b: Run) -> None:
    assert [c.epoch for c in a.checkpoints()] == [c.epoch for c in b.checkpoints()]
    for ca, cb in zip(a.checkpoints(), b.checkpoints()):
        wa, wb = ca.state_dict(), cb.state_dict()
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), (ca.epoch, k, (wa[k] - wb[k]).abs().max())


def test_two_torchrun_processes_train_what_one_process_trains(tmp_path):
    proc = torchrun([*ARGS, "--out", str(tmp_path / "ddp")])
    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0

    ddp, one = Run(tmp_path / "ddp"), Run(tmp_path / "one")
    # only rank 0 wrote: one line per epoch, one checkpoint per save, one summary line
    assert [r["epoch"] for r in ddp.metrics()] == [1, 2]
    assert [c.epoch for c in ddp.checkpoints()] == [1, 2] and ddp.complete
    assert proc.stdout.count("test acc") == 1
    assert_same_weights(ddp, one)
    for ra, rb in zip(ddp.metrics(), one.metrics()):  # metrics are summed over the ranks
        assert ra["step"] == rb["step"]
        assert math.isclose(ra["train_loss"], rb["train_loss"], rel_tol=1e-4)
        assert math.isclose(ra["train_acc"], rb["train_acc"], abs_tol=2 / 1293)
        assert math.isclose(ra["val_acc"], rb["val_acc"], abs_tol=1e-9)
    assert math.isclose(ddp.metrics()[-1]["test_acc"], one.metrics()[-1]["test_acc"], abs_tol=1e-9)


API_SCRIPT = """
import ckptkd
from ckptkd import DataConfig, StageConfig, parallel

data = ckptkd.load_dataset(DataConfig(spec="digits", augment="none"))
stage = StageConfig(model="test_distributed:plain_mlp", epochs=1, batch_size=64)
_, record = ckptkd.train(data, stage, seed=0, device="cpu", progress=False)
w = parallel.world()
print(f"rank {w.rank} of {w.size}: test acc {record['test_acc']:.6f}")
parallel.finish()
print("after finish")
"""


def test_a_torchrun_script_of_the_python_api_ends_with_parallel_finish(tmp_path):
    """Both ranks train, print (flushed before the exit), and end in ``finish``: nothing after it runs."""
    script = tmp_path / "api_job.py"
    script.write_text(API_SCRIPT)
    cmd, env = _torchrun_cmd([])
    cmd = cmd[:cmd.index("-m", 2)] + [str(script)]  # the script instead of ``-m ckptkd``
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # the ranks share one stdout, and a print's text and its newline may reach it in two writes
    said = sorted(re.findall(r"rank (\d) of 2: test acc ([\d.]+)", proc.stdout))
    assert [rank for rank, _ in said] == ["0", "1"], proc.stdout + proc.stderr
    assert said[0][1] == said[1][1]  # one model: the same accuracy on both ranks
    assert "after finish" not in proc.stdout


NO_FINISH_SCRIPT = """
import atexit, os, sys
import ckptkd
from ckptkd import DataConfig, StageConfig, parallel

atexit.register(lambda: print(f"early handler of rank {os.environ['RANK']}", flush=True))  # before the join


class Teardown:
    def __del__(self):  # runs when the interpreter tears the module down, which finish never lets happen
        print("interpreter teardown ran", flush=True)


marker = Teardown()
data = ckptkd.load_dataset(DataConfig(spec="digits", augment="none"))
stage = StageConfig(model="test_distributed:plain_mlp", epochs=1, batch_size=64)
_, record = ckptkd.train(data, stage, seed=0, device="cpu", progress=False)
w = parallel.world()
atexit.register(lambda: print(f"late handler of rank {w.rank}", flush=True))
log = open(f"{sys.argv[2]}/rank{w.rank}.txt", "w")  # left open: only teardown would have flushed it
log.write(f"test acc {record['test_acc']:.6f}")
print(f"rank {w.rank} of {w.size} done")
if sys.argv[1] == "exit-3":
    sys.exit(3)
if sys.argv[1] == "raise":
    raise RuntimeError("a bug in the script")
"""


@pytest.mark.parametrize("ending,status", [("end", 0), ("exit-3", 3), ("raise", 1)])
def test_a_torchrun_script_that_never_calls_finish_ends_cleanly_with_its_status(tmp_path, ending, status):
    """Without ``parallel.finish()`` each rank still leaves the group and ends as finish does
    (no interpreter teardown), at exit: with the status the script asked for, after every
    other atexit handler ran once, and with the files it left open flushed."""
    script = tmp_path / "no_finish.py"
    script.write_text(NO_FINISH_SCRIPT)
    cmd, env = _torchrun_cmd([])
    cmd = cmd[:cmd.index("-m", 2)] + [str(script), ending, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # a hung rank fails, not waits
    out, err = proc.stdout, proc.stderr
    assert (proc.returncode == 0) == (status == 0), out[-2000:] + err[-4000:]
    if status:  # torchrun names each failed rank's own exit status
        assert len(re.findall(rf"exitcode\s*:\s*{status}\b", err)) >= 1, err[-4000:]
    assert "terminate called" not in err and "Aborted" not in err
    for rank in (0, 1):
        assert f"rank {rank} of 2 done" in out
        assert out.count(f"early handler of rank {rank}") == 1 and out.count(f"late handler of rank {rank}") == 1, out
        assert (tmp_path / f"rank{rank}.txt").read_text().startswith("test acc ")
    assert ("RuntimeError: a bug in the script" in err) == (ending == "raise")
    assert "interpreter teardown ran" not in out  # each rank ended in finish, where gloo cannot abort it


def test_parallel_finish_without_torchrun_returns():
    from ckptkd import parallel

    assert parallel.finish(3) is None  # no process group: nothing to leave, and the process goes on


def test_two_torchrun_processes_distill_from_a_cache_what_one_process_distills(tmp_path):
    """Rank 0 builds the teacher cache, both ranks read it; the student matches one process
    distilling without a cache."""
    assert main([*ARGS, "--out", str(tmp_path / "teacher")]) == 0
    teacher = str(Run(tmp_path / "teacher").checkpoints()[-1].path)
    distill = ["distill", "--teacher", teacher, *ARGS[1:]]
    torchrun([*distill, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "ddp")])
    assert main([*distill, "--out", str(tmp_path / "one")]) == 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert_same_weights(Run(tmp_path / "ddp"), Run(tmp_path / "one"))


def test_a_killed_torchrun_training_resumes_on_every_rank(tmp_path):
    """Every rank resumes from rank 0's saved state (not only rank 0), so the resumed run
    ends where one uninterrupted process ends. Rank 0 (the one that saves) kills itself
    right after its second save point (CKPTKD_FAULT); torchrun then stops rank 1."""
    args = [*ARGS, "--epochs", "8", "--out", str(tmp_path / "ddp")]
    cmd, env = _torchrun_cmd(args)
    proc = subprocess.run(cmd, env={**env, "CKPTKD_FAULT": "after-save:2"}, capture_output=True, text=True)
    assert proc.returncode != 0 and "SIGKILL" in proc.stderr, proc.stderr[-3000:]
    interrupted = Run(tmp_path / "ddp")
    assert not interrupted.complete and [c.epoch for c in interrupted.checkpoints()] == [1, 2]
    assert interrupted.load_state()["epoch"] == 2
    torchrun([*args, "--resume"])
    assert main([*args[:-1], str(tmp_path / "one")]) == 0
    resumed = Run(tmp_path / "ddp")
    assert resumed.complete and [r["epoch"] for r in resumed.metrics()] == list(range(1, 9))
    assert_same_weights(resumed, Run(tmp_path / "one"))


def _tiny_job(tmp_path, name: str, extra: dict) -> Path:
    config = {"data": {"spec": "digits", "augment": False},
              "teacher": {"model": "test_distributed:plain_mlp", "epochs": 3, "save_every": 1, "batch_size": 64},
              "student": {"model": "test_distributed:plain_mlp", "epochs": 2, "batch_size": 64},
              "info": {"probe_size": 200}, **extra}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_ckptkd_run_under_torchrun_gives_the_one_process_table(tmp_path):
    job = str(_tiny_job(tmp_path, "job.yaml", {"device": "cpu"}))
    proc = torchrun(["run", job, "--out", str(tmp_path / "ddp"), "--quiet"])
    assert main(["run", job, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    assert proc.stdout.count("ckptkd run:") == 1 and proc.stdout.count("compression:") == 1  # rank 0 alone speaks
    ddp, one = (json.loads((tmp_path / d / "pipeline.json").read_text())["rows"] for d in ("ddp", "one"))
    assert [(r["role"], r["teacher"]) for r in ddp] == [(r["role"], r["teacher"]) for r in one]
    for a, b in zip(ddp, one):
        assert math.isclose(a["student_acc"], b["student_acc"], abs_tol=2 / 360)
    assert_same_weights(Run(tmp_path / "ddp" / "teacher"), Run(tmp_path / "one" / "teacher"))


def test_a_study_under_torchrun_runs_each_cell_on_both_ranks(tmp_path):
    study = str(_tiny_job(tmp_path, "study.yaml", {"name": "tiny", "teacher_seeds": [0, 1], "student_seeds": [0],
                                                   "estimators": ["kde"], "device": "cpu"}))
    torchrun(["study", study, "--out", str(tmp_path / "ddp"), "--quiet"])
    assert main(["study", study, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    ddp, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("ddp", "one"))
    assert len(ddp["invocations"]) == 1 and ddp["invocations"][0]["status"] == "finished"
    assert [r["cell"] for r in ddp["students"]] == [r["cell"] for r in one["students"]]
    for a, b in zip(ddp["teachers"] + ddp["students"], one["teachers"] + one["students"]):
        assert math.isclose(a["acc"], b["acc"], abs_tol=2 / 360), a["cell"]
    assert_same_weights(Run(tmp_path / "ddp" / "cells" / "teacher" / "seed1"),
                        Run(tmp_path / "one" / "cells" / "teacher" / "seed1"))
    assert (tmp_path / "ddp" / "tables.md").exists()
