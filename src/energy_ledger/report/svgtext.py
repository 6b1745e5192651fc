"""SVG text as matplotlib writes it, made ready to inline into a page (pure string work).

matplotlib writes a standalone document: an XML declaration, a fixed size in points, six
decimals and one ``L`` per point of a path, and numbered group ids (``axes_1``) that repeat
between the figures of one page. ``inline_ready`` keeps the ``<svg>`` element alone, lets it
scale with its container, drops those ids and shortens path data, which halves a power figure
without moving anything on screen.
"""

from __future__ import annotations

import re

PATH_DECIMALS = 1
"""Decimals kept in SVG path data (the unit is the point: 0.1 pt is below a pixel at 2x)."""
_ROOT_SIZE = re.compile(r'\s(width|height)="([0-9.]+)pt"')
_PATH_DATA = re.compile(r'\sd="([^"]*)"')
_AUTO_GROUP_ID = re.compile(r'<g id="[A-Za-z][A-Za-z0-9.]*_\d+">')


def inline_ready(svg: str) -> str:
    """The ``<svg>`` element alone, scaling with its container, without numbered group ids.

    The root's size in pt becomes ``width="100%"`` and a ``max-width`` of the same size (the
    figure never grows past the size its fonts were laid out for); the height follows from the
    ``viewBox``.
    """
    svg = svg[svg.index("<svg") :]
    end = svg.index(">")
    root, rest = svg[:end], svg[end:]
    sizes = dict(_ROOT_SIZE.findall(root))
    root = _ROOT_SIZE.sub("", root)
    style = f"max-width: {sizes['width']}pt; height: auto" if "width" in sizes else "height: auto"
    root = root.replace("<svg", f'<svg width="100%" style="{style}"', 1)
    rest = _PATH_DATA.sub(lambda m: f' d="{compact_path(m.group(1))}"', rest)
    return root + _AUTO_GROUP_ID.sub("<g>", rest)


def compact_path(d: str) -> str:
    """SVG path data with coordinates to ``PATH_DECIMALS`` places and no repeated ``L``.

    Matplotlib writes six decimals and one ``L`` per point, some 60 kB for a power line of
    2,400 points. The unit is the point (1/72 in): a tenth of one is below a pixel even on a
    2x screen. Coordinate pairs after an ``M`` or ``L`` are lines without the letter (SVG
    path grammar). Together these halve a power figure without moving anything on screen.
    """
    out: list[str] = []
    last = ""
    for token in d.split():
        if token.isalpha():
            if token == "L" and last in ("M", "L"):
                continue
            last = token
            out.append(token)
        else:
            text = f"{float(token):.{PATH_DECIMALS}f}".rstrip("0").rstrip(".")
            out.append("0" if text in ("-0", "") else text)
    return " ".join(out)


__all__ = ["PATH_DECIMALS", "compact_path", "inline_ready"]
