"""The training loop: one function, read top to bottom.

The loss comes from a *method* object (``CrossEntropy`` here, the distillation methods in
``ckptkd.distill``) that returns its losses as a dict; the loop sums them. A method with
parameters of its own (``method.extra``, FitNets' regressor) has them optimised, saved and
resumed with the model's. Teacher training, distillation and
the no-KD baseline all run through ``fit``.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import parallel
from .config import StageConfig
from .data import Dataset, stream
from .errors import CkptkdError
from .models import create_model
from .trajectory import Run


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CkptkdError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


class CrossEntropy:
    """Plain supervised loss: the teacher's, and the student trained without KD."""

    def __call__(self, model, x, y, idx, epoch):
        logits = model(x)
        return logits, {"ce": F.cross_entropy(logits, y)}


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, device="cpu") -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` (any callable returning logits);
    ``x`` may be ``ImageFiles`` (streamed data), decoded by DataLoader workers."""
    if isinstance(model, nn.Module):
        model.eval()
    loss, correct = 0.0, 0
    chunks = stream.chunks(len(x), batch_size)
    for idx, xb in zip(chunks, stream.batches(x, chunks)):
        xb, yb = xb.to(device), y[idx].to(device)
        logits = model(xb).float()
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"loss": loss / len(x), "acc": correct / len(x)}


def held_out_metrics(model, data: Dataset, *, last: bool, device="cpu") -> dict:
    """``val_loss``/``val_acc`` every epoch (when there is a validation split), and
    ``test_loss``/``test_acc`` only at the end of the stage: the test split is for reporting,
    so nothing chosen during or after training can have looked at it."""
    out = {}
    for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
        if len(y) and (split == "val" or last):
            m = evaluate(model, x, y, device=device)
            out |= {f"{split}_loss": m["loss"], f"{split}_acc": m["acc"]}
    return out


def lr_factor(stage: StageConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``."""
    if stage.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / (stage.epochs * steps_per_epoch)))
    epoch = step // steps_per_epoch + 1
    return stage.gamma ** sum(epoch > m for m in stage.milestones)


def fit(model: nn.Module, method, data: Dataset, stage: StageConfig, *, seed: int, device="cpu",
        run: Run | None = None, progress: bool = True, desc: str = "train", resume: bool = False) -> dict:
    """Train ``model`` in place with SGD for ``stage.epochs``; return the last epoch's metrics.

    Every epoch is evaluated on ``data``'s validation split; the test split only after the
    last epoch (an empty split is skipped).

    With ``run``, every epoch is logged to metrics.jsonl and a checkpoint is saved every
    ``stage.save_every`` epochs and at the end, together with the full training state; with
    ``resume``, training continues from that state and ends bitwise where an uninterrupted
    run would (on CPU).

    Under torchrun (``ckptkd.parallel``) every rank trains on its slice of each global batch
    of ``stage.batch_size`` in DistributedDataParallel, which gives the single-process
    result up to summation order; only rank 0 logs and saves. On CUDA the forward runs
    under bf16 autocast, image batches are channels_last, and ``stage.compile`` compiles.
    """
    world = parallel.world()
    device = world.device(device)
    model.to(device)
    channels_last = device.type == "cuda" and data.x_train.dim() == 4
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = parallel.wrap(model, world, device)  # what the loss method calls: the model or its DDP wrapper
    if stage.compile:
        net = torch.compile(net)
    state = run.load_state() if resume and run is not None else None  # every rank resumes
    if not world.is_main:
        run, progress = None, False
    if resume and run is not None:  # --resume says which it does: continue, or start (nothing was saved)
        print(f"{run.path}: resuming after epoch {state['epoch']}, its last complete save point" if state is not None
              else f"{run.path}: nothing saved to resume from; training from epoch 1")
    if run is not None:  # what the run saw, as resolved from data.augment (a config says only "default")
        run.note(augment=data.augment.name, augment_why=data.augment_why)
    extra = getattr(method, "extra", None)  # a method's own trainable module (a regressor), trained alongside
    if extra is not None:
        extra.to(device)
    params = list(model.parameters()) + (list(extra.parameters()) if extra is not None else [])
    opt = torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum,
                          nesterov=stage.nesterov and stage.momentum > 0, weight_decay=stage.weight_decay)
    n = len(data.x_train)
    kept = parallel.keep_samples(n, stage.batch_size, world)  # a last batch of 1 breaks BatchNorm
    batches_per_epoch = math.ceil(kept / stage.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(stage, s, batches_per_epoch))
    order = torch.Generator().manual_seed(seed)
    start, step, record = 1, 0, {}
    if state is not None:
        model.load_state_dict(state["model"])
        if extra is not None:
            extra.load_state_dict(state["extra"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        order.set_state(state["order"])
        start, step, record = state["epoch"] + 1, state["step"], state["record"]
    if resume and run is not None:  # epochs after the last save point are trained again
        run.truncate_metrics(start - 1)
    bar = tqdm(range(start, stage.epochs + 1), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        model.train()
        if extra is not None:
            extra.train()
        t0 = time.perf_counter()
        # views depend on the data's seed, not the model's: every student of a study sees the
        # same augmented samples, so teacher outputs for them can be computed once and shared
        views = data.augment.params(n, data.in_shape, data.view_seed, epoch)
        perm = torch.randperm(n, generator=order)[:kept]  # the same on every rank
        seen, loss_sum, correct = 0, 0.0, 0
        global_batches = perm.split(stage.batch_size)
        shards = [parallel.shard(batch, world) for batch in global_batches]
        # streamed data: DataLoader workers decode exactly these index lists, a few batches ahead
        for batch, idx, x in zip(global_batches, shards, data.batches(shards)):
            x = data.augment.apply(x, {k: v[idx] for k, v in views.items()}).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = data.y_train[idx].to(device)
            with _autocast(device):
                logits, losses = method(net, x, y, idx, epoch)
                loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise CkptkdError(
                    f"training diverged: the loss is {loss.item()} at epoch {epoch}, step {step}; "
                    f"lower the learning rate (now {opt.param_groups[0]['lr']:.3g})"
                )
            opt.zero_grad(set_to_none=True)
            share = len(idx) * world.size / len(batch)  # DDP averages ranks: weigh each by its share
            (loss * share if world.distributed else loss).backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        parallel.sync_buffers(model, world)
        loss_sum, correct, seen = parallel.all_sum([loss_sum, correct, seen], world)
        record = {"epoch": epoch, "step": step, "lr": opt.param_groups[0]["lr"],
                  "train_loss": loss_sum / seen, "train_acc": correct / seen,
                  "samples_per_s": seen / (time.perf_counter() - t0)}
        record |= held_out_metrics(model, data, last=epoch == stage.epochs, device=device)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}", val=f"{record.get('val_acc', float('nan')):.3f}",
                        sps=f"{record['samples_per_s']:.0f}")
        if run is not None:
            run.log(record)
            if epoch == stage.epochs or (stage.save_every and epoch % stage.save_every == 0):
                run.save_checkpoint(model.state_dict(), epoch, record)
                run.save_state({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "scheduler": sched.state_dict(), "order": order.get_state(),
                                "epoch": epoch, "step": step, "record": record}
                               | ({"extra": extra.state_dict()} if extra is not None else {}))
    return record


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(spec: str, data: Dataset, seed: int) -> nn.Module:
    """A freshly initialised model; its initial weights depend on ``seed`` alone."""
    torch.manual_seed(seed)
    return create_model(spec, data.num_classes, data.in_shape)


def train(data: Dataset, stage: StageConfig, *, seed: int = 0, device="cpu", run: Run | None = None,
          progress: bool = True, desc: str = "teacher", resume: bool = False) -> tuple[nn.Module, dict]:
    """Train ``stage.model`` from scratch with cross-entropy (or ``resume`` ``run``); the teacher trajectory."""
    model = build_model(stage.model, data, seed)
    record = fit(model, CrossEntropy(), data, stage, seed=seed, device=device, run=run, progress=progress, desc=desc,
                 resume=resume)
    if run is not None and parallel.world().is_main:
        run.mark("complete", final=record)
    return model, record
