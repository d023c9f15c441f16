"""Config parsing: every mistake is a CkptkdError that names the key."""
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptkd import CkptkdError, DistillConfig, RunConfig, TrainConfig, load_config
from ckptkd.config import StudyConfig, from_dict, to_dict


def test_defaults_parse_from_an_empty_mapping():
    assert from_dict(RunConfig, {}) == RunConfig()
    assert from_dict(RunConfig, None) == RunConfig()


def test_unknown_key_names_the_dotted_key_and_suggests_the_closest():
    with pytest.raises(CkptkdError, match=r"unknown config key 'teacher\.lrr' \(did you mean 'lr'\?\)"):
        from_dict(RunConfig, {"teacher": {"lrr": 0.1}})


def test_unknown_section_suggests_the_closest():
    with pytest.raises(CkptkdError, match="'studnet'.*did you mean 'student'"):
        from_dict(RunConfig, {"studnet": {}})


def test_wrong_type_names_key_and_type():
    with pytest.raises(CkptkdError, match=r"'teacher\.epochs' must be int, got 'ten'"):
        from_dict(RunConfig, {"teacher": {"epochs": "ten"}})


def test_bool_is_not_a_number():
    with pytest.raises(CkptkdError, match="must be float"):
        from_dict(RunConfig, {"kd": {"alpha": True}})


def test_int_is_accepted_for_a_float():
    cfg = from_dict(RunConfig, {"teacher": {"lr": 1}})
    assert cfg.teacher.lr == 1.0 and isinstance(cfg.teacher.lr, float)


def test_section_must_be_a_mapping():
    with pytest.raises(CkptkdError, match="'kd' must be a mapping"):
        from_dict(RunConfig, {"kd": 4})


@pytest.mark.parametrize("section, key, value, message", [
    ("teacher", "epochs", 0, "epochs must be a positive integer"),
    ("student", "batch_size", 0, "batch_size must be at least 2"),
    ("kd", "temperature", 0, "kd.temperature must be positive"),
    ("kd", "alpha", 1.5, r"kd.alpha must be in \[0, 1\]"),
    ("teacher", "weight_decay", -1e-4, "weight_decay must be >= 0"),
    ("teacher", "lr", 0, "lr must be positive"),
    ("teacher", "schedule", "cosin", "did you mean 'cosine'"),
    ("select", "k", 0, "select.k must be at least 1"),
    ("info", "probe_size", 5, "info.probe_size must be at least 10"),
    ("data", "test_fraction", 1.0, r"data.test_fraction must be in \(0, 1\)"),
    ("data", "val_fraction", 1.0, r"data.val_fraction must be in \[0, 1\)"),
    ("info", "kde", {"noise_fraction": 0}, "info.kde.noise_fraction must be positive"),
    ("info", "renyi", {"alpha": 1}, "info.renyi.alpha must be positive and not 1"),
    ("info", "binning", {"bins": 1}, "info.binning.bins must be at least 2"),
    ("info", "estimator", "kdee", "did you mean 'kde'"),
    ("select", "proxy", {"data_fraction": 0}, r"select.proxy.data_fraction must be in \(0, 1\]"),
])
def test_out_of_range_values_are_refused(section, key, value, message):
    with pytest.raises(CkptkdError, match=message):
        from_dict(RunConfig, {section: {key: value}})


def test_flat_estimator_keys_of_older_configs_still_read():
    info = from_dict(RunConfig, {"info": {"noise_fraction": 0.3, "alpha": 2.0, "bins": 5}}).info
    assert (info.kde.noise_fraction, info.renyi.alpha, info.binning.bins) == (0.3, 2.0, 5)
    both = from_dict(RunConfig, {"info": {"alpha": 2.0, "renyi": {"alpha": 3.0}}}).info
    assert both.renyi.alpha == 3.0  # the key's new place wins
    with pytest.raises(CkptkdError, match="info.renyi.alpha must be positive and not 1"):
        from_dict(RunConfig, {"info": {"alpha": 1.0}})


def test_explicit_policy_needs_epochs():
    with pytest.raises(CkptkdError, match="needs select.checkpoints"):
        from_dict(RunConfig, {"select": {"policy": "explicit"}})
    assert from_dict(RunConfig, {"select": {"policy": "explicit", "checkpoints": [3]}}).select.checkpoints == [3]


