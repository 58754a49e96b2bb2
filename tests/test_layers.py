"""The package's import graph: no import circles, and no import from a lower layer to a higher one.

A static read (``ast``) of every module under ``src/clip_adapter``: each
``import``/``from … import`` is an edge, relative imports resolved, imports
inside functions counted too (a lazy import still ties the two modules
together); only the body of an ``if TYPE_CHECKING:`` block is exempt. Importing
``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py``, so that
is an edge as well. Names that a registry imports by string
(:class:`clip_adapter.core.registry.Registry` ``providers``) are not edges: the
registry holds the name, not the code.

Cycles: none, and there is no allow-list for them.

Layers: every module belongs to the longest prefix of its dotted name in
:data:`LAYERS`; an import may go to the same layer or below, never above. The
upward edges not removed yet are in :data:`ALLOWED_UPWARD`, each with the reason
it is still there; an entry that is no longer needed fails the test, so the
list only shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "clip_adapter"

# Layer of each top-level module or package (a dotted sub-path overrides its package), lowest first.
LAYERS: dict[str, int] = {
    # 0. plumbing (core/): configs, errors, files, output folders, optimisation, progress, plots;
    # no knowledge of CLIP, data or models
    "_version": 0,
    "core": 0,
    # 1. data and numerics: datasets, templates; the trust numerics (calibration, conformal, OOD, record)
    "data": 1,
    "metrics": 1,
    "trust": 1,
    # 2. models: the backbone interface and providers; the toy world (its tiny CLIP is a backbone provider,
    # its scenes and captions the toy data)
    "backbones": 2,
    "toyworld": 2,
    # 3. features: extraction through the on-disk cache
    "features": 3,
    # 4. methods: the few-shot heads on cached features
    "methods": 4,
    # 5. the run: artifacts, the train/eval pipeline, inference, and fitting an artifact's trust record
    "artifacts": 5,
    "pipeline": 5,
    "inference": 5,
    "trust.fit": 5,
    "trust.labelled": 5,
    # 6. workflows built on the run: benchmarks, encoder fine-tuning and distillation, multi-label, the modality gap
    "bench": 6,
    "finetune": 6,
    "distill": 6,
    "multilabel": 6,
    "gap": 6,
    # 7. applications (apps/: report, retrieval, server, validate, demo) and the compositionality bench, video,
    # cluster runs
    "apps": 7,
    "compose": 7,
    "video": 7,
    "distributed": 7,
    # 8. the Python API: clip_adapter.fit/load/bench_results, and the package's own __init__ that re-exports it
    "api": 8,
    "__init__": 8,
    # 9. the command line
    "cli": 9,
    "__main__": 9,
}

# Upward imports (importer, imported) still there, and why. Remove an entry when its import goes.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

# Private names (one leading underscore) imported across top-level packages, and why. Same rule: only shrinks.
ALLOWED_PRIVATE: dict[tuple[str, str, str], str] = {}


# ------------------------------------------------------------------------------------------- the graph


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package) for every module of the package."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST):
    """Every import statement under ``node``, functions included, ``if TYPE_CHECKING:`` bodies excluded."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children = node.orelse
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _imports(child)


