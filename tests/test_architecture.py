"""Architecture tests: what each layer may import (STYLE.md, habit 1; docs/architecture.md).

The rules are allow-lists, so a new shell module cannot slip into the core unnoticed:

- ``core/`` imports a subset of the standard library (nothing that reaches the filesystem, the
  network, processes or the clock), msgspec, orjson, numpy, and ``core``, ``models``,
  ``exceptions`` and ``_version`` of this package.
- ``models/`` imports pydantic, the same standard-library subset and ``models`` itself.
- Only ``gpu/nvml.py`` imports pynvml.
- No module takes part in an import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "energy_ledger"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

PURE_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "array",
        "bisect",
        "collections",
        "copy",
        "dataclasses",
        "datetime",
        "enum",
        "functools",
        "hashlib",
        "heapq",
        "io",
        "itertools",
        "json",
        "logging",
        "math",
        "numbers",
        "operator",
        "re",
        "statistics",
        "string",
        "types",
        "typing",
    }
)
"""Standard-library modules that touch nothing outside the process (``logging`` only gets loggers;
handlers are set up in the CLI). ``io`` is here for ``io.BytesIO`` over bytes already held."""

LEAF_MODULES = frozenset({f"{PACKAGE}.exceptions", f"{PACKAGE}._version"})
"""Top-level modules any layer may import: they import nothing of this package."""

ALLOWED: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "core": (
        PURE_STDLIB | {"msgspec", "orjson", "numpy"},
        (f"{PACKAGE}.core", f"{PACKAGE}.models"),
    ),
    "models": (PURE_STDLIB | {"pydantic"}, (f"{PACKAGE}.models",)),
}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(source: str, current: str = PACKAGE, *, top_level_only: bool = False) -> set[str]:
    """Every absolute module name a source imports, with relative imports resolved.

    ``current`` is the dotted package the source lives in. ``from pkg import name`` also yields
    ``pkg.name`` (it may be a module). ``top_level_only`` leaves out imports inside functions.
    """
    tree = ast.parse(source)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = current.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    """True when ``name`` is one of ``prefixes`` or something inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _violations(layer: str, names: set[str]) -> set[str]:
    """The imported names that the layer's allow-list refuses."""
    external, internal = ALLOWED[layer]
    bad = set()
    for name in names:
        root = name.split(".")[0]
        if root == PACKAGE:
            ok = _within(name, (*LEAF_MODULES, *internal))
            # ``from energy_ledger import X`` yields ``energy_ledger`` itself: judged by ``X``.
            if name != PACKAGE and not ok:
                bad.add(name)
        elif root not in external:
            bad.add(name)
    return bad


def _layer_files(layer: str) -> list[tuple[str, Path]]:
    return [(m, p) for m, p in _modules().items() if m.split(".")[1:2] == [layer]]


class TestImportChecker:
    """The checker itself sees every way of importing a module."""

    @pytest.mark.parametrize(
        "source",
        [
            "import energy_ledger.store.writer",
            "import energy_ledger.store.writer as w",
            "from energy_ledger.store.writer import EventLogWriter",
            "from energy_ledger import store",
            "from energy_ledger.daemon import lease",
            "from .. import pipeline",
            "from ..store import atomic",
            "def f():\n    from energy_ledger.gpu.nvml import NvmlBackend\n",
            "import os",
            "from pathlib import Path",
            "import time",
            "import watchdog.events",
            "import pydantic",
        ],
    )
    def test_refuses_what_core_may_not_import(self, source: str) -> None:
        """Absolute, relative, function-level and third-party imports outside the list are found."""
        assert _violations("core", _imports(source, f"{PACKAGE}.core"))

    @pytest.mark.parametrize(
        "source",
        [
            "from energy_ledger.core.events import Request",
            "from . import state",
            "from .state import ProcessState",
            "from energy_ledger.models import ExperimentResult",
            "from energy_ledger.exceptions import FormatError",
            "import msgspec",
            "import numpy as np",
            "from collections.abc import Sequence",
        ],
    )
    def test_accepts_what_core_may_import(self, source: str) -> None:
        """Core, models, the leaf modules and the listed libraries pass."""
        assert not _violations("core", _imports(source, f"{PACKAGE}.core"))

    def test_sees_a_new_shell_module(self) -> None:
        """A module nobody has listed anywhere is refused by default."""
        assert _violations("core", {f"{PACKAGE}.brand_new_shell"})


