"""Architecture tests: the pure core imports nothing from the I/O shell (STYLE.md, habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "energy_ledger"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

CORE = (
    "events",
    "state",
    "replay",
    "fastpath",
    "marker",
    "stats",
    "process",
    "completeness",
    "aggregation",
    "models",
)
SHELL = frozenset(
    {
        "writer",
        "ledger",
        "exporters",
        "watcher",
        "recorder",
        "nvml",
        "cli",
        "simulate",
        "atomic",
        "layout",
        "pipeline",
        "sampler",
        "snapshot",
        "launch",
        "fake_nvml",
        "daemon_config",
        "daemon_state",
        "hooks",
        "lease",
        "fsdetect",
        "watch_sources",
        "logfmt",
    }
)
# Standard-library modules that reach the filesystem, processes, the network or the clock.
IO_MODULES = frozenset(
    {"os", "pathlib", "shutil", "tempfile", "glob", "subprocess", "socket", "time", "watchdog"}
)


def _sources(module: str) -> list[Path]:
    """The source files of a core module (a package gives all of its files)."""
    package = SRC / module
    if package.is_dir():
        return sorted(package.rglob("*.py"))
    single = SRC / f"{module}.py"
    return [single] if single.is_file() else []


def _imports(source: str, package: str = PACKAGE, current: str = PACKAGE) -> set[str]:
    """Every absolute module name a source imports, with relative imports resolved.

    ``current`` is the dotted package the source lives in (for relative imports).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
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
            if module == package:
                names.update(f"{package}.{alias.name}" for alias in node.names)
    return names


def _shell_imports(names: set[str]) -> set[str]:
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == PACKAGE and len(parts) > 1 and parts[1] in SHELL:
            found.add(name)
    return found


def _current_package(path: Path) -> str:
    relative = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(relative.parts[:-1])


class TestImportChecker:
    """The checker itself sees every way of importing a module."""

    @pytest.mark.parametrize(
        "source",
        [
            "import energy_ledger.writer",
            "import energy_ledger.writer as w",
            "from energy_ledger.writer import EventLogWriter",
            "from energy_ledger import writer",
            "from energy_ledger import events, layout",
            "from . import atomic",
            "from .cli import main",
            "def f():\n    from energy_ledger.nvml import Nvml\n",
        ],
    )
    def test_detects_shell_imports(self, source: str) -> None:
        """Absolute, relative and function-level imports of a shell module are all found."""
        assert _shell_imports(_imports(source))

    @pytest.mark.parametrize(
        "source",
        [
            "from energy_ledger.events import Request",
            "from . import state",
            "import energy_ledger_writer",
            "from energy_ledger.models import writer_config",
        ],
    )
    def test_ignores_core_imports(self, source: str) -> None:
        """Imports of core modules (and look-alike names) are not flagged."""
        assert not _shell_imports(_imports(source))

    def test_resolves_relative_imports_in_subpackages(self) -> None:
        """``from .. import writer`` inside ``energy_ledger.models`` is the shell's writer."""
        names = _imports("from .. import writer", current=f"{PACKAGE}.models")
        assert _shell_imports(names) == {f"{PACKAGE}.writer"}


class TestCoreIsPure:
    """Core modules import no shell module and no I/O module."""

    def test_core_and_shell_are_disjoint(self) -> None:
        """No module is listed as both core and shell."""
        assert not set(CORE) & SHELL

    @pytest.mark.parametrize("module", CORE)
    def test_core_imports_no_shell_module(self, module: str) -> None:
        """A core module imports nothing from writer, ledger, exporters, cli, layout, ..."""
        files = _sources(module)
        if not files:
            pytest.skip(f"{PACKAGE}.{module} does not exist yet")
        for path in files:
            names = _imports(path.read_text(encoding="utf-8"), current=_current_package(path))
            assert not _shell_imports(names), f"{path.name} imports {_shell_imports(names)}"

    @pytest.mark.parametrize("module", CORE)
    def test_core_imports_no_io_module(self, module: str) -> None:
        """A core module imports none of os, pathlib, time, subprocess, ... ."""
        files = _sources(module)
        if not files:
            pytest.skip(f"{PACKAGE}.{module} does not exist yet")
        for path in files:
            names = _imports(path.read_text(encoding="utf-8"), current=_current_package(path))
            roots = {name.split(".")[0] for name in names}
            assert not roots & IO_MODULES, f"{path.name} imports {sorted(roots & IO_MODULES)}"
