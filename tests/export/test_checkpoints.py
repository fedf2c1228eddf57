"""Checkpoint import: our format, MMAction2-style files, strict key/shape checks and refusal of code in pickles."""

from __future__ import annotations

import builtins
import os
import sys
import types

import numpy as np
import pytest
import torch

from export.checkpoints import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from export.models import build_model

ARCH = "i3d_r50"
SMALL = {"depth": 18, "width": 8}
BACKBONE_KEY = "backbone.conv1.conv.weight"


def small_model(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(ARCH, num_classes=num_classes, **SMALL)
    # Non-default BatchNorm statistics so that buffers are compared too.
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn_like(buf))
    return model.eval()


def assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state)
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


@pytest.fixture
def mm_state() -> dict[str, torch.Tensor]:
    """What an MMAction2 checkpoint's ``state_dict`` holds for this (small) model."""
    return {k: v.clone() for k, v in small_model(seed=1).state_dict().items()}


def write_mm(path, state, meta=None) -> None:
    payload = {"state_dict": state}
    if meta is not None:
        payload["meta"] = meta
    torch.save(payload, path)


# --- our format ---------------------------------------------------------------------------------------------------


def test_round_trip_our_format(tmp_path):
    source = small_model(seed=1)
    path = tmp_path / "ours.pth"
    args = {"num_classes": 5, **SMALL}
    save_checkpoint(path, source, arch=ARCH, model_args=args, labels=list("abcde"), epoch=7)

    ckpt = read_checkpoint(path)
    assert ckpt.path == path
    assert ckpt.arch == ARCH
    assert ckpt.model_args == args
    assert ckpt.labels == list("abcde")
    assert ckpt.num_classes == 5
    assert ckpt.extra == {"epoch": 7}

    target = build_model(ckpt.arch, **ckpt.model_args).eval()
    assert not torch.equal(target.state_dict()[BACKBONE_KEY], source.state_dict()[BACKBONE_KEY])
    load_weights(target, ckpt)
    assert_same_state(target, source.state_dict())
    x = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def test_our_format_without_labels(tmp_path):
    path = tmp_path / "ours.pth"
    save_checkpoint(path, small_model(), arch=ARCH, model_args={"num_classes": 5, **SMALL})
    assert read_checkpoint(path).labels is None


# --- MMAction2 style ----------------------------------------------------------------------------------------------


def test_mmaction2_state_dict_with_numpy_meta_loads(tmp_path, mm_state):
    path = tmp_path / "mm.pth"
    meta = {
        "epoch": np.int64(12),
        "lr": np.float64(0.01),
        "hist": np.arange(4, dtype=np.float32),
        "seed": np.uint32(3),
        "dataset_meta": {"classes": ("run", "jump", "sit", "stand", "wave")},
    }
    write_mm(path, mm_state, meta)

    ckpt = read_checkpoint(path)
    assert ckpt.arch is None
    assert ckpt.labels == ["run", "jump", "sit", "stand", "wave"]
    assert ckpt.num_classes == 5
    model = small_model(seed=2)
    load_weights(model, ckpt)
    assert_same_state(model, mm_state)


def test_mmengine_bookkeeping_objects_are_tolerated(tmp_path, monkeypatch, mm_state):
    """mmengine pickles objects such as ``MessageHub``; they load as inert stand-ins (mmengine is not installed)."""
    mod = types.ModuleType("mmengine")

    class MessageHub:
        def __init__(self, name):
            self.name = name

    MessageHub.__module__, MessageHub.__qualname__ = "mmengine", "MessageHub"
    mod.MessageHub = MessageHub
    monkeypatch.setitem(sys.modules, "mmengine", mod)
    path = tmp_path / "mm.pth"
    torch.save({"state_dict": mm_state, "meta": {"epoch": 1}, "message_hub": MessageHub("train")}, path)
    monkeypatch.delitem(sys.modules, "mmengine")

    ckpt = read_checkpoint(path)
    model = small_model(seed=2)
    load_weights(model, ckpt)
    assert_same_state(model, mm_state)


def test_bare_state_dict_and_prefixes(tmp_path, mm_state):
    """A bare state dict loads; ``module.`` (DataParallel) is stripped and ``data_preprocessor.`` ignored."""
    path = tmp_path / "bare.pth"
    state = {f"module.{k}": v for k, v in mm_state.items()}
    state["data_preprocessor.mean"] = torch.zeros(3, 1, 1, 1)
    torch.save(state, path)
    ckpt = read_checkpoint(path)
    assert set(ckpt.state_dict) == set(mm_state)
    assert ckpt.labels is None
    model = small_model(seed=2)
    load_weights(model, ckpt)
    assert_same_state(model, mm_state)


# --- strict checks ------------------------------------------------------------------------------------------------


