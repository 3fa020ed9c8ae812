"""What the lab tests share: their delay scale."""

from __future__ import annotations

# Small delays keep the suite quick; the assertions count round trips, they never time them.
LAB_SCALE = 0.05
