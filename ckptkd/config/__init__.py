"""Typed configs: the sections (``sections``), how they are parsed (``parse``), and their type
and range checks (``checks``).

YAML files mirror the CLI flags: each section is a dataclass, each key a field. Unknown keys,
wrong types and out-of-range values are ``CkptkdError``s that name the key. Names that a
registry owns (a policy, an estimator, a noise kind, a KD method) are checked by that
registry, with a function it adds here (``checks``): this package sits below every layer and
imports none.
"""
from .checks import _REGISTRY_CHECKS, check, check_budget_value, checks, one_of, validate  # noqa: F401
from .parse import from_dict, hashed_form, load_config, read_yaml, to_dict  # noqa: F401
from .sections import (AUGMENT_CHOICES, BinningParams, CategoricalParams, CellResources, DataConfig,  # noqa: F401
                       DistillConfig, DKDParams, FitNetParams, InfoConfig, KDConfig, KDEParams, ProxyConfig,
                       RenyiParams, RunConfig, SelectConfig, StageConfig, StudyConfig, TrainConfig, augment_choice)
