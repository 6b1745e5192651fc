"""Section 1's comparison with a baseline revision: this tree's replay against an older one's.

The baseline's ``src/`` is extracted with ``git archive`` into the bench's temporary folder; each
timed replay runs in a fresh interpreter importing one tree, the trees alternate and the order
flips every round. See "Replay against the revision before the refactor" in docs/performance.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench_logs import BigLog
from bench_report import Report, Sizes, verdict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE_REF = "1c01940"  # the last commit before issue 8 moved the replay into core/
BASELINE_TARGET = 1.05  # new/old median time: not slower than before, 5 % allowed for noise

# One timed replay in a fresh interpreter whose PYTHONPATH is one tree's src/. The clock covers
# open + replay_stream only (no interpreter start, no import); the tree is checked to be the one
# imported, since an installed copy of the package would otherwise be measured silently.
REPLAY_CHILD = """
import json, sys, time
from pathlib import Path
src, path = Path(sys.argv[1]).resolve(), sys.argv[2]
try:
    from energy_ledger.core.replay import replay_stream
    api = "energy_ledger.core.replay"
except ModuleNotFoundError as exc:
    # Only a tree from before the subpackages falls back; a broken import in core/ is an error.
    if exc.name not in ("energy_ledger.core", "energy_ledger.core.replay"):
        raise
    from energy_ledger.replay import replay_stream
    api = "energy_ledger.replay"
import energy_ledger
where = Path(energy_ledger.__file__).resolve()
if src not in where.parents:
    sys.exit(f"imported energy_ledger from {where}, not from {src}")
t0 = time.perf_counter()
with open(path, "rb") as fh:
    cursor = replay_stream(fh)
sec = time.perf_counter() - t0
print(json.dumps({"sec": sec, "lines": cursor.lines, "requests": cursor.state.requests,
                  "api": api}))
"""


class BaselineError(Exception):
    """A tree to compare could not be extracted or could not replay; the message says why."""


def git(*args: str) -> bytes:
    """Run ``git -C REPO ARGS``; its stdout, or BaselineError with git's own message."""
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False)
    except OSError as exc:
        raise BaselineError(f"git could not run ({exc})") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BaselineError(f"git {args[0]}: {said[-1] if said else f'exit {proc.returncode}'}")
    return proc.stdout


def extract_src(ref: str, dest: Path) -> tuple[Path, str]:
    """``git archive REF src | tar -x -C dest``: the tree's ``src/`` folder and its short hash.

    No worktree and no network: the files come from the local object store and land under the
    bench's temporary folder, which is removed at the end of the run.
    """
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").decode().strip()
    except BaselineError as exc:
        try:
            shallow = git("rev-parse", "--is-shallow-repository").strip() == b"true"
        except BaselineError:
            raise BaselineError(f"{REPO} is not a git checkout ({exc})") from exc
        hint = " (a shallow clone: `git fetch --unshallow`)" if shallow else ""
        raise BaselineError(f"revision {ref!r} not found in {REPO}{hint}") from exc
    short = git("rev-parse", "--short", commit).decode().strip()
    archive = git("archive", commit, "src")
    dest.mkdir(parents=True)
    try:
        tar = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, capture_output=True,
                             check=False)  # fmt: skip
    except OSError as exc:
        raise BaselineError(f"tar could not run ({exc})") from exc
    if tar.returncode != 0 or not (dest / "src" / "energy_ledger").is_dir():
        said = tar.stderr.decode(errors="replace").strip()
        raise BaselineError(f"revision {short} has no src/energy_ledger to extract {said}".strip())
    return dest / "src", short


