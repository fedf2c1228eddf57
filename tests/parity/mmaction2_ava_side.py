"""Runs inside the MMAction2 1.2.0 venv (not ours): the action part of an MMAction2 AVA detector, built from
MMAction2's own classes and config, with random weights and BatchNorm statistics; saves an MMAction2-style
checkpoint and MMAction2's per-box probabilities.

    python mmaction2_ava_side.py jobs.json
    python mmaction2_ava_side.py --keys out.json  # tests/export/data/mmaction2_1.2.0_ava_state_dict_keys.json

Each job: {"config": AVA config path relative to mmaction/.mim/configs, "seed": int,
           "clip": uint8 [T, H, W, 3] .npy (SlowFast: the fast-rate frames), "rois": float [K, 5] .npy
           (clip index, x1, y1, x2, y2 in pixels), "checkpoint": out path, "probs": out .npy path (sigmoid [K, 81]),
           "torchvision_python": an interpreter with torchvision}

The AVA detector is an mmdet ``FastRCNN``; mmdet is not installed, so the backbone (``MODELS``), the
``SingleRoIExtractor3D`` and the ``BBoxHeadAVA`` are assembled here under the detector's key names. mmcv-lite has
no ``mmcv.ops.RoIAlign``: a stand-in takes the same arguments and calls ``torchvision.ops.roi_align`` with them
(aligned, sampling ratio, spatial scale, output size). torchvision cannot be loaded next to this venv's CPU torch
(no matching wheel here), so that one call runs in the interpreter given by the job (ours), on .npy files.
``bbox_head.py`` imports mmdet's ``SamplingResult`` for a type annotation only; an empty stand-in module provides it.
"""

import json
import subprocess
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")

import mmaction  # noqa: E402
from mmaction.registry import MODELS  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402

TORCHVISION_PYTHON = sys.executable  # replaced by the job's interpreter
ROI_ALIGN = """
import json, sys
import numpy as np, torch
from torchvision.ops import roi_align
work = sys.argv[1]
args = json.loads(sys.argv[2])
x, rois = (torch.from_numpy(np.load(f"{work}/{name}.npy")) for name in ("input", "rois"))
np.save(f"{work}/output.npy", roi_align(x, rois, **args).numpy())
"""


class RoIAlign(nn.Module):
    """Stand-in for ``mmcv.ops.RoIAlign`` (avg mode): torchvision's ``roi_align`` with the same arguments."""

    def __init__(self, output_size, spatial_scale, sampling_ratio=0, pool_mode="avg", aligned=True):
        super().__init__()
        assert pool_mode == "avg", "torchvision's roi_align averages"
        self.args = {
            "output_size": output_size,
            "spatial_scale": spatial_scale,
            "sampling_ratio": sampling_ratio,
            "aligned": aligned,
        }

    def forward(self, x, rois):
        with tempfile.TemporaryDirectory() as work:
            np.save(f"{work}/input.npy", x.detach().float().numpy())
            np.save(f"{work}/rois.npy", rois.detach().float().numpy())
            subprocess.run([TORCHVISION_PYTHON, "-c", ROI_ALIGN, work, json.dumps(self.args)], check=True)
            return torch.from_numpy(np.load(f"{work}/output.npy"))


class RoIPool(nn.Module):  # imported next to RoIAlign; unused by the AVA configs
    pass


