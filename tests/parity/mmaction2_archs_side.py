"""Runs inside the MMAction2 1.2.0 venv (not ours), for the archs added after the first six: builds each model from
MMAction2's own config file (small overrides for speed), randomises it as ``mmaction2_side.py`` does, scales its
classifier so that the probabilities spread, and saves an MMAction2-style checkpoint and MMAction2's probabilities;
also reports the state-dict keys (with shapes) and parameter counts of the configs' full-size models.

    python mmaction2_archs_side.py request.json

request: {"jobs": [{"config": path relative to mmaction/.mim/configs, "overrides": {"backbone": {...}, ...},
                    "seed": int, "clip": uint8 [T, H, W, 3] .npy, "format_shape": "NCHW" | "NCTHW",
                    "checkpoint": out path, "probs": out .npy path}, ...],
          "keys": {name: config path, ...}, "keys_out": out .json path}
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

import mmaction  # noqa: E402
from mmaction.registry import MODELS  # noqa: E402
from mmaction.structures import ActionDataSample  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402
from mmaction2_side import randomise  # noqa: E402  (this folder is on sys.path: the script's own)
from mmengine.config import Config  # noqa: E402

CONFIGS = Path(mmaction.__file__).parent / ".mim" / "configs"


def model_config(path: str, overrides: dict) -> dict:
    """The config file's ``model``, without pretrained weights (nothing is downloaded), ``overrides`` merged."""
    config = Config.fromfile(str(CONFIGS / path)).model.to_dict()
    config["backbone"]["pretrained"] = None
    for section, values in overrides.items():
        config[section].update(values)
    return config


def logits(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What ``test_step`` computes before ``average_clip``'s softmax: the head's scores."""
    data = model.data_preprocessor({"inputs": [inputs], "data_samples": [ActionDataSample()]}, training=False)
    feats, kwargs = model.extract_feat(data["inputs"], test_mode=True)
    return model.cls_head(feats, **kwargs)


def spread(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """Scale the classifier (``fc_cls``; X3D: ``fc2``) so that the logits' spread over classes is 1.5: neither a
    uniform nor a one-hot softmax (C3D, without BatchNorm, saturates otherwise)."""
    fc = getattr(model.cls_head, "fc_cls", None) or model.cls_head.fc2
    with torch.no_grad():
        raw = logits(model, inputs)
        scale = 1.5 / (raw - raw.mean(dim=1, keepdim=True)).std()
        fc.weight.mul_(scale)
        fc.bias.mul_(scale)


def run_job(job: dict, inputs: torch.Tensor) -> None:
    """Builds the job's model, randomises and spreads it on ``inputs``, and saves an MMAction2-style checkpoint and
    MMAction2's probabilities for ``inputs``."""
    model = MODELS.build(model_config(job["config"], job.get("overrides", {})))
    randomise(model, inputs, job["seed"])
    spread(model, inputs)
    with torch.no_grad():
        result = model.test_step({"inputs": [inputs], "data_samples": [ActionDataSample()]})
    meta = {"seed": np.int64(job["seed"]), "mmaction2": "1.2.0"}  # numpy in meta, as real checkpoints have
    torch.save({"meta": meta, "state_dict": model.state_dict()}, job["checkpoint"])
    np.save(job["probs"], result[0].pred_score.numpy())
    print(f"mmaction2: {job['config']} done", flush=True)


def report_keys(request: dict) -> None:
    """The state-dict keys (with shapes) and parameter counts of the full-size models ``request["keys"]`` names."""
    keys = {}
    for name, path in request.get("keys", {}).items():
        model = MODELS.build(model_config(path, {}))
        keys[name] = {
            "config": path,
            "num_params": sum(p.numel() for p in model.parameters()),
            "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()},
        }
    if keys:
        Path(request["keys_out"]).write_text(json.dumps(keys))


def main() -> None:
    register_all_modules()
    torch.set_num_threads(2)
    request = json.load(open(sys.argv[1]))
    for job in request.get("jobs", []):
        clip = torch.from_numpy(np.load(job["clip"]))  # T H W C, uint8
        if job["format_shape"] == "NCHW":
            inputs = clip.permute(0, 3, 1, 2).contiguous()  # [segments, C, H, W]
        else:
            inputs = clip.permute(3, 0, 1, 2)[None].contiguous()  # [1 view, C, T, H, W]
        run_job(job, inputs)
    report_keys(request)


if __name__ == "__main__":
    main()