def test_missing_key(tmp_path, mm_state):
    del mm_state["backbone.layer2.0.conv1.bn.running_var"]
    write_mm(tmp_path / "mm.pth", mm_state)
    with pytest.raises(CheckpointError) as err:
        load_weights(small_model(), read_checkpoint(tmp_path / "mm.pth"))
    message = str(err.value)
    assert "missing" in message
    assert "backbone.layer2.0.conv1.bn.running_var" in message
    assert str(tmp_path / "mm.pth") in message


def test_unexpected_key(tmp_path, mm_state):
    mm_state["backbone.layer5.0.conv1.conv.weight"] = torch.zeros(1)
    write_mm(tmp_path / "mm.pth", mm_state)
    with pytest.raises(CheckpointError) as err:
        load_weights(small_model(), read_checkpoint(tmp_path / "mm.pth"))
    assert "unexpected" in str(err.value)
    assert "backbone.layer5.0.conv1.conv.weight" in str(err.value)


def test_wrong_shape(tmp_path, mm_state):
    mm_state["backbone.layer3.1.conv2.conv.weight"] = torch.zeros(3, 3, 3, 3, 3)
    write_mm(tmp_path / "mm.pth", mm_state)
    model = small_model()
    before = model.state_dict()[BACKBONE_KEY].clone()
    with pytest.raises(CheckpointError) as err:
        load_weights(model, read_checkpoint(tmp_path / "mm.pth"))
    assert "backbone.layer3.1.conv2.conv.weight" in str(err.value)
    assert "[3, 3, 3, 3, 3]" in str(err.value)
    assert torch.equal(model.state_dict()[BACKBONE_KEY], before)  # nothing loaded on failure


def test_class_count_mismatch_needs_reset_head(tmp_path):
    source = small_model(num_classes=400, seed=1)
    path = tmp_path / "k400.pth"
    write_mm(path, source.state_dict())
    ckpt = read_checkpoint(path)
    assert ckpt.num_classes == 400

    model = small_model(num_classes=5, seed=2)
    with pytest.raises(CheckpointError) as err:
        load_weights(model, ckpt)
    assert "--reset-head" in str(err.value)
    assert "400" in str(err.value) and "5" in str(err.value)

    head_before = model.state_dict()["cls_head.fc_cls.weight"].clone()
    load_weights(model, ckpt, reset_head=True)
    state = model.state_dict()
    for key, value in source.state_dict().items():
        if not key.startswith("cls_head."):
            assert torch.equal(state[key], value), key
    assert torch.equal(state[BACKBONE_KEY], ckpt.state_dict[BACKBONE_KEY])
    assert state["cls_head.fc_cls.weight"].shape == (5, head_before.shape[1])
    assert torch.equal(state["cls_head.fc_cls.weight"], head_before)


def test_reset_head_still_checks_the_backbone(tmp_path, mm_state):
    del mm_state[BACKBONE_KEY]
    write_mm(tmp_path / "mm.pth", mm_state)
    with pytest.raises(CheckpointError, match=BACKBONE_KEY.replace(".", r"\.")):
        load_weights(small_model(), read_checkpoint(tmp_path / "mm.pth"), reset_head=True)


# --- bad files ----------------------------------------------------------------------------------------------------


class RunsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class RunsNumpySave:
    """A global from an allow-listed module (numpy) that would write a file if it were called."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (np.save, (str(self.marker), np.zeros(1)))


@pytest.mark.parametrize(
    "payload, global_name",
    [(RunsSystem, f"{os.system.__module__}.system"), (RunsEval, "builtins.eval")],
    ids=["os.system", "builtins.eval"],
)
def test_malicious_pickle_is_refused_without_running(tmp_path, mm_state, payload, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": mm_state, "meta": {"x": payload(marker)}}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert global_name in str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_allow_listed_module_globals_are_never_called(tmp_path, mm_state):
    marker = tmp_path / "pwned.npy"
    path = tmp_path / "sneaky.pth"
    torch.save({"state_dict": mm_state, "meta": {"x": RunsNumpySave(marker)}}, path)
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError:
        pass
    else:
        assert set(ckpt.state_dict) == set(mm_state)
    assert not marker.exists()


def test_random_bytes_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


def test_text_file(tmp_path):
    path = tmp_path / "config.py"
    path.write_text("model = dict(type='Recognizer3D')\n")
    with pytest.raises(CheckpointError, match="config.py"):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)
    assert "not found" in str(err.value)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path)


def test_non_dict_checkpoint(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        read_checkpoint(path)


def test_non_tensor_value_names_the_key(tmp_path, mm_state):
    mm_state["backbone.conv1.bn.weight"] = [1.0, 2.0]
    write_mm(tmp_path / "mm.pth", mm_state)
    with pytest.raises(CheckpointError, match=r"backbone\.conv1\.bn\.weight"):
        read_checkpoint(tmp_path / "mm.pth")


@pytest.mark.parametrize("payload", [RunsSystem, RunsEval, RunsNumpySave])
def test_malicious_payloads_are_live(tmp_path, payload):
    """Control for the tests above: unpickled without weights_only, each payload does create its marker."""
    marker = tmp_path / "pwned.npy"
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"x": payload(marker)}}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()
