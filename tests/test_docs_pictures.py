"""docs/regions.png is what docs/regions.py draws, from the config docs/agent.md shows (and the agent accepts)."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from PIL import Image

from tests.docs import DOCS, read


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("docs_regions", DOCS / "regions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_picture_is_drawn_from_the_config_the_docs_show(script, tmp_path):
    shown = re.search(r"`docs/regions.png` is drawn by.*?```yaml\n(.*?)```", read(DOCS / "agent.md"), re.S)
    assert shown is not None, "docs/agent.md does not show the picture's config"
    assert shown.group(1) == script.CONFIG
    camera = script.camera()  # valid as the agent reads it
    assert camera.region and camera.mask and camera.zones
    drawn = np.asarray(Image.open(script.draw(tmp_path / "regions.png")).convert("RGB"), dtype=np.int16)
    kept = np.asarray(Image.open(DOCS / "regions.png").convert("RGB"), dtype=np.int16)
    assert drawn.shape == kept.shape == (script.HEIGHT, script.WIDTH, 3)
    assert np.abs(drawn - kept).mean() < 1, "docs/regions.png is out of date: run python docs/regions.py"
