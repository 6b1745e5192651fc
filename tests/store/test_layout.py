"""Tests for store.layout: experiment ids, paths under a root, and staying inside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from energy_ledger.exceptions import LedgerError, UnsafePathError
from energy_ledger.store.layout import (
    LOG_RE,
    MARKER_RE,
    ResultsLayout,
    check_experiment_id,
    experiment_location,
    inside,
    is_valid_experiment_id,
    layout_of_experiment_dir,
    log_name,
    marker_name,
    results_root,
)

VALID_IDS = [
    "a",
    "7",
    "exp-1",
    "llama-8b_tp2.run3",
    "A.b-c_d",
    "x" * 128,
    "run.",
    "0.-",
]

INVALID_IDS = [
    "",
    ".",
    "..",
    "../x",
    "x/..",
    "a/b",
    "a\\b",
    ".hidden",
    "-dash",
    "_under",
    "a..b",
    "ab..",
    "x" * 129,
    "with space",
    "tab\tname",
    "naïve",
    "実験",
    "ｅｘｐ",
    "/abs",
    "a:b",
    "a\x00b",
    "\nexp",
]


class TestExperimentIds:
    """Experiment ids are the safe folder names of docs/format.md."""

    @pytest.mark.parametrize("name", VALID_IDS)
    def test_valid(self, name: str) -> None:
        """A name that follows the rule is accepted and returned unchanged."""
        assert is_valid_experiment_id(name)
        assert check_experiment_id(name) == name

    @pytest.mark.parametrize("name", INVALID_IDS)
    def test_invalid(self, name: str) -> None:
        """A name that breaks the rule is refused with ``UnsafePathError`` naming it."""
        assert not is_valid_experiment_id(name)
        with pytest.raises(UnsafePathError) as info:
            check_experiment_id(name)
        assert repr(name) in str(info.value)

    @pytest.mark.parametrize("name", ["exp\n", "exp-1\n"])
    def test_trailing_newline_is_invalid(self, name: str) -> None:
        """A name ending in a newline is not a valid id."""
        assert not is_valid_experiment_id(name)

    @pytest.mark.parametrize(
        ("regex", "name"),
        [(LOG_RE, "process_0.events.jsonl\n"), (MARKER_RE, "process_0.done\n")],
        ids=["log", "marker"],
    )
    def test_file_name_with_trailing_newline_is_not_a_ledger_file(
        self, regex: object, name: str
    ) -> None:
        """A file name ending in a newline is not a log or a marker."""
        assert not regex.match(name)  # type: ignore[attr-defined]


class TestFileNames:
    """Log and marker names carry the process index in decimal."""

    @pytest.mark.parametrize("index", [0, 1, 7, 15, 123456])
    def test_names_round_trip_through_their_patterns(self, index: int) -> None:
        """``log_name``/``marker_name`` match their patterns, which give back the index."""
        log = LOG_RE.match(log_name(index))
        marker = MARKER_RE.match(marker_name(index))
        assert log is not None and marker is not None
        assert int(log.group(1)) == int(marker.group(1)) == index
        assert log_name(index) == f"process_{index}.events.jsonl"
        assert marker_name(index) == f"process_{index}.done"

    @pytest.mark.parametrize(
        "name",
        [
            "process_01.events.jsonl",
            "process_-1.events.jsonl",
            "process_.events.jsonl",
            "process_0.events.json",
            "process_0.jsonl",
            ".process_0.done.abc.tmp",
            "process_0.done.tmp",
        ],
    )
    def test_other_names_are_not_ledger_files(self, name: str) -> None:
        """Names with leading zeros, signs, other suffixes or temp names are not ledger files."""
        assert not LOG_RE.match(name)
        assert not MARKER_RE.match(name)


class TestResultsLayout:
    """``ResultsLayout`` puts every file where docs/format.md says."""

    def test_paths(self, tmp_path: Path) -> None:
        """Each path is under the root as documented."""
        layout = ResultsLayout.at(tmp_path)
        assert layout.log_path("exp-1", 2) == tmp_path / "raw/exp-1/process_2.events.jsonl"
        assert layout.marker_path("exp-1", 2) == tmp_path / "raw/exp-1/process_2.done"
        assert layout.result_path("exp-1") == tmp_path / "aggregated/exp-1.json"
        assert layout.result_path("exp-1", partial=True) == (
            tmp_path / "aggregated/exp-1.partial.json"
        )
        assert layout.csv_path == tmp_path / "aggregated/results.csv"

    def test_relative_root_is_made_absolute(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative root is resolved against the current folder once."""
        monkeypatch.chdir(tmp_path)
        assert ResultsLayout.at("results").root == tmp_path / "results"

    @pytest.mark.parametrize("name", ["../x", "..", "a/b", ".hidden"])
    def test_unsafe_ids_are_refused(self, tmp_path: Path, name: str) -> None:
        """Every path builder refuses an unsafe id."""
        layout = ResultsLayout.at(tmp_path)
        for build in (
            lambda: layout.experiment_dir(name),
            lambda: layout.log_path(name, 0),
            lambda: layout.marker_path(name, 0),
            lambda: layout.result_path(name),
        ):
            with pytest.raises(UnsafePathError):
                build()

    def test_layout_of_experiment_dir_under_raw(self, tmp_path: Path) -> None:
        """``<root>/raw/<id>`` gives back the root and the id."""
        layout, experiment_id = layout_of_experiment_dir(tmp_path / "raw" / "exp-1")
        assert (layout.root, experiment_id) == (tmp_path, "exp-1")

    def test_layout_of_bare_experiment_dir(self, tmp_path: Path) -> None:
        """A folder outside ``raw/`` is its parent's only experiment."""
        layout, experiment_id = layout_of_experiment_dir(tmp_path / "exp-1")
        assert (layout.root, experiment_id) == (tmp_path, "exp-1")

    def test_layout_of_unsafe_experiment_dir(self, tmp_path: Path) -> None:
        """A folder whose name is not a valid id is refused."""
        with pytest.raises(UnsafePathError):
            layout_of_experiment_dir(tmp_path / "raw" / ".hidden")


