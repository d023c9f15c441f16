"""Fuzzing the config files: YAML text in, a config or a ``CkptkdError`` out, never anything else.

Each config class that a command reads from a YAML file (``RunConfig`` for ``ckptkd run``,
``TrainConfig``, ``DistillConfig``, ``StudyConfig``) is fed text from four sources: configs of
the right shape with values of every kind, YAML built from its odd corners (tags, anchors,
flow collections, timestamps, binary, deep nesting), a valid config file with random edits,
and arbitrary text or bytes. CLI flags (dotted overrides) are fuzzed on top.
"""
from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptkd import CkptkdError
from ckptkd.config import DistillConfig, RunConfig, StudyConfig, TrainConfig, load_config, to_dict

CLASSES = [RunConfig, TrainConfig, DistillConfig, StudyConfig]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _keys(cls) -> list[str]:
    """Every dotted key of ``cls``: ``seed``, ``teacher``, ``teacher.lr``, ..."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.append(f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(hints[f.name])]
    return out


_specials = st.sampled_from([
    0, -1, 1, 2, 10**30, -(10**30), 10**400, 0.5, -0.5, 1.5, 1e-300, 1e308, float("inf"), float("-inf"),
    float("nan"), True, False, None, "", " ", "cosine", "multistep", "kde", "renyi", "mi", "halfway+last",
    "explicit", "logits", "probs", "cpu", "cuda", "cuda:0", "auto", "digits", "mnist1d", "npz:", "npz:x.npz",
    "cifar10:", "mlp_xs", "cnn1d_l", "yes", "no", "on", "off", "~", "null", ".inf", ".nan", "0x1F", "0o17",
    "1_000", "2001-12-14", "1e5", "é", "\x00", "a: b", "- x", "[1, 2", "{a: 1}", "*alias", "&anchor",
])
_scalars = _specials | st.integers() | st.floats() | st.booleans() | st.none() | st.text(max_size=10)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6) | _specials.filter(lambda v: isinstance(v, (str, int, bool)) or v is None), inner,
    max_size=3), max_leaves=8)


def _shaped(cls):
    """Mappings shaped like ``cls``: its own keys (sometimes misspelt), values of any kind."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sub = st.fixed_dictionaries({}, optional={g.name: _values for g in dataclasses.fields(tp)})
            fields[f.name] = sub | _values
        else:
            fields[f.name] = _values
    typo = st.dictionaries(st.sampled_from(_keys(cls)).map(lambda k: k.split(".")[-1] + "s"), _values, max_size=1)
    return st.tuples(st.fixed_dictionaries({}, optional=fields), typo).map(lambda t: {**t[0], **t[1]})


def _dump(obj) -> str:
    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False)


_FRAGMENTS = [
    "seed: 3", "device: cpu", "data: {spec: digits}", "data:\n  spec: digits\n  num_samples: 100",
    "teacher:\n  epochs: 2", "student: {model: mlp_xs, epochs: 1}", "train: {lr: .inf}", "kd: {alpha: .nan}",
    "kd: [1, 2]", "x: !!binary aGVsbG8=", "teachers: !!set {a, b}", "seed: !!float 3", "seed: !!str 3",
    "device: 2001-12-14", "created: 2001-12-14t21:59:43.10-05:00", "student_seeds: !!omap [a: 1, b: 2]",
    "teacher_seeds: !!pairs [a: 1]", "base: &b {epochs: 3}", "teacher: *b", "student:\n  <<: *b\n  lr: 0.1",
    "seed: *missing", "? [a, b]\n: c", "? complex\n: key", "name: |\n  multi\n  line", "name: >-\n  folded",
    "obj: !!python/object:os.system {}", "obj: !!python/name:os.system ''", "evil: !!python/object/apply:os.system ['true']",
    "%YAML 1.1\n---", "---\nseed: 1\n---\nseed: 2", "...", "- a\n- b", "[", "{", "}", "'unterminated", "\"\\x\"",
    "\t- tab", "  indented: 1", "seed: 0\n seed: 1", "a: b: c", "seed:\n- 1\n- 2", "estimators: kde",
    "estimators: [kde, renyi, kdee]", "milestones: [1, two]", "teacher: {milestones: 5}", "teacher: null",
    "teacher: ~", "teacher: []", "teacher: 7", "\ufeffseed: 1", "seed: 1\x85", "# only a comment",
]
_fragment_yaml = st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=5).map("\n".join)
_deep = st.integers(1, 700).map(lambda n: "seed: " + "[" * n + "]" * n) | st.integers(1, 600).map(
    lambda n: "".join(" " * i + f"k{i}:\n" for i in range(n)) + "\n")


