"""Container images, checked without a container engine: hadolint, the Dockerfiles' structure, the pinned
dependency locks against pyproject.toml, and .dockerignore against what the Dockerfiles copy."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.tools import DEPLOY, ROOT, run, tool

DOCKERFILES = {"gpu": DEPLOY / "Dockerfile", "cpu": DEPLOY / "Dockerfile.cpu"}
LOCKS = {"gpu": DEPLOY / "requirements-gpu.txt", "cpu": DEPLOY / "requirements-cpu.txt"}
# What the markers of pyproject.toml pick on the images' platform, and what each image installs instead.
ORT = {"gpu": "onnxruntime-gpu", "cpu": "onnxruntime"}
# The optional-dependency groups of pyproject.toml each image installs besides the dependencies: the CPU image has
# OpenVINO, the engine `device: auto` picks there; the GPU image runs ONNX Runtime's CUDA provider only.
EXTRAS = {"gpu": (), "cpu": ("openvino",)}


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def args_of(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in instructions(path) if k == "ARG" and "=" in a)


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_hadolint_clean(variant):
    result = run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILES[variant])])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_does_catch_problems(tmp_path):
    """The check above means something: hadolint flags an unpinned, root, latest-tagged image."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install actionstream\nCMD actionstream run\n")
    result = run([tool("hadolint"), "--no-color", str(bad)])
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042"):
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_dockerfile_shape(variant):
    path = DOCKERFILES[variant]
    ins = instructions(path)
    froms = [a for k, a in ins if k == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith(" AS build") and froms[-1].endswith(" AS runtime"), froms
    # Pinned base image: a full version tag, never latest / a floating major.
    base = next(iter(args_of(path).values()))
    name, _, tag = base.partition(":")
    assert re.match(r"^\d+\.\d+\.\d+-", tag), f"{path.name}: base image {base} is not pinned to a full version"
    assert name == {"gpu": "nvidia/cuda", "cpu": "python"}[variant]
    if variant == "gpu":
        assert "cudnn-runtime" in tag, "the GPU image needs the CUDA runtime + cuDNN (onnxruntime-gpu links both)"
    runtime = ins[max(i for i, (k, _) in enumerate(ins) if k == "FROM") :]
    # Non-root in the final stage, by numeric uid (Kubernetes' runAsNonRoot can verify it).
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", users
    # The healthcheck asks the agent's liveness endpoint on the metrics port.
    health = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0] and "ACTIONSTREAM_METRICS_PORT" in health[0]
    assert "9108" in [a for k, a in runtime if k == "EXPOSE"][0]
    assert [a for k, a in runtime if k == "ENTRYPOINT"] == ['["actionstream"]']
    assert [a for k, a in runtime if k == "CMD"] == ['["run", "-c", "/etc/actionstream/config.yaml"]']
    # Only the built virtual environment crosses from the build stage.
    copies = [a for k, a in runtime if k == "COPY"]
    assert copies == ["--from=build /opt/actionstream /opt/actionstream"], copies
    # Dependencies come from the lock, without the resolver adding anything; the project wheel without deps.
    text = " ".join(a for k, a in ins if k == "RUN")
    assert f"--no-deps -r deploy/requirements-{variant}.txt" in text
    assert "--no-deps /wheels/actionstream-*.whl" in text
    assert "pip check" in text
    assert "--no-build-isolation" in text and "deploy/requirements-build.txt" in text


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {line!r} is not pinned with =="
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def _project_dependencies() -> list[Requirement]:
    return [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def _extra_dependencies(extra: str) -> list[Requirement]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return [Requirement(d) for d in extras[extra]]


@pytest.mark.parametrize("variant", LOCKS)
def test_lock_pins_every_project_dependency(variant):
    """Each runtime dependency of pyproject.toml, and of the extras the image installs (the CPU image: openvino),
    is pinned to a version its specifier admits; the CPU lock has the CPU onnxruntime where the linux x86_64 marker
    asks for onnxruntime-gpu, and never both; the GPU lock has no OpenVINO."""
    pins = _pins(LOCKS[variant])
    linux_x86 = {"platform_system": "Linux", "platform_machine": "x86_64", "python_version": "3.12"}
    extras = [req for extra in EXTRAS[variant] for req in _extra_dependencies(extra)]
    assert variant != "cpu" or [r.name for r in extras] == ["openvino"]
    for req in _project_dependencies() + extras:
        if req.marker is not None and not req.marker.evaluate(linux_x86):
            continue
        name = canonicalize_name(req.name)
        if name == "onnxruntime-gpu":
            name = ORT[variant]
        assert name in pins, f"{LOCKS[variant].name}: {req.name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"
    other = ORT["cpu" if variant == "gpu" else "gpu"]
    assert other not in pins, f"{LOCKS[variant].name} must not install {other}"
    if variant == "gpu":
        assert "openvino" not in pins, "the GPU image runs ONNX Runtime's CUDA provider only"


def test_locks_agree_except_onnxruntime_and_openvino():
    """The same pins but for the onnxruntime build, and the CPU image's OpenVINO: the openvino package and what it
    requires (as installed here by `make install`) that the GPU lock does not already pin."""
    gpu, cpu = _pins(LOCKS["gpu"]), _pins(LOCKS["cpu"])
    assert gpu.pop("onnxruntime-gpu") == cpu.pop("onnxruntime")
    closure = {"openvino"} | {
        canonicalize_name(req.name)
        for req in map(Requirement, metadata.requires("openvino") or [])
        if req.marker is None or req.marker.evaluate({"extra": ""})
    }
    only_cpu = {name: cpu.pop(name) for name in list(cpu) if name not in gpu}
    assert set(only_cpu) == closure - set(gpu), only_cpu
    assert gpu == cpu


def test_build_requirements_pinned_and_satisfy_build_system():
    pins = _pins(DEPLOY / "requirements-build.txt")
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[canonicalize_name(req.name)]), spec


# --- .dockerignore ----------------------------------------------------------------------------------------------


def _pattern(p: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over slash paths."""
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if p.startswith("**", i):
            out += ".*"
            i += 2
            continue
        c = p[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = p.index("]", i)
            out += p[i : end + 1]
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pattern in rules:
        if any(pattern.match(p) for p in prefixes):
            result = not negate
    return result


def _dockerignore() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip("/")
        rules.append((negate, _pattern(line)))
    return rules


def test_dockerignore_keeps_what_the_images_copy_and_nothing_else():
    rules = _dockerignore()
    needed = set()
    for path in DOCKERFILES.values():
        for kind, arg in instructions(path):
            if kind == "COPY" and not arg.startswith("--from"):
                needed.update(arg.split()[:-1])
    assert needed >= {"pyproject.toml", "README.md", "agent"} and "train" not in needed  # torch-free: no trainer
    tracked = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout.split()
    for source in needed:
        files = [f for f in tracked if f == source or f.startswith(source.rstrip("/") + "/")] or [source]
        for f in files:
            if "__pycache__" in f:
                continue
            assert not ignored(f, rules), f".dockerignore drops {f}, which a Dockerfile copies"
    for f in [
        ".git/HEAD",
        ".venv/bin/python",
        ".cache/demo/x.mp4",
        "models/motion_demo.onnx",
        "tests/conftest.py",
        "export/to_onnx.py",
        "deploy/compose.yaml",
        "agent/__pycache__/cli.cpython-312.pyc",
        "bench/decode.py",
        "train/cli.py",
    ]:
        assert ignored(f, rules), f"{f} would be sent to the docker build context"
    assert not ignored("agent/cli.py", rules) and not ignored("agent/demo/synthetic.py", rules)
