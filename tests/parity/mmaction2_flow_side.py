"""Runs inside the MMAction2 1.2.0 venv (not ours), for the flow models: optical flow made by MMAction2's own
``tools/misc/flow_extraction.py`` functions (``generate_flow``, ``flow_to_img``) on frames read as that script reads
them (``cv2.VideoCapture``, BGR), and each flow model built from its MMAction2 config, randomised as
``mmaction2_side.py`` does, run on MMAction2's flow; plus the configs' full-size keys and parameter counts.

    python mmaction2_flow_side.py request.json

request: {"video": path,
          "flows": [{"method": "tvl1" | "farneback", "bound": 20, "pairs": [[i, j], ...], "out": .npy}, ...],
          "jobs": [{"config": path under mmaction/.mim/configs, "overrides": {...}, "seed": int,
                    "flow": uint8 [T, H, W, 2] .npy (MMAction2's flow, sampled and cropped), "clip_len": int,
                    "format_shape": "NCHW" | "NCTHW", "checkpoint": out path, "probs": out .npy}, ...],
          "keys": {name: config path}, "keys_out": .json}

Each ``flows`` entry writes uint8 ``[pairs, H, W, 2]``: the x and y images ``extract_dense_flow`` would write for
the flow from frame i to frame j (0-based, in the order the video reads).
"""

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

warnings.filterwarnings("ignore")

import mmaction  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402
from mmaction2_archs_side import report_keys, run_job  # noqa: E402  (this folder is on sys.path)

TOOL = Path(mmaction.__file__).parent / ".mim" / "tools" / "misc" / "flow_extraction.py"


def flow_extraction():
    """MMAction2's flow_extraction.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("flow_extraction", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_frames(video: str, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames (BGR), read as ``extract_dense_flow`` reads the video."""
    capture = cv2.VideoCapture(video)
    frames, index = {}, 0
    ok, frame = capture.read()
    while ok and index <= max(wanted):
        if index in wanted:
            frames[index] = frame
        index += 1
        ok, frame = capture.read()
    return frames


def inputs_of(flow: np.ndarray, clip_len: int, format_shape: str) -> torch.Tensor:
    """MMAction2's ``FormatShape`` for flow: NCHW stacks each segment's ``clip_len`` fields into ``2·clip_len``
    channels (x, y interleaved); NCTHW gives one view ``[1, 2, T, H, W]``."""
    imgs = torch.from_numpy(flow)  # T H W 2
    if format_shape == "NCHW":
        imgs = imgs.permute(0, 3, 1, 2)  # M x C x H x W
        return imgs.reshape(-1, clip_len * imgs.shape[1], *imgs.shape[2:]).contiguous()
    return imgs.permute(3, 0, 1, 2)[None].contiguous()


def main() -> None:
    register_all_modules()
    torch.set_num_threads(2)
    request = json.load(open(sys.argv[1]))
    tool = flow_extraction()
    for job in request.get("flows", []):
        pairs = [tuple(p) for p in job["pairs"]]
        frames = read_frames(request["video"], {i for pair in pairs for i in pair})
        out = []
        for i, j in pairs:
            (flow,) = tool.generate_flow([frames[i], frames[j]], method=job["method"])
            x = tool.flow_to_img(flow[:, :, 0], job["bound"])
            y = tool.flow_to_img(flow[:, :, 1], job["bound"])
            out.append(np.stack([x, y], axis=-1))
        np.save(job["out"], np.stack(out))
        print(f"mmaction2: {len(pairs)} {job['method']} flow fields", flush=True)
    for job in request.get("jobs", []):
        run_job(job, inputs_of(np.load(job["flow"]), job["clip_len"], job["format_shape"]))
    report_keys(request)


if __name__ == "__main__":
    main()
