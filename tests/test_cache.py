"""The teacher-output cache: same students, never a stale entry, atomic files, views past the stored ones."""
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from ckptkd import KD, KDConfig, StageConfig, Teacher, create_model, distill, fit
from ckptkd.data import Augment
from ckptkd.teacher_cache import Layout, TeacherCache
from ckptkd.train import build_model

STAGE = StageConfig(model="mlp_xs", epochs=2, batch_size=64)
KDC = KDConfig(temperature=4.0, alpha=0.1)


def _teacher(run, which=(-1,), combine="logits"):
    ckpts = [run.checkpoints()[i] for i in which]
    return Teacher.from_checkpoints(ckpts, 10, (1, 8, 8), combine)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fresh_outputs(teacher, data, epoch, T=4.0):
    """What the teacher computes now for every training sample as ``fit`` shows it in ``epoch``."""
    views = data.augment.params(len(data.x_train), data.in_shape, data.view_seed, epoch)
    x = data.augment.apply(data.x_train, views)
    return teacher.outputs(x, T)


def _entries(folder):
    """Files of cache entries and partial writes (lock files are neither)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


# ---------------------------------------------------------------- the same student


@pytest.mark.parametrize("combine,members", [("logits", (-1,)), ("logits", (0, 1, 2)), ("probs", (1, 2))])
def test_cached_student_is_identical_to_recomputed_student(trained_run, digits, tmp_path, combine, members):
    teacher = _teacher(trained_run, members, combine)
    recomputed, rec_a = distill(digits, STAGE, teacher, KDC, seed=3, progress=False)
    cached, rec_b = distill(digits, STAGE, teacher, KDC, seed=3, progress=False, cache_dir=tmp_path)
    a, b = recomputed.state_dict(), cached.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rec_a["train_loss"] == rec_b["train_loss"]
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".npy"]) == 1


def test_a_second_student_reuses_the_cache_without_running_the_teacher_per_batch(trained_run, digits, tmp_path,
                                                                                   monkeypatch):
    teacher = _teacher(trained_run, (1, 2))
    first, _ = distill(digits, STAGE, teacher, KDC, seed=0, progress=False, cache_dir=tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix != ".lock"}
    batches = []
    real = teacher.member_logits
    monkeypatch.setattr(teacher, "member_logits", lambda x: batches.append(len(x)) or real(x))
    second, _ = distill(digits, STAGE, teacher, KDC, seed=0, progress=False, cache_dir=tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix != ".lock"} == before
    assert all(n <= 8 for n in batches)  # only the open-time spot check ran the teacher
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


# ---------------------------------------------------------------- never stale


def _served(cache, data, epoch=1):
    return cache.outputs(torch.arange(len(data.x_train)), epoch)


def test_a_changed_teacher_or_data_is_never_served_an_old_entry(trained_run, digits, tmp_path):
    base = _teacher(trained_run, (-1,))
    TeacherCache.build(tmp_path, base, digits, 4.0, views=1)
    shifted = dataclasses.replace(digits, augment=Augment(shift=2))
    reseeded = dataclasses.replace(digits, view_seed=digits.view_seed + 1)
    x_changed = dataclasses.replace(digits, x_train=digits.x_train.flip(0), fingerprint="another dataset")
    cases = [
        ("another checkpoint", _teacher(trained_run, (-2,)), digits, 4.0),
        ("another ensemble", _teacher(trained_run, (-2, -1)), digits, 4.0),
        ("another order", _teacher(trained_run, (-1, -2)), digits, 4.0),
        ("another combine rule", _teacher(trained_run, (-1,), "probs"), digits, 4.0),
        ("another augmentation", base, shifted, 4.0),
        ("another view seed", base, reseeded, 4.0),
        ("another dataset", base, x_changed, 4.0),
    ]
    for what, teacher, data, T in cases:
        assert TeacherCache.open(tmp_path, teacher, data, T) is None, what
        cache = TeacherCache.build(tmp_path, teacher, data, T, views=1)
        assert torch.equal(_served(cache, data), _fresh_outputs(teacher, data, 1, T)), what
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".json"]) == 1 + len(cases)


def test_probs_entries_are_keyed_by_temperature_logits_entries_serve_any(trained_run, digits, tmp_path):
    idx, T2 = torch.arange(len(digits.x_train)), 2.0
    views = digits.augment.params(len(digits.x_train), digits.in_shape, digits.view_seed, 1)
    x = digits.augment.apply(digits.x_train, views)
    logits = _teacher(trained_run, (1, 2), "logits")
    cache = TeacherCache.build(tmp_path, logits, digits, 4.0, views=1)
    assert TeacherCache.open(tmp_path, logits, digits, T2) is not None
    assert torch.equal(cache.log_probs(idx, 1, T2), logits.log_probs(x, T2))
    probs = _teacher(trained_run, (1, 2), "probs")
    TeacherCache.build(tmp_path, probs, digits, 4.0, views=1)
    assert TeacherCache.open(tmp_path, probs, digits, T2) is None
    assert torch.equal(TeacherCache.build(tmp_path, probs, digits, T2, views=1).log_probs(idx, 1, T2),
                       probs.log_probs(x, T2))


def test_a_module_teacher_changed_in_memory_gets_a_new_entry(digits, tmp_path):
    torch.manual_seed(0)
    teacher = Teacher([create_model("mlp_xs", 10, digits.in_shape)])
    TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1)
    with torch.no_grad():
        teacher.members[0].fc.bias.add_(1.0)
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None
    cache = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1)
    assert torch.equal(_served(cache, digits), _fresh_outputs(teacher, digits, 1))


def test_an_entry_whose_rows_disagree_with_the_teacher_is_recomputed(trained_run, digits, tmp_path):
    """Same key, other outputs (the model's code changed under the same weights): the spot check refuses it."""
    teacher = _teacher(trained_run)
    cache = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1)
    forged = np.load(cache.path.with_suffix(".npy"))
    np.save(cache.path.with_suffix(".npy"), forged + 1.0)
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None
    rebuilt = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1)
    assert torch.equal(_served(rebuilt, digits), _fresh_outputs(teacher, digits, 1))


