"""``report`` on a bucket root (SeaweedFS): the pages a folder of the same segments gets, byte
for byte, put as derived objects under the root's ``aggregated/`` and nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report needs the report extra")
pytest.importorskip("jinja2", reason="the report needs the report extra")

from energy_ledger import pipeline
from energy_ledger.core.replay import Observer
from energy_ledger.core.timeline import TimelineBuilder
from energy_ledger.exceptions import LedgerError
from energy_ledger.pipeline import replay_root
from energy_ledger.report.bucket import (
    bucket_comparison_rows,
    is_experiment_url,
    write_bucket_experiment_report,
    write_bucket_root_reports,
    write_url_experiment_report,
)
from energy_ledger.report.build import (
    write_experiment_report,
    write_root_reports,
)
from energy_ledger.store.bucket_reader import scan_bucket_experiment
from energy_ledger.store.objects import LocalObjects, ObjectStore, open_objects
from energy_ledger.store.remote import open_bucket
from energy_ledger.store.segments import marker_key
from tests.helpers import write_segmented_experiment
from tests.s3.test_cli_bucket import as_json, cli

PROCESSES = 2


def both(s3_url: str, tmp_path: Path, *ids: str) -> tuple[ObjectStore, Path]:
    """The same experiments in a bucket root and in a folder root: (bucket, folder)."""
    bucket = open_objects(s3_url)
    folder = tmp_path / "local"
    for experiment_id in ids:
        write_segmented_experiment(bucket, experiment_id, processes=PROCESSES)
        write_segmented_experiment(LocalObjects(folder), experiment_id, processes=PROCESSES)
    return bucket, folder


def figures_of(objects: ObjectStore, folder: str) -> dict[str, bytes]:
    """Name -> bytes of the figure objects in ``aggregated/figures/<folder>/``."""
    prefix = f"aggregated/figures/{folder}/"
    return {i.key.removeprefix(prefix): objects.get(i.key) for i in objects.list(prefix)}


class TestExperimentPage:
    """``aggregated/<id>.report.html`` put into a bucket from its segments."""

    def test_a_folders_bytes_and_figures(self, s3_url: str, tmp_path: Path) -> None:
        """The page and its ``--svg`` figures are the bytes ``write_experiment_report``
        writes for a folder holding the same segments; a second run writes nothing."""
        bucket, folder = both(s3_url, tmp_path, "a")
        written = write_bucket_experiment_report(bucket, "a", svg=True)
        local = write_experiment_report(folder / "raw" / "a", svg=True)
        assert written.page == f"{s3_url}/aggregated/a.report.html"
        assert written.changed and not written.partial
        assert bucket.get("aggregated/a.report.html") == Path(local.page).read_bytes()
        figures = figures_of(bucket, "a")
        assert figures == {Path(p).name: Path(p).read_bytes() for p in local.figures}
        assert "power-timeline.svg" in figures
        assert sorted(written.figures) == sorted(
            f"{s3_url}/aggregated/figures/a/{name}" for name in figures
        )
        etag = bucket.head("aggregated/a.report.html")
        again = write_bucket_experiment_report(bucket, "a", svg=True)
        assert not again.changed
        assert bucket.head("aggregated/a.report.html") == etag

    def test_a_partial_page_is_a_folders_too(self, s3_url: str, tmp_path: Path) -> None:
        """An experiment missing a marker gets the folder's PARTIAL page."""
        bucket, folder = both(s3_url, tmp_path, "crashed")
        bucket.delete(marker_key("crashed", 1))
        LocalObjects(folder).delete(marker_key("crashed", 1))
        written = write_bucket_experiment_report(bucket, "crashed")
        local = write_experiment_report(folder / "raw" / "crashed")
        assert written.partial and local.partial
        assert bucket.get("aggregated/crashed.report.html") == Path(local.page).read_bytes()

    @pytest.mark.parametrize(("name", "why"), [("nope", "no such experiment"), ("..", "unsafe")])
    def test_no_such_experiment(self, s3_prefix_url: str, name: str, why: str) -> None:
        """An id with nothing under it, or an unsafe one, is an error naming it; nothing is
        written."""
        with pytest.raises(LedgerError, match=why):
            write_url_experiment_report(f"{s3_prefix_url}/raw/{name}")
        assert open_objects(s3_prefix_url).list() == []

    def test_observe_feeds_a_timeline_per_process(self, tmp_path: Path) -> None:
        """``scan_bucket_experiment(observe=...)`` gives each process's new replay cursor the
        observer made for its index, and that observer sees its events (any store)."""
        objects = LocalObjects(tmp_path)
        write_segmented_experiment(objects, "a", processes=3)
        builders: dict[int, TimelineBuilder] = {}

        def observe(index: int) -> Observer:
            builder = builders[index] = TimelineBuilder()
            return builder.feed

        scan = scan_bucket_experiment(objects, "a", observe=observe)
        assert scan.report.is_complete
        assert sorted(builders) == [0, 1, 2]
        for index, builder in builders.items():
            timeline = builder.build(index)
            assert timeline.process_index == index
            assert len(timeline.sample_t) == 15 and len(timeline.request_t) == 60
        assert scan_bucket_experiment(objects, "a").report.is_complete  # no observer: as before


