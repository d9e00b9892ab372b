"""The model grid: where a model sees the brain. Standard library only (the card holds one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelGrid:
    """MNI152 space, identity direction in LPS, (z, y, x) arrays; io.template.grid_image makes its image."""

    spacing_mm: float = 2.0
    size_xyz: tuple[int, int, int] = (96, 96, 80)
    origin_lps: tuple[float, float, float] = (-95.0, -78.0, -74.0)

    def to_dict(self) -> dict:
        return {"space": "MNI152NLin2009aSym", "direction": "LPS identity",
                "spacing_mm": self.spacing_mm, "size_xyz": list(self.size_xyz),
                "origin_lps": list(self.origin_lps)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelGrid":
        return cls(float(d["spacing_mm"]), tuple(d["size_xyz"]), tuple(d["origin_lps"]))
