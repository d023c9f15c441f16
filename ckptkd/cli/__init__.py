"""The ``ckptkd`` command: a thin layer of argparse over the Python API.

Flags mirror config keys (``--lr`` sets ``train.lr`` in ``ckptkd train``); a YAML file
given with ``--config`` is read first and flags override it. Every user mistake ends in
one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from ..version import __version__
from ..config import SelectConfig
from ..data.registry import dataset_names
from ..errors import CkptkdError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other user mistake
        self.exit(2, f"ckptkd: error: {message}; see {self.prog} --help\n")  # prog: "ckptkd train", ...


def _stage_flags(p, section: str, model_default_help: str):
    g = p.add_argument_group(f"{section} training (config section {section!r})")
    for flag, typ, help_ in [
        ("model", str, f"architecture spec ({model_default_help}; `ckptkd models` lists them)"),
        ("epochs", int, "epochs"), ("batch-size", int, "batch size"), ("lr", float, "base learning rate"),
        ("momentum", float, "SGD momentum"), ("weight-decay", float, "weight decay"),
        ("schedule", str, "cosine or multistep"), ("save-every", int, "save a checkpoint every N epochs"),
    ]:
        g.add_argument(f"--{flag}", type=typ, help=help_, dest=f"{section}.{flag.replace('-', '_')}")
    g.add_argument("--milestones", type=int, nargs="+", dest=f"{section}.milestones", help="multistep epochs")


def _common_flags(p, quiet: bool = True):
    p.add_argument("--config", help="YAML config file; flags override its values")
    p.add_argument("--data", dest="data.spec", help=f"dataset spec: {dataset_names()}")
    p.add_argument("--stream", action="store_const", const=True, dest="data.stream",
                   help="leave the images on disk and decode them per batch (imagefolder, webdataset; default: "
                   "when they would take more than half the memory available)")
    p.add_argument("--no-stream", action="store_const", const=False, dest="data.stream",
                   help="decode the images into memory, even when they would take more than half of it")
    p.add_argument("--workers", type=int, dest="data.workers", metavar="N",
                   help="processes decoding images (default 2)")
    p.add_argument("--device", dest="device", help="auto, cpu or cuda[:N]")
    if quiet:  # eval shows no progress bar, so it takes no --quiet
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _seed_flag(p, help_="training seed (default 0)"):
    # only where a seed changes the result: eval and analyze are deterministic (analyze's probe set has --probe-seed)
    p.add_argument("--seed", type=int, dest="seed", help=help_)


def _augment_flag(p):
    p.add_argument("--augment", dest="data.augment", metavar="{none,shift,shift+flip,default}",
                   help="training augmentation (default: default, which flips only CIFAR images; "
                        "every training prints the one it used)")


def _out_flags(p, default=None):
    p.add_argument("--out", default=default, required=default is None, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same config)")


def _method_flag(p):
    p.add_argument("--method", dest="kd.method", help="distillation method: kd (default), dkd, fitnet or any of "
                   "`ckptkd methods`; its parameters are the config section kd.<method> (kd.dkd.beta)")


def _info_flags(p):
    g = p.add_argument_group("information estimates (config section 'info')")
    g.add_argument("--estimator", dest="info.estimator", help="kde (default), renyi, categorical or binning")
    g.add_argument("--features", dest="info.features", help="penultimate (default), logits or softmax")
    g.add_argument("--probe-size", type=int, dest="info.probe_size", help="probe samples (default 2000)")
    g.add_argument("--probe-seed", type=int, dest="info.probe_seed", help="seed of the probe subset (default 0)")
    g.add_argument("--scaling", dest="info.scaling", help="minmax (default), ceiling or raw")
    g.add_argument("--tau", type=float, dest="info.tau", help="softmax temperature")


def _budget_value(text: str) -> float:
    """--budget's type: a finite number >= 0 (one line from argparse otherwise, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of full distillations >= 0 (e.g. 1; 0 means probes "
                                         f"only), got {text!r}")
    return value


