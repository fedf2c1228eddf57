"""agent.fusion: late fusion of several models' probabilities (two-stream), as MMAction2's score fusion ranks them."""

from __future__ import annotations

import numpy as np
import pytest

from agent.errors import ConfigError
from agent.fusion import Fusion, label_order


def test_a_weighted_average_ranks_as_mmaction2s_weighted_sum():
    rgb = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], np.float32)
    flow = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], np.float32)
    fusion = Fusion({"rgb": 1.0, "flow": 1.5}, {"rgb": ["a", "b", "c"], "flow": ["a", "b", "c"]})
    fused = fusion({"rgb": rgb, "flow": flow})
    mmaction2 = 1.0 * rgb + 1.5 * flow  # report_accuracy.py --coefficients 1 1.5: the weighted sum
    np.testing.assert_allclose(fused, mmaction2 / 2.5, rtol=1e-6)
    assert fused.dtype == np.float32 and (fused.argmax(1) == mmaction2.argmax(1)).all()
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, rtol=1e-6)  # still probabilities


def test_labels_in_another_order_are_put_in_the_first_models_order():
    fusion = Fusion({"rgb": 1.0, "flow": 1.0}, {"rgb": ["a", "b", "c"], "flow": ["c", "a", "b"]})
    assert fusion.labels == ["a", "b", "c"]
    fused = fusion({"rgb": np.array([1.0, 0.0, 0.0]), "flow": np.array([0.0, 1.0, 0.0])})  # flow says "a"
    np.testing.assert_allclose(fused, [1.0, 0.0, 0.0])


def test_different_labels_are_a_clear_error():
    with pytest.raises(ConfigError) as err:
        Fusion({"rgb": 1.0, "flow": 1.0}, {"rgb": ["a", "b", "c"], "flow": ["a", "b", "d"]})
    message = str(err.value)
    assert "models rgb and flow must have the same labels" in message
    assert "only rgb has 'c'" in message and "only flow has 'd'" in message
    with pytest.raises(ConfigError, match="some repeated"):
        label_order(["a", "b"], ["a", "a", "b"], ("x", "y"))


@pytest.mark.parametrize(
    ("weights", "needle"), [({"rgb": 1.0}, "at least two"), ({"rgb": 0.0, "flow": 0.0}, "positive sum")]
)
def test_weights_are_checked(weights, needle):
    with pytest.raises(ConfigError, match=needle):
        Fusion(weights, {m: ["a"] for m in weights})
