"""``energy-ledger export``: the command around export.dataset and export.lem_bundle."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest

from energy_ledger.cli import cli
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate

pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three replayed experiments of a sweep."""
    simulate(tmp_path, experiments=3, processes=2, requests=20, sweep=True)
    replay_root(tmp_path)
    return tmp_path


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_parquet_is_the_default(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --format, the dataset is written: one row per result, read back by polars."""
    assert cli("export", str(root), "--json") == 0
    done = _json(capsys)
    assert done["format"] == "parquet" and done["rows"] == 3 and done["written"] == 3
    table = pl.read_parquet(Path(str(done["path"])))
    assert sorted(table["experiment_id"].to_list()) == ["sim-0000", "sim-0001", "sim-0002"]
    assert cli("export", str(root), "--json") == 0
    again = _json(capsys)
    assert again["written"] == 0 and again["unchanged"] == 3


def test_lem_bundle(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format lem-bundle writes one bundle folder per result, with its result.json."""
    out = tmp_path / "bundles"
    assert cli("export", str(root), "--format", "lem-bundle", "--out", str(out), "--json") == 0
    done = _json(capsys)
    folders = [Path(str(b["folder"])) for b in done["bundles"]]  # type: ignore[attr-defined]
    assert len(folders) == 3
    for folder in folders:
        assert folder.parent == out
        result = json.loads((folder / "result.json").read_text())
        assert result["bundle_version"] == "2.0"


def test_a_corrupt_result_is_named_and_exits_1(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other results are exported; the bad file is named; exit 1."""
    (root / "aggregated" / "sim-0001.json").write_text("{not json")
    assert cli("export", str(root)) == 1
    captured = capsys.readouterr()
    assert "sim-0001" in captured.err and "Traceback" not in captured.err


def test_out_with_parquet_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--out belongs to the bundle export: a usage error, exit 2, with the reason."""
    assert cli("export", str(root), "--out", str(root / "x")) == 2
    assert "--out is for --format lem-bundle" in capsys.readouterr().err


def test_unknown_format(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A format that does not exist is a usage error naming the choices."""
    assert cli("export", str(root), "--format", "xlsx") == 2
    assert "lem-bundle" in capsys.readouterr().err


def test_without_pyarrow_the_hint_is_given(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where pyarrow is not installed, the dataset export says what to install (exit 2)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a)
    )
    assert cli("export", str(root)) == 2
    assert "pip install 'energy-ledger[parquet]'" in capsys.readouterr().err
    assert not (root / "aggregated" / "results.parquet").exists()


def test_not_a_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that is not a results root: exit 2, the path named, no traceback."""
    missing = tmp_path / "nowhere"
    assert cli("export", str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