def install_stand_ins() -> None:
    ops = types.ModuleType("mmcv.ops")
    ops.RoIAlign, ops.RoIPool = RoIAlign, RoIPool
    sys.modules["mmcv.ops"] = ops
    for name in ("mmdet", "mmdet.models", "mmdet.models.task_modules", "mmdet.models.task_modules.samplers"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["mmdet.models.task_modules.samplers"].SamplingResult = object


def build(config: dict) -> nn.Module:
    """``backbone`` + ``roi_head.{bbox_roi_extractor, bbox_head}``, the names FastRCNN gives them."""
    from mmaction.models.roi_heads.bbox_heads.bbox_head import BBoxHeadAVA
    from mmaction.models.roi_heads.roi_extractors.single_straight3d import SingleRoIExtractor3D

    def args(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k != "type"}

    backbone = dict(config["backbone"], type=config["backbone"]["type"].removeprefix("mmaction."))
    model = nn.Module()
    model.backbone = MODELS.build(backbone)
    model.roi_head = nn.Module()
    model.roi_head.bbox_roi_extractor = SingleRoIExtractor3D(**args(config["roi_head"]["bbox_roi_extractor"]))
    model.roi_head.bbox_head = BBoxHeadAVA(**args(config["roi_head"]["bbox_head"]))
    return model


def logits(model: nn.Module, inputs: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """What ``AVARoIHead`` does at test time: backbone, RoI features, ``bbox_head`` → logits."""
    feats = model.backbone(inputs)
    roi_feats, _ = model.roi_head.bbox_roi_extractor(feats, rois)
    return model.roi_head.bbox_head(roi_feats)


def randomise(model: nn.Module, inputs: torch.Tensor, rois: torch.Tensor, seed: int) -> None:
    """Random weights; BatchNorm statistics measured on the clip, then perturbed; ``fc_cls`` scaled so that the
    probabilities spread over (0, 1) instead of saturating."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
        for m in norms:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.momentum = 1.0  # the next training-mode pass sets the running statistics to the clip's
        model.backbone.train()
        model.backbone(inputs)
        for m in norms:
            std = m.running_var.sqrt()
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.2 * std)
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.8 + 0.6)
            m.momentum = 0.1
        model.eval()
        fc = model.roi_head.bbox_head.fc_cls
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g))
        fc.bias.zero_()
        raw = logits(model, inputs, rois)
        fc.weight.mul_(2.0 / raw.std())
        fc.bias.copy_(torch.randn(fc.bias.shape, generator=g) * 0.5 - raw.mean() * 2.0 / raw.std())


KEY_CONFIGS = {  # name in the key file -> AVA config
    "slowonly_r50_4x16_ava21": "detection/slowonly/slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py",
    "slowonly_r50_8x8_ava_kinetics": "detection/slowonly/slowonly_k400-pre-r50_8xb8-8x8x1-10e_ava-kinetics-rgb.py",
    "slowfast_r50_4x16_ava21": "detection/slowfast/slowfast_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py",
    "slowfast_r50_8x8_ava21": "detection/slowfast/slowfast_kinetics400-pretrained-r50_8xb8-8x8x1-20e_ava21-rgb.py",
}


def write_keys(configs: Path, out: str) -> None:
    """Key -> shape and parameter count of each AVA config's action part, one state-dict key per line."""
    lines = []
    for name, config in KEY_CONFIGS.items():
        model = build(Config.fromfile(str(configs / config)).model.to_dict())
        params = sum(p.numel() for p in model.parameters())
        keys = ",\n".join(f"  {json.dumps(k)}: {list(v.shape)}" for k, v in model.state_dict().items())
        head = f'{{"config": {json.dumps("configs/" + config)}, "num_params": {params}, "state_dict": {{'
        lines.append(f" {json.dumps(name)}: {head}\n{keys}\n }}}}")
    Path(out).write_text("{\n" + ",\n".join(lines) + "\n}\n")


def main() -> None:
    global TORCHVISION_PYTHON
    register_all_modules()
    install_stand_ins()
    torch.set_num_threads(2)
    configs = Path(mmaction.__file__).parent / ".mim" / "configs"
    if sys.argv[1] == "--keys":
        write_keys(configs, sys.argv[2])
        return
    for job in json.load(open(sys.argv[1])):
        TORCHVISION_PYTHON = job["torchvision_python"]
        config = Config.fromfile(str(configs / job["config"])).model.to_dict()
        mean = torch.tensor(config["data_preprocessor"]["mean"]).view(3, 1, 1, 1)
        std = torch.tensor(config["data_preprocessor"]["std"]).view(3, 1, 1, 1)
        model = build(config)
        clip = torch.from_numpy(np.load(job["clip"]))  # T H W C, uint8
        inputs = ((clip.permute(3, 0, 1, 2).float() - mean) / std)[None]  # ActionDataPreprocessor, NCTHW
        rois = torch.from_numpy(np.load(job["rois"])).float()
        randomise(model, inputs, rois, job["seed"])
        with torch.no_grad():
            probs = logits(model, inputs, rois).sigmoid()  # BBoxHeadAVA._predict_by_feat_single, multilabel
        meta = {"seed": np.int64(job["seed"]), "mmaction2": "1.2.0"}  # numpy in meta, as real checkpoints have
        torch.save({"meta": meta, "state_dict": model.state_dict()}, job["checkpoint"])
        np.save(job["probs"], probs.numpy())
        print(f"mmaction2: {job['config']} done", flush=True)


if __name__ == "__main__":
    main()
