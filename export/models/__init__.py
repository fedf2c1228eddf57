"""Action-recognition models, MMAction2-compatible in parameter names and numerics."""

from export.models.zoo import (
    ARCHS,
    Arch,
    Sampling,
    build_model,
    i3d_r50,
    slowfast_r50_4x16,
    slowfast_r50_8x8,
    slowonly_r50_4x16,
    slowonly_r50_8x8,
    tsn_r50,
)

__all__ = [
    "ARCHS",
    "Arch",
    "Sampling",
    "build_model",
    "i3d_r50",
    "slowfast_r50_4x16",
    "slowfast_r50_8x8",
    "slowonly_r50_4x16",
    "slowonly_r50_8x8",
    "tsn_r50",
]