class TestComparisonPage:
    """``aggregated/report.html`` over every result object of a bucket."""

    def test_a_folders_bytes_then_up_to_date(
        self, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After replaying both roots, the pages and the comparison page (linking to them) are
        the folder's bytes; a second run reports every page up to date, no ETag changed."""
        bucket, folder = both(s3_url, tmp_path, "a", "b")
        replay_root(s3_url)
        monkeypatch.setattr(pipeline, "parquet_available", lambda: False)
        replay_root(folder)
        done = write_bucket_root_reports(bucket, ["a", "b"])
        local = write_root_reports(folder, ["a", "b"])
        assert done.problems == [] and done.comparison is not None
        assert done.comparison.page == f"{s3_url}/aggregated/report.html"
        assert done.comparison.changed and all(w.changed for w in done.pages)
        for name in ("report.html", "a.report.html", "b.report.html"):
            assert bucket.get(f"aggregated/{name}") == (folder / "aggregated" / name).read_bytes()
        assert local.comparison is not None
        assert b'href="a.report.html"' in bucket.get("aggregated/report.html")
        etags = {i.key: i.etag for i in bucket.list("aggregated/")}
        again = write_bucket_root_reports(bucket, ["a", "b"])
        assert again.comparison is not None and not again.comparison.changed
        assert not any(w.changed for w in again.pages)
        assert {i.key: i.etag for i in bucket.list("aggregated/")} == etags

    def test_unreadable_results_are_problems(self, s3_url: str, tmp_path: Path) -> None:
        """A result object that does not decode is a problem naming its URL; a complete
        result is preferred over a partial one of the same experiment."""
        bucket, _ = both(s3_url, tmp_path, "a")
        replay_root(s3_url)
        bucket.put("aggregated/a.partial.json", b"{}")  # the complete one is read instead
        bucket.put("aggregated/zz.json", b"not json")
        rows, problems = bucket_comparison_rows(bucket)
        assert [r.experiment_id for r in rows] == ["a"]
        assert len(problems) == 1 and f"{s3_url}/aggregated/zz.json" in problems[0]
        done = write_bucket_root_reports(bucket, [])
        assert done.problems == problems


class TestCommandLine:
    """``energy-ledger report URL`` in a fresh process."""

    def test_partial_page_then_the_root(
        self, s3_url: str, s3_bucket: str, s3_env: dict[str, str]
    ) -> None:
        """An experiment missing a marker: a PARTIAL page, exit 1. The root with
        ``--experiments --svg``: every emitted page, the comparison and the figures, exit 0.
        Nothing is written outside the prefix's ``aggregated/``."""
        bucket = open_objects(s3_url)
        write_segmented_experiment(bucket, "done", processes=PROCESSES)
        write_segmented_experiment(bucket, "crashed", processes=PROCESSES)
        bucket.delete(marker_key("crashed", 1))
        assert cli(s3_env, "replay", s3_url).returncode == 1
        partial = cli(s3_env, "report", f"{s3_url}/raw/crashed", "--json")
        assert partial.returncode == 1, partial.stderr
        page = as_json(partial)
        assert page["partial"] is True and page["exit_code"] == 1
        assert page["page"] == f"{s3_url}/aggregated/crashed.report.html"
        assert b"PARTIAL" in bucket.get("aggregated/crashed.report.html")

        root = cli(s3_env, "report", s3_url, "--experiments", "--svg", "--json")
        assert root.returncode == 0, root.stderr
        done = as_json(root)
        assert done["comparison"]["page"] == f"{s3_url}/aggregated/report.html"
        assert [p["page"] for p in done["pages"]] == [f"{s3_url}/aggregated/done.report.html"]
        assert done["problems"] == [] and done["exit_code"] == 0
        assert all(
            f.startswith(f"{s3_url}/aggregated/figures/done/") for f in done["pages"][0]["figures"]
        )
        assert figures_of(bucket, "done") and figures_of(bucket, "_comparison")

        keys = [info.key for info in open_bucket(f"s3://{s3_bucket}").list()]
        assert keys and all(k.startswith(("root/raw/", "root/aggregated/")) for k in keys)

    def test_not_a_results_root(self, s3_prefix_url: str, s3_env: dict[str, str]) -> None:
        """An empty prefix is no results root: exit 2 and a message saying what to give."""
        proc = cli(s3_env, "report", s3_prefix_url)
        assert proc.returncode == 2
        assert "not a results root" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket/prefix/raw/e1", True),
        ("s3://bucket/raw/e1/", True),
        ("s3://bucket/prefix", False),
        ("s3://bucket/prefix/raw", False),
        ("s3://bucket/prefix/raw/e1/process_0.done", False),
    ],
)
def test_is_experiment_url(url: str, expected: bool) -> None:
    """A URL ending with ``/raw/<id>`` is one experiment; anything else is taken for a root."""
    assert is_experiment_url(url) is expected
