"""Screenshots of the report pages for docs/: a simulated sweep, its pages, headless Chromium.

Builds a demo results root in a temporary folder (a simulated batch-size sweep of six 4-GPU
experiments, as ``make demo`` writes it, plus one crashed run recovered as a partial result),
writes every experiment page and the comparison page, and saves a full-page screenshot of one
experiment page and of the comparison page::

    .venv/bin/python scripts/report_screenshots.py [--out docs] [--keep DIR]

Needs playwright (Python) and a Chromium (Debian's ``chromium``, or ``--chromium PATH``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from energy_ledger.pipeline import recover_experiment, replay_root
from energy_ledger.report.build import write_comparison_report, write_experiment_report
from energy_ledger.simulate import simulate

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

SHOWN = "sim-0002"
"""The experiment whose page is photographed."""
EXPERIMENT_WIDTH_PX = 1400
COMPARISON_WIDTH_PX = 1900
"""Viewport widths: the comparison table is wide (it scrolls sideways in narrower windows)."""


def build_demo(root: Path) -> tuple[list[Path], Path]:
    """Simulate the sweep under ``root``, aggregate it, write every page; return the pages."""
    simulate(root, experiments=6, processes=4, requests=300, sweep=True)
    simulate(root, processes=4, requests=200, seed=99, prefix="crashed", crash=1, sweep=True)
    replay_root(root)
    recover_experiment(root / "raw" / "crashed-0000")
    pages = [
        write_experiment_report(directory).page
        for directory in sorted((root / "raw").iterdir())
        if directory.is_dir()
    ]
    return pages, write_comparison_report(root).page


def screenshot(pages: dict[Path, tuple[Path, int]], chromium: str) -> None:
    """Save a full-page PNG of each page (``{page: (png, viewport width)}``).

    Fails on any console error or page error.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            for source, (png, width) in pages.items():
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(source.as_uri())
                page.wait_for_load_state("load")
                png.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(png), full_page=True)
                print(f"{png} ({png.stat().st_size:,} bytes) from {source.name}")
            if errors:
                raise SystemExit(f"console errors: {errors}")
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    parser.add_argument("--keep", type=Path, help="build the demo root here and keep it")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="report-demo-") as tmp:
        root = args.keep or Path(tmp) / "results"
        if root.exists():
            parser.error(f"{root} exists; pass a new folder to --keep")
        experiment_pages, comparison = build_demo(root)
        shown = next(p for p in experiment_pages if p.name.startswith(SHOWN))
        screenshot(
            {
                shown: (args.out / "report-experiment.png", EXPERIMENT_WIDTH_PX),
                comparison: (args.out / "report-comparison.png", COMPARISON_WIDTH_PX),
            },
            args.chromium,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