@st.composite
def _mutated(draw, cls):
    """A valid config file of ``cls`` with one to three random edits."""
    text = _dump(to_dict(cls()))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 20)))
        edit = draw(st.sampled_from(["delete", "insert", "replace"]))
        junk = draw(st.text(max_size=8) | st.sampled_from([":", "-", "[", "]", "{", "}", "\n", "  ", "&a", "*a",
                                                             "!!", "#", "'", '"', ".inf", "-1", "0"]))
        text = text[:i] + ("" if edit == "delete" else junk) + (text[i:] if edit == "insert" else text[j:])
    return text


def _texts(cls):
    return st.one_of(_shaped(cls).map(_dump), _values.map(_dump), _fragment_yaml, _mutated(cls), _deep,
                     st.text(max_size=200))


_overrides = st.dictionaries(st.sampled_from(_keys(RunConfig) + _keys(StudyConfig) + _keys(DistillConfig)
                                             + ["x", "teacher.lrr", "data.spec.x", ".", "a..b"]), _values, max_size=3)


def _load(cls, path, text_or_bytes, overrides=None):
    if isinstance(text_or_bytes, bytes):
        path.write_bytes(text_or_bytes)
    else:
        path.write_text(text_or_bytes, encoding="utf-8")
    try:
        cfg = load_config(cls, path, overrides)
    except CkptkdError as e:
        assert str(e) and "\n" not in str(e), f"a CkptkdError message must be one line: {str(e)!r}"
        return None
    assert isinstance(cfg, cls)
    return cfg


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "config.yaml"


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
@FUZZ
@given(data=st.data())
def test_yaml_text_gives_a_config_or_a_ckptkd_error(cls, config_file, data):
    _load(cls, config_file, data.draw(_texts(cls)))


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
@FUZZ
@given(data=st.data())
def test_yaml_text_with_flags_on_top_gives_a_config_or_a_ckptkd_error(cls, config_file, data):
    _load(cls, config_file, data.draw(_shaped(cls).map(_dump) | _fragment_yaml), data.draw(_overrides))


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=100))
def test_any_bytes_give_a_config_or_a_ckptkd_error(cls, config_file, raw):
    _load(cls, config_file, raw)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_a_written_config_reads_back_as_itself(cls, config_file):
    cfg = cls()
    assert _load(cls, config_file, _dump(to_dict(cfg))) == cfg


@pytest.mark.parametrize("text, message", [
    ("seed: " + "[" * 700 + "]" * 700, "nested too deeply"),
    ("teacher: {lr: .inf}", "must be a finite number"),
    ("kd: {temperature: .nan}", "must be a finite number"),
    ("obj: !!python/object/apply:os.system ['true']", "not valid YAML"),
    ("device: 2001-12-14", "must be str"),
    ("seed: !!binary aGVsbG8=", "must be int"),
], ids=["deep", "inf", "nan", "python-tag", "timestamp", "binary"])
def test_odd_corners_of_yaml_are_named(config_file, text, message):
    config_file.write_text(text)
    with pytest.raises(CkptkdError, match=message):
        load_config(RunConfig, config_file)