class TestLayers:
    """Every module of a layer keeps to that layer's allow-list."""

    @pytest.mark.parametrize("layer", sorted(ALLOWED))
    def test_layer_keeps_to_its_imports(self, layer: str) -> None:
        """No module in the layer imports anything outside its allow-list."""
        files = _layer_files(layer)
        assert files, f"no modules found in {layer}/"
        for module, path in files:
            names = _imports(path.read_text(encoding="utf-8"), _package_of(module, path))
            assert not _violations(layer, names), f"{path}: {sorted(_violations(layer, names))}"

    def test_only_gpu_nvml_imports_pynvml(self) -> None:
        """pynvml enters in one module, which translates its errors (STYLE.md, zeus)."""
        importers = sorted(
            module
            for module, path in _modules().items()
            if any(n.split(".")[0] == "pynvml" for n in _imports(path.read_text(encoding="utf-8")))
        )
        assert importers == [f"{PACKAGE}.gpu.nvml"]

    def test_gpu_imports_no_other_layer_but_core_events(self) -> None:
        """The GPU backends know nothing of the recorder, the store or the daemon."""
        for module, path in _layer_files("gpu"):
            names = _imports(path.read_text(encoding="utf-8"), _package_of(module, path))
            ours = {n for n in names if n.startswith(PACKAGE + ".")}
            allowed = (f"{PACKAGE}.gpu", f"{PACKAGE}.core.events", *LEAF_MODULES)
            refused = sorted(n for n in ours if not _within(n, allowed))
            assert not refused, f"{path}: {refused}"

    @pytest.mark.parametrize(
        ("layer", "forbidden"),
        [
            ("daemon", ("recorder", "gpu")),
            ("recorder", ("daemon", "pipeline", "cli")),
            ("store", ("daemon", "recorder", "gpu", "pipeline", "cli", "report")),
            ("report", ("daemon", "recorder", "gpu", "cli")),
            ("export", ("daemon", "recorder", "gpu", "cli", "pipeline")),
        ],
    )
    def test_shell_layers_keep_apart(self, layer: str, forbidden: tuple[str, ...]) -> None:
        """The daemon never loads the code that wrote the logs; GPU processes never load the
        daemon; the file layer serves both and depends on neither."""
        files = _layer_files(layer)
        assert files, f"no modules found in {layer}/"
        prefixes = tuple(f"{PACKAGE}.{name}" for name in forbidden)
        for module, path in files:
            names = _imports(path.read_text(encoding="utf-8"), _package_of(module, path))
            refused = sorted(n for n in names if _within(n, prefixes))
            assert not refused, f"{path}: {refused}"

    @pytest.mark.parametrize(
        ("library", "modules"),
        [
            ("matplotlib", ("report.figures", "report.scatter")),
            ("jinja2", ("report.html",)),
            ("prometheus_client", ("daemon.exporter",)),
            ("obstore", ("store.remote",)),
        ],
    )
    def test_optional_report_libraries_enter_in_few_modules(
        self, library: str, modules: tuple[str, ...]
    ) -> None:
        """matplotlib and jinja2 (the ``report`` extra) are imported only where the report
        draws and lays out, prometheus-client (the ``metrics`` extra) only where ``/metrics``
        is served, so a node without them can use everything else."""
        importers = sorted(
            name
            for name, path in _modules().items()
            if any(n.split(".")[0] == library for n in _imports(path.read_text(encoding="utf-8")))
        )
        assert importers == [f"{PACKAGE}.{m}" for m in modules]

    @pytest.mark.parametrize(
        "module", ["report.model", "report.digest", "report.numbers", "report.checks"]
    )
    def test_report_view_model_is_pure(self, module: str) -> None:
        """What a page shows is computed by pure code (the core's allow-list, plus the report's
        own pure modules); drawing and writing are elsewhere."""
        external, internal = ALLOWED["core"]
        path = SRC / (module.replace(".", "/") + ".py")
        names = _imports(path.read_text(encoding="utf-8"), f"{PACKAGE}.report")
        own = ("model", "digest", "numbers", "checks")
        pure = (*internal, *(f"{PACKAGE}.report.{m}" for m in own), *LEAF_MODULES)
        refused = sorted(
            n
            for n in names
            if (n.split(".")[0] == PACKAGE and n != PACKAGE and not _within(n, pure))
            or (n.split(".")[0] not in (PACKAGE, *external))
        )
        assert not refused, f"{path}: {refused}"

    @pytest.mark.parametrize(
        "layer", ["core", "store", "daemon", "recorder", "gpu", "report", "export"]
    )
    def test_subpackage_init_imports_nothing(self, layer: str) -> None:
        """A subpackage's ``__init__`` holds only its docstring, so importing one module of it
        loads nothing else (``import energy_ledger`` stays light)."""
        source = (SRC / layer / "__init__.py").read_text(encoding="utf-8")
        tree = ast.parse(source)
        assert ast.get_docstring(tree), f"{layer}/__init__.py has no docstring"
        assert _imports(source, f"{PACKAGE}.{layer}") == set()


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path that returns to its first node, or ``None``."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in done:
            return None
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            if (cycle := visit(nxt)) is not None:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if (cycle := visit(node)) is not None:
            return cycle
    return None