class TestInside:
    """``inside`` follows symbolic links to decide whether a path stays under the root."""

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        """A results root with one real experiment folder and a log in it."""
        root = tmp_path / "root"
        (root / "raw" / "exp-1").mkdir(parents=True)
        (root / "raw" / "exp-1" / "process_0.events.jsonl").write_bytes(b"")
        return root

    def test_real_paths(self, root: Path) -> None:
        """The root itself and real files below it are inside."""
        assert inside(root, root)
        assert inside(root, root / "raw" / "exp-1" / "process_0.events.jsonl")
        assert inside(root, root / "raw" / "not-yet-created")

    def test_paths_outside(self, root: Path, tmp_path: Path) -> None:
        """Parents, siblings and ``..`` escapes are outside."""
        assert not inside(root, tmp_path)
        assert not inside(root, root / ".." / "elsewhere")
        assert not inside(root, Path("/"))

    def test_sibling_with_a_common_prefix(self, root: Path, tmp_path: Path) -> None:
        """``<root>2`` is not inside ``<root>`` even though its name starts the same."""
        sibling = tmp_path / "root2"
        sibling.mkdir()
        assert not inside(root, sibling / "x")

    def test_symlink_out_of_the_root(self, root: Path, tmp_path: Path) -> None:
        """A link under the root that points outside it is outside, as is what it leads to."""
        outside = tmp_path / "secret"
        outside.mkdir()
        (outside / "process_0.events.jsonl").write_bytes(b"{}\n")
        link = root / "raw" / "evil"
        link.symlink_to(outside, target_is_directory=True)
        assert not inside(root, link)
        assert not inside(root, link / "process_0.events.jsonl")
        with pytest.raises(UnsafePathError, match="outside the results root"):
            ResultsLayout.at(root).check_inside(link / "process_0.events.jsonl")

    def test_file_symlink_out_of_the_root(self, root: Path, tmp_path: Path) -> None:
        """A log file that is a link to a file outside the root is outside."""
        target = tmp_path / "elsewhere.jsonl"
        target.write_bytes(b"")
        link = root / "raw" / "exp-1" / "process_1.events.jsonl"
        link.symlink_to(target)
        assert not inside(root, link)

    def test_symlink_within_the_root(self, root: Path) -> None:
        """A link that stays under the root is inside."""
        link = root / "raw" / "alias"
        link.symlink_to(root / "raw" / "exp-1", target_is_directory=True)
        assert inside(root, link / "process_0.events.jsonl")
        assert ResultsLayout.at(root).check_inside(link) == link

    def test_root_that_is_itself_a_link(self, root: Path, tmp_path: Path) -> None:
        """When the root is reached through a link, paths below it are still inside."""
        alias = tmp_path / "alias-root"
        alias.symlink_to(root, target_is_directory=True)
        assert inside(alias, alias / "raw" / "exp-1")
        assert inside(alias, root / "raw")
        assert os.path.realpath(alias) == os.path.realpath(root)


