"""Input resolutions as the paper writes them: ``HxW`` (``64x48`` is 64 high, 48 wide)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lrpose_bench.errors import ConfigError

#: heatmaps are 1/4 of the input, as in HRNet/SimpleBaseline
HEATMAP_STRIDE = 4
#: the fewest heatmap pixels per side: UDP's unbiased transform measures in unit lengths, the side
#: minus one (``transforms.input_to_heatmap_scale``: (w-1)/(W-1)), which is zero for a 1-pixel side
MIN_HEATMAP_SIDE = 2

_PATTERN = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Resolution:
    """A network input size; ``height`` and ``width`` in pixels, both multiples of 4 and at least
    ``4 * MIN_HEATMAP_SIDE`` (8), so each heatmap side has a unit length to measure in."""

    height: int
    width: int

    @classmethod
    def parse(cls, text: str) -> Resolution:
        match = _PATTERN.match(str(text))
        if not match:
            raise ConfigError(f"malformed resolution {text!r}: write it as HxW, for example 64x48 or 256x192")
        height, width = int(match.group(1)), int(match.group(2))
        if height <= 0 or width <= 0 or height % HEATMAP_STRIDE or width % HEATMAP_STRIDE:
            raise ConfigError(
                f"resolution {text!r} must be positive multiples of {HEATMAP_STRIDE} "
                "(the heatmap is 1/4 of the input), for example 64x48"
            )
        smallest = HEATMAP_STRIDE * MIN_HEATMAP_SIDE
        if min(height, width) < smallest:
            raise ConfigError(
                f"resolution {text!r} gives a {height // HEATMAP_STRIDE}x{width // HEATMAP_STRIDE} heatmap; "
                f"each side needs at least {MIN_HEATMAP_SIDE} heatmap pixels (the unbiased coordinate "
                f"transform divides by the side minus one), so at least {smallest} input pixels: for example 64x48"
            )
        return cls(height, width)

    @property
    def heatmap(self) -> tuple[int, int]:
        """Heatmap size as (height, width)."""
        return self.height // HEATMAP_STRIDE, self.width // HEATMAP_STRIDE

    @property
    def size(self) -> tuple[int, int]:
        """Input size as (height, width)."""
        return self.height, self.width

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


def parse_resolution_list(text: str) -> list[Resolution]:
    """Parse ``"64x48,128x96"``; duplicates are kept once, order preserved."""
    items = [item for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError("no resolution given: pass for example --res 64x48,128x96")
    result: list[Resolution] = []
    for item in items:
        res = Resolution.parse(item)
        if res not in result:
            result.append(res)
    return result
