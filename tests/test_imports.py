"""Imports go one way, and none goes round in a circle (issue 21).

Every ``import`` and ``from ... import`` in ckptkd/ is read from the source (inside functions
too: a lazy import that hides a circle is still a circle; ``if TYPE_CHECKING:`` blocks are left
out, they never run). Relative imports are resolved, and ``from pkg import name`` where ``name``
is a submodule counts as importing that submodule. Only the named module counts, not the
parents Python also initialises on the way (``import ckptkd.data.noise`` runs ckptkd/__init__
first, for every module alike).

    python tests/test_imports.py     # prints the circles and layer breaks, if any

The layers, lowest first. A module may import its own layer and the ones below it. Where the
top-level modules sit:
- ``ensemble`` (many models run as one) sits with ``models``: it imports nothing but ``errors``;
- ``teacher``, ``teacher_cache`` (what the student learns from), ``export`` (a trained model,
  compressed) and ``integrations`` (Lightning writing a trajectory) sit with ``train``/``distill``;
- ``pipeline`` (``ckptkd run``: train, select, distill) sits with ``study``: both run the others;
- the package ``ckptkd`` itself (its ``__init__``, the Python API that imports every registry,
  so that each one's config checks are in place) and ``__main__`` sit with ``cli``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ckptkd"

LAYERS = [
    ("base", ["ckptkd.errors", "ckptkd.io", "ckptkd.config", "ckptkd.parallel", "ckptkd.version"]),
    ("data, models, trajectory", ["ckptkd.data", "ckptkd.models", "ckptkd.trajectory", "ckptkd.ensemble"]),
    ("train, distill", ["ckptkd.train", "ckptkd.distill", "ckptkd.teacher", "ckptkd.teacher_cache", "ckptkd.export",
                        "ckptkd.integrations"]),
    ("info, select", ["ckptkd.info", "ckptkd.select"]),
    ("study, report", ["ckptkd.study", "ckptkd.report", "ckptkd.pipeline"]),
    ("cli", ["ckptkd.cli", "ckptkd.__main__", "ckptkd"]),
]


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package is its __init__)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST):
    """Every Import/ImportFrom below ``node``, wherever it is, except under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _import_nodes(child)


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (file ``path``) imports."""
    is_package = path.name == "__init__.py"
    out = set()

    def deepest(dotted: str) -> str | None:  # import a.b.c names module a.b.c, or the deepest one that exists
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                return ".".join(parts[:i])
        return None

    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [deepest(a.name) for a in node.names]
        else:
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                targets.append(sub if sub in known else deepest(origin))
        out.update(t for t in targets if t is not None and t != name)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found, key=lambda c: (-len(c), c))


def layer_of(name: str) -> int | None:
    """The layer of module ``name``: the one listing its longest dotted prefix."""
    best, layer = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), i
    return layer


def layer_breaks(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, and every module no layer lists."""
    out = []
    for name in sorted(graph):
        mine = layer_of(name)
        if mine is None:
            out.append(f"{name} is in no layer; add it to LAYERS in tests/test_imports.py")
            continue
        for target in sorted(graph[name]):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                out.append(f"{name} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    return out


def _describe(components: list[list[str]]) -> str:
    return "\n".join(f"  {len(c)} modules: {', '.join(c)}" for c in components)


def test_no_module_imports_itself_round_a_circle():
    found = circles(import_graph())
    assert not found, f"{len(found)} import circle(s):\n{_describe(found)}"


def test_no_module_imports_a_higher_layer():
    breaks = layer_breaks(import_graph())
    assert not breaks, "imports against the layers:\n  " + "\n  ".join(breaks)


def test_config_imports_no_registry():
    graph = import_graph()
    config = [m for m in graph if m == "ckptkd.config" or m.startswith("ckptkd.config.")]
    assert len(config) == 4  # the package, its sections, parsing and checks
    for module in config:
        assert graph[module] <= {"ckptkd.errors", *config}, module


def test_each_registrys_name_checks_are_in_place_once_config_is_imported():
    """A fresh interpreter that imports ckptkd.config alone still gets every registry's check
    (ckptkd/__init__.py, which runs first, imports them), with the messages of docs/errors.md."""
    code = """
from ckptkd.config import DataConfig, RunConfig, StudyConfig, from_dict
from ckptkd.errors import CkptkdError
for cls, data in [(DataConfig, {"label_noise_kind": "pairs"}), (RunConfig, {"select": {"policy": "mi-vall"}}),
                  (RunConfig, {"info": {"estimator": "kdee"}}), (StudyConfig, {"estimators": ["kdee"]}),
                  (StudyConfig, {"policies": ["explicit"]}), (StudyConfig, {"teacher_seeds": [0, 0]})]:
    try:
        from_dict(cls, data)
        print("accepted", data)
    except CkptkdError as e:
        print(str(e).split(",")[0].split(" must ")[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:6] == ["data.label_noise_kind", "select.policy", "info.estimator", "study estimators",
                       "study policies", "study teacher_seeds"], out


def test_a_new_registry_checks_its_names_without_an_edit_to_config():
    from ckptkd.config import _REGISTRY_CHECKS, KDConfig, checks, from_dict, one_of
    from ckptkd.errors import CkptkdError

    @checks(KDConfig)
    def check_combine_name(cfg):
        one_of("kd.combine", cfg.combine, ("logits",))

    try:
        assert from_dict(KDConfig, {"combine": "logits"}).combine == "logits"
        with pytest.raises(CkptkdError, match="kd.combine must be one of logits, got 'probs'"):
            from_dict(KDConfig, {"combine": "probs"})
    finally:
        _REGISTRY_CHECKS[KDConfig].remove(check_combine_name)


def test_the_walk_sees_lazy_relative_and_submodule_imports(tmp_path):
    """The walk on a package written here: the circle hides in a function, behind a relative
    ``from . import submodule``; a TYPE_CHECKING import makes none."""
    pkg = tmp_path / "ckptkd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def check():\n    from .sub import registry\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "registry.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .. import config\nif TYPE_CHECKING:\n    from ..other import x\n")
    (pkg / "other.py").write_text("import ckptkd.sub.registry\n")
    graph = import_graph(pkg)
    assert graph["ckptkd.config"] == {"ckptkd.sub.registry"}
    assert graph["ckptkd.sub.registry"] == {"ckptkd.config"}
    assert graph["ckptkd.other"] == {"ckptkd.sub.registry"}
    assert circles(graph) == [["ckptkd.config", "ckptkd.sub.registry"]]
    assert layer_breaks({"ckptkd.config": {"ckptkd.select.base"}, "ckptkd.select.base": set()}) == [
        "ckptkd.config (base) imports ckptkd.select.base (info, select)"]


if __name__ == "__main__":
    g = import_graph()
    found = circles(g)
    print(f"{len(g)} modules, {sum(len(v) for v in g.values())} imports, {len(found)} circle(s)")
    print(_describe(found))
    print("\n".join(layer_breaks(g)))