def _nearest(name: str, modules: dict) -> str | None:
    """``name`` if it is a module of the package, else its nearest enclosing one; None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict
) -> list[tuple[str, str | None]]:
    """``(imported module, private name or None)`` for each name ``node`` imports from the package."""
    if isinstance(node, ast.Import):
        return [(t, None) for alias in node.names if (t := _nearest(alias.name, modules))]
    if node.level:
        package = (module if is_package else module.rpartition(".")[0]).split(".")
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = []
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:  # a submodule: `from . import io`
            out.append((f"{base}.{alias.name}", None))
        elif (target := _nearest(base, modules)) is not None:
            private = alias.name.startswith("_") and not alias.name.startswith("__")
            out.append((target, alias.name if private else None))
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> tuple[dict[str, dict[str, tuple[int, str]]], list[tuple[str, str, str, int]]]:
    """``(edges, private imports)``: module → {imported module: (line, module named there)};
    (importer, module, name, line).

    The module named is the imported one itself, or, for a package whose ``__init__`` runs first, the
    submodule the statement names (an allow-list entry names that one).
    """
    modules = _modules()
    edges: dict[str, dict[str, int]] = {}
    private = []
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        out: dict[str, tuple[int, str]] = {}
        inside = set(_ancestors(module)) | {module}
        for node in _imports(tree):
            for target, name in _targets(module, is_package, node, modules):
                # Importing a.b.c from outside a.b runs a/b/__init__.py first.
                for step in [*_ancestors(target), target]:
                    if step in modules and step not in inside:
                        out.setdefault(step, (node.lineno, target))
                if name is not None:
                    private.append((module, target, name, node.lineno))
        edges[module] = out
    return edges, private


EDGES, PRIVATE = import_graph()


def _cycles(edges: dict[str, dict[str, tuple[int, str]]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan, then a BFS)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        start = min(component)
        previous: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in previous:
            nxt = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w in component and w not in previous:
                        previous[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while previous[path[-1]] != start:
            path.append(previous[path[-1]])
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def _layer(module: str) -> tuple[str, int]:
    """``(LAYERS key, layer)`` of a module: its longest dotted prefix in the table (``__init__``: the package's own)."""
    parts = module.split(".")[1:] or ["__init__"]
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in LAYERS:
            return key, LAYERS[key]
    raise KeyError(module)


def _upward() -> dict[tuple[str, str], str]:
    found = {}
    for module, targets in EDGES.items():
        for target, (line, named) in targets.items():
            (own, low), (their, high) = _layer(module), _layer(target)
            if high > low:
                found[(module, named)] = (
                    f"{module} (layer {low}, {own}) line {line} imports {named} (layer {high}, {their})"
                )
    return found


# ------------------------------------------------------------------------------------------- the tests


def test_the_graph_is_read():
    """A sanity check of the reader itself: known edges, relative and lazy, are there."""
    assert len(EDGES) > 150
    assert "clip_adapter.core.errors" in EDGES["clip_adapter.core.registry"]  # from .errors import ConfigError
    assert "clip_adapter.methods" in EDGES[PACKAGE]  # the package re-exports list_methods
    assert "clip_adapter.backbones" in EDGES["clip_adapter.toyworld.backbone"]  # runs backbones/__init__.py
    assert "clip_adapter.trust.fit" in EDGES["clip_adapter.inference"]  # an import inside a function


def test_no_import_cycles():
    cycles = _cycles(EDGES)
    # module:line of the import that leads to the next module
    shown = ["\n    " + " -> ".join(f"{a}:{EDGES[a][b][0]}" for a, b in zip(c, c[1:])) + f" -> {c[-1]}" for c in cycles]
    assert not cycles, f"{len(cycles)} import cycle(s):" + "".join(shown)


def test_every_module_has_a_layer():
    def placed(module: str) -> bool:
        try:
            return _layer(module) is not None
        except KeyError:
            return False

    missing = sorted({m.split(".")[1] for m in EDGES if not placed(m)})
    assert not missing, f"place these in LAYERS of {Path(__file__).name}: {', '.join(missing)}"


def test_every_layer_key_names_a_module():
    """A key that names no module is a typo, or a module that went: the table stays true to the tree."""
    names = {".".join(m.split(".")[1:i]) for m in EDGES for i in range(2, len(m.split(".")) + 1)} | {"__init__"}
    assert not set(LAYERS) - names, sorted(set(LAYERS) - names)


def test_no_import_goes_up_a_layer():
    found = _upward()
    new = [why for edge, why in sorted(found.items()) if edge not in ALLOWED_UPWARD]
    assert not new, "imports from a lower layer to a higher one:\n  " + "\n  ".join(new)


def test_the_upward_allow_list_only_holds_live_edges():
    stale = sorted(set(ALLOWED_UPWARD) - set(_upward()))
    assert not stale, f"no longer upward (or gone): remove from ALLOWED_UPWARD: {stale}"


def test_no_private_name_is_imported_across_packages():
    def top(module: str) -> str:
        return module.split(".")[1] if module != PACKAGE else ""

    found = {(m, t, n): f"{m} line {line}: from {t} import {n}" for m, t, n, line in PRIVATE if top(m) != top(t)}
    new = [why for key, why in sorted(found.items()) if key not in ALLOWED_PRIVATE]
    assert not new, "private names imported from another package (make them public, or move them):\n  " + "\n  ".join(
        new
    )
    stale = sorted(set(ALLOWED_PRIVATE) - set(found))
    assert not stale, f"no longer imported: remove from ALLOWED_PRIVATE: {stale}"


def test_the_backbone_factory_finds_the_toy_world_without_importing_it_first():
    """``create_backbone("toy")`` in a fresh interpreter: the provider comes through the registry, on first use."""
    code = (
        "import sys\n"
        "from clip_adapter.backbones import BACKBONES, create_backbone\n"
        "assert not [m for m in sys.modules if m.startswith('clip_adapter.toyworld')], 'imported too early'\n"
        "bb = create_backbone('toy', pretrained='none', precision='fp32', device='cpu')\n"
        "print(bb.provider, *BACKBONES.names())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["toy", "toy", "toy-cnn"]


def test_a_registry_imports_a_provider_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "layers_probe.py").write_text(
        "from clip_adapter.core.registry import Registry\n"
        "THINGS = Registry('thing', providers={'late': 'layers_probe_late', 'broken': 'layers_probe_broken'})\n"
    )
    (tmp_path / "layers_probe_late.py").write_text("from layers_probe import THINGS\nTHINGS.register('late')('here')\n")
    (tmp_path / "layers_probe_broken.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from layers_probe import THINGS

        assert "late" in THINGS and "layers_probe_late" not in sys.modules  # known, not imported yet
        assert THINGS.get("late") == "here"
        with pytest.raises(RuntimeError, match="did not register"):
            THINGS.get("broken")  # a provider that registers nothing is a bug, said at once
    finally:
        for name in ("layers_probe", "layers_probe_late", "layers_probe_broken"):
            sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "name", ["clip_adapter.core.plotting", "clip_adapter.core.registry", "clip_adapter.video.toyactions"]
)
def test_the_examples_of_the_layering_modules_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
