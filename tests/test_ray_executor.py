"""``ckptkd study --executor ray`` on one local Ray (2 CPUs) shared by this module.

Every study here lives in one "driver" folder that the workers may not touch: an audit
hook in each worker process (``sys.addaudithook``) refuses any open or listing under it,
so a cell that read the driver's study folder (a teacher checkpoint, the data file) would
fail its study. The data is an npz file in that folder, so it must travel through the
object store. The tables are compared with a local run of the same study, less the
``cost`` columns, which are wall-clock times.
"""
import json
import sys

import numpy as np
import pytest

from ckptkd.config import StudyConfig, from_dict
from ckptkd.report.study import write_tables
from ckptkd.study import run_study
from ckptkd.study.executors import get_executor

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.enable_socket  # Ray's driver and workers talk over TCP on localhost

TINY = {
    "name": "tiny-ray",
    "teacher": {"model": "mlp_xs", "epochs": 3, "save_every": 1, "batch_size": 64},
    "student": {"model": "mlp_xs", "epochs": 1, "batch_size": 64},
    "info": {"probe_size": 100}, "teacher_seeds": [0, 1], "student_seeds": [0],
    "estimators": ["kde"], "policies": ["last", "mi"], "snapshot_policies": ["mi"], "device": "cpu",
}


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """The driver's folder (studies and their data) and the log of the workers' audit hooks."""
    from sklearn.datasets import load_digits

    folder, log = tmp_path_factory.mktemp("driver"), tmp_path_factory.mktemp("audit") / "workers.log"
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    np.savez(folder / "digits.npz", x=x[:1400], y=y[:1400], x_test=x[1400:], y_test=y[1400:])
    return folder, log


@pytest.fixture(scope="module")
def local_ray(driver):
    folder, log = driver
    forbidden, log = str(folder), str(log)

    def refuse_the_driver_folder():  # runs in every worker process before its first task
        import os
        import sys

        def audit(event, args):
            if event in ("open", "os.listdir", "os.scandir") and args and \
                    isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(args[0]))
                if path == forbidden or path.startswith(forbidden + os.sep):
                    raise PermissionError(f"a worker touched the driver's study folder: {path}")

        with open(log, "a") as f:
            f.write(f"audited worker {os.getpid()}\n")
        sys.addaudithook(audit)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": refuse_the_driver_folder})
    yield ray
    ray.shutdown()


def config(folder, **changes):
    return from_dict(StudyConfig, {**TINY, "data": {"spec": f"npz:{folder / 'digits.npz'}", "augment": False},
                                   **changes})


def tables(root) -> dict:
    out = json.loads((root / "tables.json").read_text())
    for row in out["selection"]:
        row.pop("cost")  # wall seconds of the policy against those of a distillation: never equal twice
    out["verdicts"].pop("cost", None)
    return out


def study(cfg, root, executor=None):
    results = run_study(cfg, root, progress=False, executor=executor)
    write_tables(results, root)
    return results


@pytest.fixture(scope="module")
def local_tables(driver, local_ray):
    folder, _ = driver
    study(config(folder), folder / "local")
    return tables(folder / "local")


@pytest.fixture
def ray_executor(local_ray):
    ex = get_executor("ray")
    yield ex
    ex.close()


def weights(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "cells").rglob("*.safetensors"))}


def test_ray_gives_the_local_tables_bit_for_bit_without_reading_the_study_folder(driver, local_tables,
                                                                                ray_executor):
    folder, log = driver
    results = study(config(folder), folder / "ray", ray_executor)
    assert tables(folder / "ray") == local_tables
    assert weights(folder / "ray") == weights(folder / "local")  # every cell's weights, byte for byte
    for r in results["teachers"] + results["students"]:
        local = json.loads((folder / "local" / "cells" / r["cell"] / "result.json").read_text())
        assert {k: v for k, v in r.items() if k != "wall_s"} == {k: v for k, v in local.items() if k != "wall_s"}
    assert "audited worker" in log.read_text()  # the hook that refuses the driver's folder did run
    executor = results["invocations"][-1]["executor"]
    assert executor["executor"] == "ray" and executor["cluster"]["CPU"] == 2 and executor["nodes"] == 1


