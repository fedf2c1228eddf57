"""Runs inside the MMAction2 1.2.0 venv (tests/parity/mmaction2_venv.py), not ours.

    python bench/mmaction2_side.py job.json

``{"make": true, ...}``: build the model from its config dict with random weights and BatchNorm statistics (the
parity tests' recipe) and save an MMAction2 checkpoint. ``{"make": false, ...}``: time ``init_recognizer`` and
``inference_recognizer`` on the video and print one JSON line.
"""

import json
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402
from mmaction.apis import inference_recognizer, init_recognizer  # noqa: E402
from mmaction.registry import MODELS  # noqa: E402
from mmaction.utils import register_all_modules  # noqa: E402
from mmengine import Config  # noqa: E402


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    register_all_modules()
    torch.set_num_threads(job.get("threads", 2))
    imported = time.perf_counter()
    if job["make"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "parity"))
        from mmaction2_side import randomise

        model = MODELS.build(job["config"])
        g = torch.Generator().manual_seed(0)
        shape = job["probe_shape"]  # the model's input for one view: [C, T, H, W] or [T, C, H, W]
        randomise(model, (torch.rand(shape, generator=g) * 255).to(torch.uint8), seed=0)
        torch.save({"meta": {"mmaction2": "1.2.0"}, "state_dict": model.state_dict()}, job["checkpoint"])
        print(json.dumps({"made": job["checkpoint"]}), flush=True)
        return
    steps = [s | ({"scale": tuple(s["scale"])} if "scale" in s else {}) for s in job["pipeline"]]  # JSON: lists
    config = Config({"model": job["config"], "test_pipeline": steps})
    t0 = time.perf_counter()
    model = init_recognizer(config, job["checkpoint"], device="cpu")
    t1 = time.perf_counter()
    result = inference_recognizer(model, job["video"])
    t2 = time.perf_counter()
    scores = result.pred_score.float().numpy()
    record = {"import_s": imported - T_START, "load_s": t1 - t0, "infer_s": t2 - t1, "top1": int(scores.argmax())}
    print(json.dumps(record | {"top1_score": float(scores.max())}), flush=True)


if __name__ == "__main__":
    main()