# ---------------------------------------------------------------- atomic files


def test_a_crash_mid_build_leaves_no_entry_and_no_temporary_file(trained_run, digits, tmp_path, monkeypatch):
    teacher = _teacher(trained_run)
    calls = []
    real = teacher.outputs

    def dies_on_the_third_batch(x, T=1.0):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a crash, as far as the build can tell
        return real(x, T)

    monkeypatch.setattr(teacher, "outputs", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        TeacherCache.build(tmp_path, teacher, digits, 4.0, views=2, batch_size=256)
    assert _entries(tmp_path) == []
    monkeypatch.undo()
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None


def test_half_an_entry_is_not_an_entry(trained_run, digits, tmp_path):
    teacher = _teacher(trained_run)
    cache = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=2)
    npy, sidecar = cache.path.with_suffix(".npy"), cache.path.with_suffix(".json")
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])  # truncated array
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None
    npy.unlink()  # sidecar without array
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None
    TeacherCache.build(tmp_path, teacher, digits, 4.0, views=2)
    sidecar.unlink()  # array without sidecar (a crash between the two renames)
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None
    TeacherCache.build(tmp_path, teacher, digits, 4.0, views=2)
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "key": {**meta["key"], "data": "something else"}}))
    assert TeacherCache.open(tmp_path, teacher, digits, 4.0) is None


# ---------------------------------------------------------------- views


def test_views_past_the_stored_epochs_come_from_the_teacher(trained_run, digits, tmp_path):
    teacher = _teacher(trained_run, (1, 2))
    cache = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1)
    idx = torch.arange(len(digits.x_train))
    assert cache.outputs(idx, 1) is not None and cache.outputs(idx, 2) is None
    reference, _ = distill(digits, STAGE, teacher, KDC, seed=1, progress=False)
    student = build_model(STAGE.model, digits, seed=1)
    fit(student, KD(teacher, KDC, cache), digits, STAGE, seed=1, progress=False)  # epoch 2 on the fly
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in reference.state_dict().items())


def test_asking_for_more_views_extends_the_entry(trained_run, digits, tmp_path):
    teacher = _teacher(trained_run)
    one = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1)
    first = _served(one, digits, 1).clone()
    three = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=3)
    assert three.views == 3 and _entries(tmp_path) == sorted([three.path.name + ".json", three.path.name + ".npy"])
    assert torch.equal(_served(three, digits, 1), first)
    for epoch in (2, 3):
        assert torch.equal(_served(three, digits, epoch), _fresh_outputs(teacher, digits, epoch))
    assert TeacherCache.build(tmp_path, teacher, digits, 4.0, views=2).views == 3  # fewer: reused as is


def test_without_augmentation_one_view_serves_every_epoch(trained_run, digits, tmp_path):
    plain = dataclasses.replace(digits, augment=Augment())
    teacher = _teacher(trained_run)
    cache = TeacherCache.build(tmp_path, teacher, plain, 4.0, views=30)
    assert cache.views == 1 and cache.array.shape[0] == 1
    idx = torch.arange(len(plain.x_train))
    assert torch.equal(cache.outputs(idx, 17), teacher.outputs(plain.x_train, 4.0))


# ---------------------------------------------------------------- smaller layouts


def test_float16_and_topk_layouts_stay_close_to_the_teacher(trained_run, digits, tmp_path):
    teacher = _teacher(trained_run, (1, 2))
    idx = torch.arange(len(digits.x_train))
    exact = _fresh_outputs(teacher, digits, 1)
    half = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1, layout=Layout(dtype="float16"))
    assert half.array.dtype == np.float16
    assert torch.allclose(_served(half, digits), exact, rtol=1e-3, atol=1e-3)
    top = TeacherCache.build(tmp_path, teacher, digits, 4.0, views=1, layout=Layout(dtype="float16", topk=3))
    served = _served(top, digits)
    best = exact.topk(3, dim=1).indices
    assert torch.allclose(served.gather(1, best), exact.gather(1, best), rtol=1e-3, atol=1e-3)
    tail = torch.ones_like(exact, dtype=torch.bool).scatter_(1, best, False)
    tail_mean = (exact * tail).sum(1) / 7
    assert torch.allclose(served[tail].view(-1, 7), tail_mean[:, None].expand(-1, 7), rtol=1e-3, atol=1e-3)
    assert torch.allclose(top.log_probs(idx, 1, 4.0).exp().sum(1), torch.ones(len(idx)))
    student = create_model(STAGE.model, 10, digits.in_shape)
    record = fit(student, KD(teacher, KDC, top), digits, dataclasses.replace(STAGE, epochs=1), seed=0, progress=False)
    assert np.isfinite(record["train_loss"])


def test_builders_started_together_compute_the_entry_once(trained_run, digits, tmp_path, monkeypatch):
    teacher = _teacher(trained_run)
    batches = []
    real = teacher.outputs
    monkeypatch.setattr(teacher, "outputs", lambda x, T=1.0: batches.append(len(x)) or real(x, T))
    with ThreadPoolExecutor(2) as pool:
        caches = list(pool.map(lambda _: TeacherCache.build(tmp_path, teacher, digits, 4.0, views=2), range(2)))
    assert sum(n for n in batches if n > 8) == 2 * len(digits.x_train)  # two views, once; the rest: spot checks
    assert torch.equal(_served(caches[0], digits, 2), _served(caches[1], digits, 2))