def test_partial_section_keeps_the_parents_defaults():
    cfg = from_dict(RunConfig, {"teacher": {"epochs": 3}})
    assert cfg.teacher.epochs == 3
    assert cfg.teacher.model == "cnn1d_l" and cfg.teacher.save_every == 3  # RunConfig's teacher defaults
    assert cfg.student.model == "cnn1d_xs"


def test_a_single_value_is_a_one_item_list():
    assert from_dict(TrainConfig, {"train": {"milestones": 10}}).train.milestones == [10]


def test_yaml_round_trip_with_overrides(tmp_path):
    cfg = from_dict(RunConfig, {"data": {"spec": "digits"}, "teacher": {"model": "mlp_s", "epochs": 4}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(RunConfig, path) == cfg

    changed = load_config(RunConfig, path, {"teacher.lr": 0.01, "seed": 5, "info.probe_size": 200})
    assert changed == dataclasses.replace(
        cfg, seed=5, teacher=dataclasses.replace(cfg.teacher, lr=0.01),
        info=dataclasses.replace(cfg.info, probe_size=200))


def test_overrides_without_a_file():
    cfg = load_config(DistillConfig, None, {"student.model": "mlp_xs", "kd.temperature": 2.0})
    assert cfg.student.model == "mlp_xs" and cfg.kd.temperature == 2.0


def test_invalid_yaml_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher: {epochs: 3\nstudent: [")
    with pytest.raises(CkptkdError, match="not valid YAML"):
        load_config(RunConfig, path)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(CkptkdError, match="does not exist"):
        load_config(RunConfig, tmp_path / "nope.yaml")


def test_number_beyond_float_range_is_an_error():
    with pytest.raises(CkptkdError, match="'teacher.lr' is too large"):
        from_dict(RunConfig, {"teacher": {"lr": 10**400}})


def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(CkptkdError, match="must be a mapping"):
        load_config(RunConfig, path)


# ---------------------------------------------------------------- fuzzing

_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
            | st.sampled_from([10**400, -10**400, 0, -1, 1.5, float("nan"), float("inf"), "cosine", "multistep",
                               "mi", "last+halfway", "explicit", "probs", "cuda:0", "digits", "kde", "softmax"]))
_values = _scalars | st.lists(_scalars, max_size=3) | st.dictionaries(st.text(max_size=8), _scalars, max_size=3)


def _mostly(good, other):
    """``good`` most of the time."""
    return st.integers(0, 5).flatmap(lambda i: other if i == 5 else good)


def _typed(tp):
    """Values of about the right type (so parsing gets past the first key), edge cases included."""
    if tp in (int, float):
        return st.integers() | st.floats() | st.sampled_from([10**400, -(10**400)])
    if tp is str:
        return st.text(max_size=12) | st.sampled_from(["cosine", "mi", "last+halfway", "probs", "cpu", "kde"])
    if tp is bool:
        return st.booleans()
    return st.lists(st.integers(), max_size=3) | st.none()  # list[int], Optional[int]


def _mapping_like(cls):
    """Dicts whose keys are mostly ``cls``'s fields, with values mostly of the field's type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _mostly(_typed(hints[f.name]), _values) for f in dataclasses.fields(cls)}
    return _mostly(st.fixed_dictionaries({}, optional=fields), st.dictionaries(st.text(max_size=8), _values, max_size=2))


def _section(name):
    default = getattr(RunConfig(), name)
    if dataclasses.is_dataclass(default):
        return _mostly(_mapping_like(type(default)), _values)
    return _mostly(_typed(typing.get_type_hints(RunConfig)[name]), _values)


# mostly RunConfig-shaped dicts, sometimes anything at all
_configs = _mostly(st.fixed_dictionaries({}, optional={f.name: _section(f.name) for f in dataclasses.fields(RunConfig)}),
                   st.dictionaries(st.text(max_size=8) | st.integers(), _values, max_size=3))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs)
def test_any_mapping_gives_a_config_or_a_ckptkd_error(data):
    try:
        cfg = from_dict(RunConfig, data)
    except CkptkdError:
        return
    assert isinstance(cfg, RunConfig)


CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_every_shipped_config_reads(path):
    """The configs in configs/ are examples and the studies the docs cite: each must still read."""
    cls = StudyConfig if path.parent.name == "studies" else RunConfig
    cfg = load_config(cls, path)
    if cls is StudyConfig:
        assert cfg.name == path.stem  # the default study folder is runs/studies/NAME