def _import_graph() -> dict[str, set[str]]:
    """Imports between this package's modules, those inside functions too.

    An edge from a module to a package that contains it is dropped: importing a submodule runs
    its package's ``__init__`` first, which is not a dependency of the submodule's code.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = _imports(path.read_text(encoding="utf-8"), _package_of(module, path))
        graph[module] = {
            n for n in names if n in modules and n != module and not module.startswith(n + ".")
        }
    return graph


class TestNoCycles:
    """No two modules import each other, directly or through others."""

    def test_no_import_cycles(self) -> None:
        """The import graph of the package is acyclic."""
        graph = _import_graph()
        assert sum(map(len, graph.values())) > 50, "the graph has too few edges to be real"
        assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])

    @pytest.mark.parametrize(
        ("graph", "cyclic"),
        [
            ({"a": {"b"}, "b": {"a"}}, True),
            ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
            ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
            ({"a": set()}, False),
        ],
    )
    def test_cycle_search(self, graph: dict[str, set[str]], cyclic: bool) -> None:
        """The search finds direct and indirect cycles and none in a diamond."""
        assert (_find_cycle(graph) is not None) is cyclic


class TestDocsMatchTheTree:
    """docs/architecture.md draws the tree the package really has."""

    def test_every_module_is_in_the_drawn_tree(self) -> None:
        """Each module and subpackage appears in the tree block of docs/architecture.md."""
        doc = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
        tree = doc.split("## The tree", 1)[1].split("```")[1]
        words = set(tree.replace("/", " ").replace(":", " ").replace(",", " ").split())
        missing = sorted(
            module
            for module in _modules()
            if module.count(".") >= 1
            and module.rsplit(".", 1)[1] not in {"__main__", "_version"}
            and module.rsplit(".", 1)[1] not in words
            and f"{module.rsplit('.', 1)[1]}.py" not in words
        )
        assert not missing, f"not drawn in docs/architecture.md: {missing}"