def replay_in_tree(src: Path, log: Path, cwd: Path) -> dict[str, Any]:
    """Replay ``log`` once in a fresh interpreter importing the package from ``src``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGY_LEDGER_")}
    env["PYTHONPATH"] = str(src)
    # -P: no cwd or script folder on sys.path, so only PYTHONPATH decides which tree is imported.
    proc = subprocess.run([sys.executable, "-P", "-c", REPLAY_CHILD, str(src), str(log)],
                          capture_output=True, text=True, env=env, cwd=cwd,
                          check=False)  # fmt: skip
    if proc.returncode != 0:
        said = proc.stderr.strip().splitlines()
        print("\n".join(f"    | {line}" for line in said[-15:]), file=sys.stderr)
        raise BaselineError(f"replay with {src} failed: {said[-1] if said else proc.returncode}")
    return dict(orjson.loads(proc.stdout.strip().splitlines()[-1]))


def bench_baseline(
    report: Report, sizes: Sizes, log: BigLog, work: Path, ref: str, candidate_ref: str | None
) -> None:
    """Replay alone, this tree against revision ``ref``, on section 1's log, in subprocesses.

    Each timed run is its own interpreter (old and new never share a process, so neither warms
    or fragments the other's heap); runs alternate and the order flips every round.
    """
    sec = "1 replay"
    if ref.lower() == "none":
        report.add(sec, "vs a baseline revision", "skipped (--baseline-ref none)")
        return
    try:
        old_src, old_name = extract_src(ref, work / "tree-baseline")
        if candidate_ref is None:
            new_src, new_name = REPO / "src", "working tree"
        else:
            new_src, new_name = extract_src(candidate_ref, work / "tree-candidate")
    except BaselineError as exc:
        print(f"bench: replay vs a baseline revision skipped: {exc}", file=sys.stderr)
        report.add(sec, f"vs revision {ref}", f"skipped: {exc}")
        return
    trees = {"new": new_src, "old": old_src}
    times: dict[str, list[float]] = {"new": [], "old": []}
    folded: dict[str, set[tuple[int, int]]] = {"new": set(), "old": set()}
    apis: dict[str, str] = {}
    try:
        for r in range(sizes.baseline_rounds):
            for name in ("new", "old") if r % 2 == 0 else ("old", "new"):
                out = replay_in_tree(trees[name], log.path, work)
                times[name].append(float(out["sec"]))
                folded[name].add((int(out["lines"]), int(out["requests"])))
                apis[name] = str(out["api"])
    except BaselineError as exc:
        print(f"bench: replay vs {old_name} failed: {exc}", file=sys.stderr)
        report.add(sec, f"vs revision {old_name}", f"error: {exc}", f"new/old <= {BASELINE_TARGET}",
                   "FAIL")  # fmt: skip
        return
    best = {name: min(ts) for name, ts in times.items()}
    median = {name: statistics.median(ts) for name, ts in times.items()}
    ratio, ratio_best = median["new"] / median["old"], best["new"] / best["old"]
    same = len(folded["new"]) == 1 and folded["new"] == folded["old"]
    if not same:
        print(f"bench: ERROR: the trees folded different (lines, requests): {new_name} "
              f"{sorted(folded['new'])}, {old_name} {sorted(folded['old'])}",
              file=sys.stderr)  # fmt: skip
    n = sizes.baseline_rounds
    report.add(sec, f"replay_stream alone, {new_name} vs {old_name}, {log.events:,} events, "
               f"{n} run{'s' if n > 1 else ''} each, one process per run",
               f"new best {best['new']:.3f} s, median {median['new']:.3f} s; "
               f"old best {best['old']:.3f} s, median {median['old']:.3f} s",
               figures={"ref": ref, "baseline": old_name, "candidate": new_name,
                        "times_sec": times, "apis": apis,
                        "lines_requests": {k: sorted(v) for k, v in folded.items()}})  # fmt: skip
    report.add(sec, f"vs {old_name} ({median['old']:.2f} s), replay_stream alone",
               f"new/old {ratio:.3f} (best {ratio_best:.3f})"
               + ("" if same else "; ERROR: different lines/requests folded"),
               f"new/old <= {BASELINE_TARGET}", verdict(same and ratio <= BASELINE_TARGET),
               figures={"ratio": ratio, "ratio_best": ratio_best, "median_sec": median,
                        "best_sec": best, "same_fold": same})  # fmt: skip