def test_a_worker_killed_mid_cell_is_retried_to_the_same_tables(driver, local_tables, ray_executor, tmp_path,
                                                                monkeypatch):
    folder, _ = driver
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("CKPTKD_CELL_FAULT", f"teacher/seed0@{marker}")  # SIGKILL at its first checkpoint
    study(config(folder), folder / "killed", ray_executor)
    assert marker.read_text().startswith("killed pid")  # the worker did die once
    assert tables(folder / "killed") == local_tables


def test_a_driver_stopped_mid_study_resumes_with_the_same_command(driver, local_tables, ray_executor, monkeypatch):
    from ckptkd.study import runner

    folder, root = driver[0], driver[0] / "resumed"
    installed, install = [], runner.install_cell

    def driver_dies_after_four(*args):
        if len(installed) == 4:
            raise KeyboardInterrupt  # the driver stops between two cells (Ctrl-C, or killed)
        installed.append(args[1])
        install(*args)

    monkeypatch.setattr(runner, "install_cell", driver_dies_after_four)
    with pytest.raises(KeyboardInterrupt):
        study(config(folder), root, ray_executor)
    monkeypatch.setattr(runner, "install_cell", install)
    results = study(config(folder), root, ray_executor)
    first, second = results["invocations"]
    assert (first["status"], first["cells_run"]) == ("interrupted", 4)
    assert second["cells_run"] == len(results["teachers"] + results["students"]) - 4  # nothing twice
    assert tables(root) == local_tables


def test_a_study_run_locally_is_finished_for_ray_too(driver, local_tables, ray_executor):
    import shutil

    folder = driver[0]
    shutil.copytree(folder / "local", folder / "moved")  # .lock included: a lock file no process holds
    results = study(config(folder), folder / "moved", ray_executor)
    assert results["invocations"][-1]["cells_run"] == 0  # the same keys: nothing to run again
    assert tables(folder / "moved") == local_tables


def test_a_cell_that_fails_fails_the_study_in_one_line(driver, local_ray, capsys):
    from ckptkd.cli import main

    folder = driver[0]
    (folder / "diverges.yaml").write_text(json.dumps({**TINY, "data": {"spec": "digits"},
                                                      "teacher": {**TINY["teacher"], "lr": 1e12}}))
    code = main(["study", str(folder / "diverges.yaml"), "--out", str(folder / "diverges"), "--executor", "ray",
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("ckptkd: error: cell teacher/seed") and "training diverged" in err[0], err


def test_a_cell_asking_for_a_gpu_the_cluster_lacks_is_refused_before_anything_is_written(driver, local_ray,
                                                                                         capsys):
    from ckptkd.cli import main

    folder = driver[0]
    (folder / "gpu.yaml").write_text(json.dumps({**TINY, "data": {"spec": "digits"}}))
    code = main(["study", str(folder / "gpu.yaml"), "--out", str(folder / "gpu"), "--executor", "ray",
                 "--num-gpus", "1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["ckptkd: error: each cell asks for 1 GPU, and the Ray cluster has 0 in all; give "
                                 "it to the cluster, or ask --num-gpus 0 (or resources.num_gpus: 0)"], err
    assert not (folder / "gpu").exists()
    assert ray.is_initialized()  # the caller's Ray is left as it was


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", *sys.argv[1:]]))


START_AND_STOP = """
import os
from ckptkd.config import StudyConfig
from ckptkd.study.executors import get_executor

executor = get_executor("ray")
executor.start(StudyConfig())
import ray
print(os.environ.get("RAY_AUTH_MODE"), ray.get(ray.remote(lambda: 41 + 1).remote()))
executor.close()
"""


def test_a_local_ray_starts_with_token_auth_asked_for_and_no_warning(tmp_path):
    """Ray 2.59+ picks token authentication for a local head itself and warns at every start
    that it did; ckptkd asks for it (RAY_AUTH_MODE=token before Ray is imported, Ray's
    documented switch), so the head still makes its token (in HOME) and says nothing."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # the token Ray makes lands here, not in the user's home
    proc = subprocess.run([sys.executable, "-c", START_AND_STOP], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["token", "42"]
    assert "Token authentication" not in proc.stderr, proc.stderr
    assert (tmp_path / ".ray" / "auth_token").read_text().strip()  # authentication is on
