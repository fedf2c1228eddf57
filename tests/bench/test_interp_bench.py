"""The interpolation benchmark: every swscale mode in both layouts, scored against the float reference."""

from __future__ import annotations

from bench import interp
from tests.videos import pattern_video


def test_interp_bench_compares_every_mode_in_both_layouts(tmp_path, tiny_model):
    video = pattern_video(tmp_path / "small.mp4", 2, size="320x180", fps=15)  # 16:9: an odd width at most sizes
    records = interp.main([str(video), "--model", str(tiny_model), "--clips", "2"])
    assert [(r["mode"], r["layout"]) for r in records] == [
        (mode, layout) for mode in interp.MODES for layout in ("planar", "packed")
    ]
    assert all(r["size"] == "320x180" and r["frames"] > 0 and r["ms_per_frame"] > 0 for r in records)
    by = {(r["mode"], r["layout"]): r for r in records}
    # what the agent uses is at least as close to the reference as the packed conversion it replaced
    assert by["BILINEAR", "planar"]["mean_abs_pixel"] <= by["BILINEAR", "packed"]["mean_abs_pixel"] + 0.05
    assert by["BILINEAR", "planar"]["mean_abs_pixel"] < 6
