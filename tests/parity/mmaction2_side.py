"""Runs inside the MMAction2 1.2.0 venv (not ours): build each model with MMAction2 itself, randomise its
weights and BatchNorm statistics, save an MMAction2-style checkpoint and MMAction2's probabilities for a clip.

    python mmaction2_side.py jobs.json

Each job: {"config": <model config dict>, "seed": int, "clip": uint8 [T, H, W, 3] .npy path,
           "format_shape": "NCHW" | "NCTHW", "checkpoint": out path, "probs": out .npy path}
"""

import json
import sys
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

from mmaction.registry import MODELS  # noqa: E402
from mmaction.structures import ActionDataSample  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402


def randomise(model: torch.nn.Module, inputs: torch.Tensor, seed: int) -> None:
    """Random weights; BatchNorm statistics measured on the clip (so activations stay in range), then perturbed."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5 / m.weight.shape[1] ** 0.5)
                if m.bias is not None:  # X3D's fc1 has none
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for m in norms:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.momentum = 1.0  # the next training-mode pass sets the running statistics to the clip's
        model.train()
        data = model.data_preprocessor({"inputs": [inputs], "data_samples": [ActionDataSample()]}, training=False)
        model(data["inputs"], data["data_samples"], mode="tensor")
        for m in norms:
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.2 * std)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.8 + 0.6)
            m.momentum = 0.1
    model.eval()


def main() -> None:
    register_all_modules()
    torch.set_num_threads(2)
    for job in json.load(open(sys.argv[1])):
        model = MODELS.build(job["config"])
        meta = {"seed": np.int64(job["seed"]), "mmaction2": "1.2.0"}  # numpy in meta, as real checkpoints have
        clip = torch.from_numpy(np.load(job["clip"]))  # T H W C, uint8
        if job["format_shape"] == "NCHW":
            inputs = clip.permute(0, 3, 1, 2).contiguous()  # [segments, C, H, W]
        else:
            inputs = clip.permute(3, 0, 1, 2)[None].contiguous()  # [1 view, C, T, H, W]
        randomise(model, inputs, job["seed"])
        with torch.no_grad():
            result = model.test_step({"inputs": [inputs], "data_samples": [ActionDataSample()]})
        torch.save({"meta": meta, "state_dict": model.state_dict()}, job["checkpoint"])
        np.save(job["probs"], result[0].pred_score.numpy())
        print(f"mmaction2: {job['config']['backbone']['type']} done", flush=True)


if __name__ == "__main__":
    main()