class TestOutputs:
    """``aggregated/`` and the files in it must be real, wherever a link would lead."""

    def test_missing_folder_is_created_on_request(self, tmp_path: Path) -> None:
        """Without ``create`` nothing is made; with it the folder appears."""
        layout = ResultsLayout.at(tmp_path)
        assert layout.outputs_dir() == tmp_path / "aggregated"
        assert not (tmp_path / "aggregated").exists()
        assert layout.outputs_dir(create=True).is_dir()

    @pytest.mark.parametrize("target", ["inside", "outside"])
    def test_linked_folder_is_refused(self, tmp_path: Path, target: str) -> None:
        """A link is refused even when it leads to a folder inside the root."""
        root = tmp_path / "root"
        (root / "out").mkdir(parents=True)
        (tmp_path / "elsewhere").mkdir()
        to = root / "out" if target == "inside" else tmp_path / "elsewhere"
        (root / "aggregated").symlink_to(to, target_is_directory=True)
        with pytest.raises(UnsafePathError, match=r"aggregated is a symbolic link \(to "):
            ResultsLayout.at(root).outputs_dir(create=True)

    def test_file_in_the_way(self, tmp_path: Path) -> None:
        """A regular file named ``aggregated`` is a clear error."""
        (tmp_path / "aggregated").write_text("x")
        with pytest.raises(LedgerError, match="it is a file, not a folder"):
            ResultsLayout.at(tmp_path).outputs_dir()

    def test_output_file_checks(self, tmp_path: Path) -> None:
        """A new or regular file passes; a link, a folder or a file elsewhere is refused."""
        layout = ResultsLayout.at(tmp_path)
        folder = layout.outputs_dir(create=True)
        assert layout.check_output_file(folder / "a.json") == folder / "a.json"
        (folder / "b.json").write_text("{}")
        assert layout.check_output_file(folder / "b.json") == folder / "b.json"
        (folder / "c.json").symlink_to(folder / "b.json")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            layout.check_output_file(folder / "c.json")
        (folder / "d.json").mkdir()
        with pytest.raises(UnsafePathError, match="not a regular file"):
            layout.check_output_file(folder / "d.json")
        with pytest.raises(UnsafePathError, match="is not in"):
            layout.check_output_file(tmp_path / "e.json")


class TestUserPaths:
    """A path a user typed is checked, and a near miss gets a hint naming the folder meant."""

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        """A results root with one experiment folder and an aggregated folder."""
        (tmp_path / "root" / "raw" / "exp-1").mkdir(parents=True)
        (tmp_path / "root" / "aggregated").mkdir()
        return tmp_path / "root"

    def test_a_root_is_accepted(self, root: Path) -> None:
        """The folder holding ``raw/`` is a results root."""
        assert results_root(root).root == root

    @pytest.mark.parametrize(
        ("where", "needle"),
        [
            ("raw", "it is the raw/ folder of a results root; did you mean {root}?"),
            ("aggregated", "it is the aggregated/ folder of a results root; did you mean {root}?"),
            ("raw/exp-1", "it looks like an experiment folder; did you mean {root}?"),
            ("nope", "no such results folder"),
        ],
    )
    def test_root_hints(self, root: Path, where: str, needle: str) -> None:
        """``ROOT/raw``, ``ROOT/aggregated`` and an experiment folder point back at ROOT."""
        with pytest.raises(LedgerError) as info:
            results_root(root / where)
        assert needle.format(root=root) in str(info.value)

    def test_folder_without_raw(self, tmp_path: Path) -> None:
        """Any other folder without ``raw/`` is not a root, and says what a root holds."""
        with pytest.raises(LedgerError, match=r"not a results root \(no raw/ folder inside\)"):
            results_root(tmp_path)

    @pytest.mark.parametrize(
        ("where", "needle"),
        [
            ("", "is a results root, not an experiment folder; did you mean {root}/raw/exp-1?"),
            ("raw", "is the raw/ folder of a results root, not an experiment folder; "
                    "did you mean {root}/raw/exp-1?"),
        ],
    )  # fmt: skip
    def test_experiment_hints(self, root: Path, where: str, needle: str) -> None:
        """A root or its ``raw/`` given where an experiment folder belongs names an experiment."""
        with pytest.raises(LedgerError) as info:
            experiment_location(root / where if where else root)
        assert needle.format(root=root) in str(info.value)

    def test_experiment_folder_is_accepted(self, root: Path) -> None:
        """``ROOT/raw/<id>`` gives the root and the id."""
        layout, experiment_id = experiment_location(root / "raw" / "exp-1")
        assert (layout.root, experiment_id) == (root, "exp-1")
