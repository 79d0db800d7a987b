"""Matplotlib helpers of the report: bare figures rendered by Agg, PNGs embedded in HTML.

No pyplot: a :class:`~matplotlib.figure.Figure` made directly has no global state and needs
no display, so training can draw from any thread or process.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["figure", "img_tag", "png", "sample_rows", "segment_colour"]


def figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A bare figure of ``width`` x ``height`` inches with one axes."""
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot()


def png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (110 dpi, trimmed to its content)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def img_tag(data: bytes, alt: str) -> str:
    """An ``<img>`` holding the PNG ``data`` itself (base64), so the page needs nothing else."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def segment_colour(segment: int) -> tuple[float, float, float, float]:
    """Segment ``segment``'s colour (RGBA), the same in every plot (tab10, cycling past 10)."""
    red, green, blue, alpha = matplotlib.colormaps["tab10"](segment % 10)
    return (float(red), float(green), float(blue), float(alpha))


def sample_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted row indices of at most ``limit`` of ``n`` rows: all, or a seeded sample."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
