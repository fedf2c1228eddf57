"""Late fusion of several models' scores (two-stream: RGB and optical flow), as MMAction2 fuses them.

MMAction2's score fusion (``tools/analysis_tools/report_accuracy.py --coefficients``) sums each model's class
probabilities times its coefficient. Here the sum is divided by the coefficients' total — a weighted average, so the
fused scores stay probabilities and thresholds keep their meaning; the ranking is MMAction2's. The models must have
the same labels; their order may differ (each model's columns are put in the first model's order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agent.errors import ConfigError


def label_order(reference: Sequence[str], labels: Sequence[str], names: tuple[str, str]) -> np.ndarray:
    """Indices that put the columns of a model with ``labels`` in ``reference``'s order; a :class:`ConfigError`
    naming both models (``names``) and the labels only one of them has when the two sets differ."""
    if set(labels) != set(reference) or len(labels) != len(reference):
        first, second = names
        only = {first: sorted(set(reference) - set(labels)), second: sorted(set(labels) - set(reference))}
        detail = "; ".join(f"only {name} has {', '.join(map(repr, found))}" for name, found in only.items() if found)
        raise ConfigError(
            f"fusion: models {first} and {second} must have the same labels "
            f"({len(reference)} and {len(labels)} labels{': ' + detail if detail else ', some repeated'})"
        )
    where = {label: i for i, label in enumerate(labels)}
    return np.asarray([where[label] for label in reference], dtype=np.int64)


class Fusion:
    """Weighted average of the probabilities of models ``weights`` names (the first one's label order)."""

    def __init__(self, weights: Mapping[str, float], labels: Mapping[str, Sequence[str]]) -> None:
        if len(weights) < 2:
            raise ConfigError(f"fusion: needs at least two models, got {list(weights)}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(f"fusion: weights must be >= 0 with a positive sum, got {dict(weights)}")
        self.models = list(weights)
        first = self.models[0]
        self.labels = list(labels[first])
        self.weights = np.asarray([weights[m] for m in self.models], dtype=np.float64)
        self.orders = {m: label_order(self.labels, labels[m], (first, m)) for m in self.models}

    def __call__(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """``scores`` ``[..., K]`` per model → fused float32 ``[..., K]`` in the first model's label order."""
        total = sum(
            w * np.asarray(scores[m], np.float64)[..., self.orders[m]]
            for m, w in zip(self.models, self.weights, strict=True)
        )
        return (total / self.weights.sum()).astype(np.float32)