def _budget_flag(p, dest="select.budget"):
    p.add_argument("--budget", type=_budget_value, dest=dest, metavar="B",
                   help="what selection may spend, in full distillations (default 1; 0: probes only): proxy students "
                        "and the no-KD comparison of the verdict count, forward passes do not")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ckptkd", description="Knowledge distillation from model checkpoints.")
    parser.add_argument("--version", action="version", version=f"ckptkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="train a teacher, choose a checkpoint, distill, compare with baselines")
    p.add_argument("config_file", nargs="?", help="YAML config (default: the built-in MNIST-1D job)")
    _common_flags(p)
    _out_flags(p, default="runs/default")
    _seed_flag(p)
    _augment_flag(p)
    p.add_argument("--policy", dest="select.policy",
                   help=f"{SelectConfig().policy} (default), mi (Algorithm 1), or any of `ckptkd policies`, or a+b")
    p.add_argument("-k", type=int, dest="select.k", help="checkpoints each policy picks (a snapshot ensemble)")
    _budget_flag(p)
    p.add_argument("--checkpoints", type=int, nargs="+", dest="select.checkpoints", metavar="EPOCH",
                   help="policy explicit: the epochs to use")
    p.add_argument("--teacher-model", dest="teacher.model", help="teacher architecture")
    p.add_argument("--student-model", dest="student.model", help="student architecture")
    p.add_argument("--teacher-epochs", type=int, dest="teacher.epochs")
    p.add_argument("--student-epochs", type=int, dest="student.epochs")
    p.add_argument("--save-every", type=int, dest="teacher.save_every")
    p.add_argument("--temperature", type=float, dest="kd.temperature")
    p.add_argument("--alpha", type=float, dest="kd.alpha", help="weight of the cross-entropy term")
    _method_flag(p)
    _info_flags(p)

    p = sub.add_parser("train", help="train a model, keeping its checkpoint trajectory")
    _common_flags(p)
    _out_flags(p)
    _augment_flag(p)
    _stage_flags(p, "train", "default cnn1d_l")
    _seed_flag(p)

    p = sub.add_parser("distill", help="distill a student from one checkpoint or an ensemble")
    _common_flags(p)
    _out_flags(p)
    _augment_flag(p)
    p.add_argument("--teacher", action="append", dest="teachers", metavar="CKPT", required=True,
                   help="teacher checkpoint file; repeat for an ensemble")
    p.add_argument("--teacher-model", dest="teacher_model", help="architecture of foreign teacher checkpoints")
    p.add_argument("--temperature", type=float, dest="kd.temperature", help="KD temperature T (default 4)")
    p.add_argument("--alpha", type=float, dest="kd.alpha",
                   help="method kd: weight of the cross-entropy term (default 0.1)")
    p.add_argument("--combine", dest="kd.combine", help="ensemble rule: logits (default) or probs")
    _method_flag(p)
    p.add_argument("--cache-dir", dest="cache_dir", metavar="DIR",
                   help="teacher-output cache: compute the teacher's outputs once into DIR and reuse them "
                        "for every student of the same teacher and data (same result, no teacher forward per batch)")
    _stage_flags(p, "student", "default cnn1d_xs")
    _seed_flag(p)

    p = sub.add_parser("eval", help="test accuracy and loss of checkpoints, or of their ensemble")
    p.add_argument("checkpoints", nargs="+", help="checkpoint files")
    p.add_argument("--model", help="architecture of foreign checkpoints")
    p.add_argument("--ensemble", action="store_true", help="also evaluate the ensemble of all of them")
    p.add_argument("--combine", help="--ensemble's rule: logits (default) or probs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common_flags(p, quiet=False)

    for name, help_ in [("analyze", "estimate I(X;F) and I(Y;F) for every checkpoint of a run"),
                        ("select", "rank a run's checkpoints and choose the teacher (Algorithm 1)")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("run", help="a ckptkd run folder, or a folder of .pt/.pth/.ckpt files")
        p.add_argument("--model", help="architecture of foreign checkpoints")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        _common_flags(p)
        _info_flags(p)
        if name == "select":
            p.add_argument("-k", type=int, default=1, help="checkpoints in a snapshot ensemble")
            p.add_argument("--min-spacing", type=int, default=0, help="minimum epochs between picks")
            p.add_argument("--policy", default=SelectConfig().policy, help=f"{SelectConfig().policy} (default), mi "
                           "(Algorithm 1), or any of `ckptkd policies`, or a+b")
            p.add_argument("--checkpoints", type=int, nargs="+", metavar="EPOCH", help="policy explicit: the epochs")
            _budget_flag(p)
            p.add_argument("--student-model", dest="student.model", help="policy proxy: the student's architecture")
            p.add_argument("--student-epochs", type=int, dest="student.epochs",
                           help="policy proxy: the student's epochs")
            _seed_flag(p, "policy proxy: the student's seed (default: the run's)")

    p = sub.add_parser("study", help="run a study grid (resumable) and write its tables and plots")
    p.add_argument("config_file", help="study YAML (see configs/studies/)")
    p.add_argument("--out", help="study folder (default runs/studies/NAME)")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes (--executor local)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell (default 1)")
    _budget_flag(p, dest="budget")
    p.add_argument("--executor", default="local", help="what runs the cells: local (this machine, --jobs "
                   "processes; the default) or ray (a Ray cluster; docs/cluster.md)")
    p.add_argument("--address", help="--executor ray: the Ray cluster to join (HOST:PORT from `ray start --head`, "
                   "or auto); default: start Ray on this machine")
    p.add_argument("--num-cpus", type=float, dest="resources.num_cpus", metavar="N",
                   help="--executor ray: CPUs per cell (default 1)")
    p.add_argument("--num-gpus", type=float, dest="resources.num_gpus", metavar="N",
                   help="--executor ray: GPUs per cell (default 0)")
    _augment_flag(p)
    _method_flag(p)
    p.add_argument("--device", dest="device", help="auto, cpu or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("report", help="write one self-contained report.html for a run, a ckptkd run output or a study")
    p.add_argument("folder", metavar="RUN_OR_STUDY", help="a run folder, the --out of ckptkd run, or a study folder")
    p.add_argument("--out", help="the HTML file to write (default RUN_OR_STUDY/report.html)")

    p = sub.add_parser("export", help="write a student as ONNX, pt2 (torch.export) or legacy TorchScript, checked "
                                      "against PyTorch, with its size and CPU latency beside its teacher's")
    p.add_argument("checkpoint", metavar="STUDENT_CKPT",
                   help="a student's checkpoint (RUN/checkpoints/epoch_N.safetensors)")
    p.add_argument("--format", required=True, help="onnx (needs the export extra), pt2 (torch.export) or torchscript "
                                                   "(legacy: torch.jit is deprecated)")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--data", dest="data.spec", help="data to check the export on (default: the run's own)")
    p.add_argument("--model", help="architecture, when the run records none")
    p.add_argument("--teacher", action="append", dest="teachers", metavar="CKPT",
                   help="the teacher to compare with (default: the teachers the run records)")
    p.add_argument("--teacher-model", dest="teacher_model", help="architecture of foreign teacher checkpoints")

    sub.add_parser("models", help="list the registered architectures")
    sub.add_parser("policies", help="list the registered selection policies")
    sub.add_parser("methods", help="list the registered distillation methods")
    return parser


def _overrides(args) -> dict:
    return {k: v for k, v in vars(args).items() if "." in k and v is not None} | {
        k: getattr(args, k) for k in ("seed", "device", "budget") if getattr(args, k, None) is not None}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    code = 1  # an unexpected exception
    try:
        code = _dispatch(args) or 0
    except CkptkdError as e:
        _close_progress_bars()
        print(f"ckptkd: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        _close_progress_bars()
        print("ckptkd: interrupted", file=sys.stderr)
        code = 130
    except BaseException:
        if _in_process_group():  # its traceback, which the exit below would otherwise swallow
            traceback.print_exc()
        raise
    finally:
        _leave_process_group(code)
    return code


def _leave_process_group(code: int) -> None:
    """Under torchrun, end this rank here, on every path (``ckptkd.parallel.finish`` says why)."""
    if _in_process_group():
        from ..parallel import finish

        finish(code)


def _in_process_group() -> bool:
    if "torch.distributed" not in sys.modules:  # nothing joined one (and torch need not load)
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _close_progress_bars() -> None:
    """Clear live progress bars, so that the message starts its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _dispatch(args) -> int | None:
    from . import commands

    return getattr(commands, args.command.replace("-", "_"))(args, _overrides(args))


if __name__ == "__main__":
    sys.exit(main())
