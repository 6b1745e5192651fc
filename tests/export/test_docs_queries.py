"""docs/data.md's one question asked three ways (pandas, polars, DuckDB): all run, all agree
with each other and with a group-by over the JSON results."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from energy_ledger.export.dataset import DATASET_NAME, export_dataset
from energy_ledger.pipeline import replay_root
from energy_ledger.simulate import simulate

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"
DOC_PATH = f"aggregated/{DATASET_NAME}"
"""The dataset's path in the snippets (relative to the results root)."""
BLOCK_RE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.S | re.M)
COLUMNS = ("model_name", "batch_size", "experiments", "j_per_output_token")

Answer = list[tuple[str, float | None, int, float]]


def snippets() -> dict[str, str]:
    """The fenced blocks of docs/data.md tagged ``python pandas``, ``python polars`` and
    ``sql duckdb``, by engine."""
    found = {}
    for match in BLOCK_RE.finditer(DOC.read_text(encoding="utf-8")):
        info = match["info"].split()
        if len(info) == 2 and info[1] in {"pandas", "polars", "duckdb"}:
            assert info[1] not in found, f"two {info[1]} blocks in {DOC}"
            found[info[1]] = match["body"]
    return found


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight experiments (batch sizes 1, 2, 4, 8, 16, 32, 1, 2), exported, after two edits:
    a second model for both batch-size-2 runs, and no batch size for the 32 one."""
    path = tmp_path_factory.mktemp("docs") / "root"
    simulate(path, experiments=8, processes=2, requests=10, sweep=True, itl=False)
    replay_root(path)
    for name in ("sim-0001.json", "sim-0007.json"):
        edit(path / "aggregated" / name, lambda doc: rename_model(doc, "sim-llama"))
    edit(path / "aggregated" / "sim-0005.json", lambda doc: doc["effective_config"].clear())
    assert export_dataset(path).problems == ()
    return path


def edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def rename_model(doc: dict[str, Any], model: str) -> None:
    for process in doc["process_results"]:
        process["model_name"] = model


def expected(root: Path) -> Answer:
    """The answer computed from the result files themselves, with ``json``."""
    groups: dict[tuple[str, float | None], list[float]] = {}
    for path in sorted((root / "aggregated").glob("*.json")):
        doc = json.loads(path.read_bytes())
        model = ";".join(sorted({p["model_name"] for p in doc["process_results"]}))
        batch = doc["effective_config"].get("batch_size")
        output = sum(p["inference_metrics"]["output_tokens"] for p in doc["process_results"])
        group = groups.setdefault((model, None if batch is None else float(batch)), [0, 0, 0])
        group[0] += 1
        group[1] += doc["total_energy_j"]
        group[2] += output
    order = sorted(groups, key=lambda k: (k[0], k[1] is None, k[1] or 0.0))  # nulls last
    return [(m, b, int(groups[m, b][0]), groups[m, b][1] / groups[m, b][2]) for m, b in order]


def run_python(code: str, dataset: str) -> Any:
    """Run a snippet with the dataset's real path in place of the docs' one; its ``answer``."""
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code.replace(DOC_PATH, dataset), str(DOC), "exec"), namespace)
    return namespace["answer"]


def answer_of(engine: str, code: str, dataset: str) -> Answer:
    if engine == "duckdb":
        rows = duckdb.sql(code.replace(DOC_PATH, dataset)).fetchall()
    elif engine == "pandas":
        frame = run_python(code, dataset)
        rows = list(frame[list(COLUMNS)].itertuples(index=False, name=None))
    else:
        rows = run_python(code, dataset).select(COLUMNS).rows()
    return [(str(m), None if _null(b) else float(b), int(n), float(e)) for m, b, n, e in rows]


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class TestDocsQueries:
    """The three snippets of docs/data.md, run against an exported dataset."""

    def test_the_doc_has_the_three_snippets(self) -> None:
        """One block per engine, each reading the dataset by the path the docs give."""
        found = snippets()
        assert sorted(found) == ["duckdb", "pandas", "polars"]
        assert all(DOC_PATH in code for code in found.values())

    @pytest.mark.parametrize("engine", ["pandas", "polars", "duckdb"])
    def test_each_snippet_gives_the_answer_of_the_json(self, root: Path, engine: str) -> None:
        """Groups, counts and J per output token equal a group-by over the result files."""
        want = expected(root)
        assert [(m, b, n) for m, b, n, _ in want] == [
            ("sim-gpt", 1.0, 2),
            ("sim-gpt", 4.0, 1),
            ("sim-gpt", 8.0, 1),
            ("sim-gpt", 16.0, 1),
            ("sim-gpt", None, 1),
            ("sim-llama", 2.0, 2),
        ]
        got = answer_of(engine, snippets()[engine], str(root / DOC_PATH))
        assert [row[:3] for row in got] == [row[:3] for row in want]
        for (*_, e_got), (*_, e_want) in zip(got, want, strict=True):
            assert e_got == pytest.approx(e_want, rel=1e-12)

    def test_the_three_agree_with_each_other(self, root: Path) -> None:
        """Same groups in the same order, same numbers (to float summation order)."""
        dataset = str(root / DOC_PATH)
        answers = [answer_of(e, c, dataset) for e, c in sorted(snippets().items())]
        first = answers[0]
        for other in answers[1:]:
            assert [r[:3] for r in other] == [r[:3] for r in first]
            assert [r[3] for r in other] == pytest.approx([r[3] for r in first], rel=1e-12)
