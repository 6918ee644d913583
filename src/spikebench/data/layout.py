"""How one sample is seen as an image (C, H, W), by attacks and by backdoor triggers."""

from __future__ import annotations

import math


def image_layout(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """How attacks and triggers see one sample of shape ``sample_shape``: (C, H, W).

    ``[..., H, W]`` -> (product of the leading dims, H, W) (images [C, H, W], row sequences [T, F],
    event frames [T, P, H, W]); a flat vector of a square number d of features -> (1, sqrt d, sqrt d);
    any other flat vector -> (1, 1, d).
    """
    if len(sample_shape) >= 2:
        return (math.prod(sample_shape[:-2]), sample_shape[-2], sample_shape[-1])
    d = sample_shape[0] if sample_shape else 1
    r = math.isqrt(d)
    return (1, r, r) if r * r == d else (1, 1, d)
