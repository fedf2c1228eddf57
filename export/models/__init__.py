"""Action-recognition and AVA-style action-detection models, MMAction2-compatible in parameter names and numerics."""

from export.models.zoo import (
    ARCHS,
    PERSON_ARCHS,
    Arch,
    Sampling,
    ava_slowfast_r50_4x16,
    ava_slowfast_r50_8x8,
    ava_slowonly_r50_4x16,
    ava_slowonly_r50_8x8,
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
    "PERSON_ARCHS",
    "Arch",
    "Sampling",
    "ava_slowfast_r50_4x16",
    "ava_slowfast_r50_8x8",
    "ava_slowonly_r50_4x16",
    "ava_slowonly_r50_8x8",
    "build_model",
    "i3d_r50",
    "slowfast_r50_4x16",
    "slowfast_r50_8x8",
    "slowonly_r50_4x16",
    "slowonly_r50_8x8",
    "tsn_r50",
]
