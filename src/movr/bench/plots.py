"""What every benchmark's PNG shares: how a finished figure is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path) -> None:
    """Lay out and write a figure, then close it: pyplot keeps an unclosed figure alive (and warns past
    twenty), which a report drawing many plots would hit."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
