"""Procedurally rendered motion clips: classes defined by motion only, so single frames cannot tell them apart.

Every clip shows one *actor* — a square, circle or triangle with a two-tone marking (so that rotation is
visible even on a circle) — over a textured background with a few static distractor shapes, sensor noise and
a small camera jitter. The actor's motion is the class:

=============== ===================================================================
translation     ``move_left``, ``move_right``, ``move_up``, ``move_down``
rotation        ``rotate_cw``, ``rotate_ccw`` (as seen on screen)
scale           ``grow``, ``shrink``
none            ``still`` (only the camera jitters)
=============== ===================================================================

Start position, size, angle, colours and speeds are drawn so that any one frame of any class could come from
most other classes. All action happens inside the centred square that the model's centre crop sees
(``resize_short = size * 256 / 224`` then a ``size`` crop keeps ~87 % of the short side).

Outputs are H.264 MP4s (yuv420p, one encoder thread: identical bytes for identical seeds), MMAction2 list files
(``train.txt``/``val.txt``: ``<path> <label>``), ``labels.txt``, and optionally a *scripted stream*: one long
video in which actions happen in segments of a few seconds separated by idle gaps, with its ground-truth
schedule as JSON ``[{"label": ..., "start": s, "end": s}, ...]``.

    write_dataset(".cache/synth", clips_per_class=80, val_per_class=20)
    write_scripted_stream(".cache/stream.mp4", ".cache/stream.json", minutes=2)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from agent.errors import ConfigError


@dataclass(frozen=True)
class Motion:
    """What the actor does: screen direction of travel (+x right, +y down), spin (+1 clockwise), growth (±1)."""

    direction: tuple[int, int] = (0, 0)
    spin: int = 0
    growth: int = 0


MOTIONS: dict[str, Motion] = {
    "move_left": Motion(direction=(-1, 0)),
    "move_right": Motion(direction=(1, 0)),
    "move_up": Motion(direction=(0, -1)),
    "move_down": Motion(direction=(0, 1)),
    "rotate_cw": Motion(spin=1),
    "rotate_ccw": Motion(spin=-1),
    "grow": Motion(growth=1),
    "shrink": Motion(growth=-1),
    "still": Motion(),
}
MOTION_IDS = {name: i for i, name in enumerate(MOTIONS)}  # stable seeds per class, whatever the class subset
GROUPS = {
    "translation": ("move_left", "move_right", "move_up", "move_down"),
    "rotation": ("rotate_cw", "rotate_ccw"),
    "scale": ("grow", "shrink"),
    "still": ("still",),
}
# A horizontal flip turns these into each other (use as the trainer's flip label pairs).
FLIP_PAIRS = (("move_left", "move_right"), ("rotate_cw", "rotate_ccw"))
SHAPES = ("square", "circle", "triangle")

# Ranges, as fractions of the action region's side L per second where they are speeds.
SIZE = (0.12, 0.18)  # actor half-extent / L (at the middle of the action)
SPEED = (0.16, 0.24)  # L / s (less where the travel would leave the region)
SPIN_DEG = (150.0, 270.0)  # degrees / s: 40–72° per 8-frame step at 30 fps (fast turns train faster than slow ones)
GROWTH = (0.3, 0.45)  # d ln(size) / dt, 1 / s (less where the actor would outgrow MAX_SIZE)
MAX_SIZE = 0.3  # largest half-extent / L
MIN_CONTRAST = 90.0  # least mean |actor colour - background colour| over RGB, grey levels
JITTER_PX = 2  # camera shake: largest offset, pixels
JITTER_STEP = 0.25  # camera shake: random-walk step sigma per frame, pixels
NOISE = 3.0  # sensor noise sigma, grey levels
# One thread and no macroblock-tree rate control: x264's mbtree (with its SIMD code) reads memory that varies from
# run to run, so the same frames could give different bytes; without it, same frames → same file.
ENCODER = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}


Colour = tuple[float, float, float]  # RGB, 0-255


@dataclass(frozen=True)
class Actor:
    """One moving shape; ``state(t)`` with ``t`` in seconds from the middle of its action."""

    shape: str
    colour: Colour
    marker: Colour
    centre: tuple[float, float]  # pixels, at t = 0
    size: float  # half-extent in pixels at t = 0
    angle: float  # radians at t = 0
    velocity: tuple[float, float]  # pixels / s
    spin: float  # radians / s, positive = clockwise on screen
    growth: float  # d ln(size) / dt

    def state(self, t: float) -> tuple[float, float, float, float]:
        """(cx, cy, angle, size) at ``t``."""
        return (
            self.centre[0] + self.velocity[0] * t,
            self.centre[1] + self.velocity[1] * t,
            self.angle + self.spin * t,
            self.size * float(np.exp(self.growth * t)),
        )


def action_region(width: int, height: int) -> tuple[float, float, float]:
    """(x0, y0, side) of the centred square in which everything moves."""
    side = 0.84 * min(width, height)
    return (width - side) / 2, (height - side) / 2, side


def random_actor(
    rng: np.random.Generator, motion: Motion, width: int, height: int, duration: float, backdrop=(128.0, 128.0, 128.0)
) -> Actor:
    """An actor whose whole action (``duration`` seconds, centred on t = 0) stays inside the action region and
    whose colour stands out from ``backdrop`` (the background's mean colour)."""
    x0, y0, side = action_region(width, height)
    size = rng.uniform(*SIZE) * side
    growth = rng.uniform(*GROWTH)
    growth = motion.growth * min(growth, np.log(MAX_SIZE * side / size) / (duration / 2))
    biggest = size * np.exp(abs(growth) * duration / 2)
    reach = 1.15 * biggest  # corners of a square reach sqrt(2)·size, but only at 45°: keep mostly inside
    speed = rng.uniform(*SPEED) * side
    half_travel = min(speed * duration / 2, side / 2 - reach)
    speed = max(half_travel, 0.0) * 2 / duration
    dx, dy = motion.direction
    lo_x, hi_x = x0 + reach + abs(dx) * half_travel, x0 + side - reach - abs(dx) * half_travel
    lo_y, hi_y = y0 + reach + abs(dy) * half_travel, y0 + side - reach - abs(dy) * half_travel
    centre = (rng.uniform(lo_x, max(lo_x, hi_x)), rng.uniform(lo_y, max(lo_y, hi_y)))
    colour, marker = _actor_colours(rng, np.asarray(backdrop, dtype=np.float64))
    return Actor(
        shape=str(rng.choice(SHAPES)),
        colour=colour,
        marker=marker,
        centre=centre,
        size=float(size),
        angle=float(rng.uniform(0, 2 * np.pi)),
        velocity=(dx * speed, dy * speed),
        spin=motion.spin * float(np.deg2rad(rng.uniform(*SPIN_DEG))),
        growth=float(growth),
    )


def _actor_colours(rng: np.random.Generator, backdrop: np.ndarray) -> tuple[Colour, Colour]:
    for _ in range(20):  # a colour that stands out from the background (the last draw if none does)
        colour = rng.uniform(0, 255, size=3)
        colour[rng.integers(3)] = rng.choice([rng.uniform(0, 40), rng.uniform(215, 255)])  # saturated-ish
        if np.abs(colour - backdrop).mean() >= MIN_CONTRAST:
            break
    shade = rng.choice([-1.0, 1.0]) * rng.uniform(70, 120)
    marker = colour + shade
    if marker.min() < 0 or marker.max() > 255:  # shade the other way when it would clip
        marker = colour - shade
    r, g, b = colour.tolist()
    mr, mg, mb = np.clip(marker, 0, 255).tolist()
    return (r, g, b), (mr, mg, mb)


# --- drawing ----------------------------------------------------------------------------------------------------

_TRIANGLE_NORMALS = np.array([[np.cos(a), np.sin(a)] for a in np.deg2rad([90.0, 210.0, 330.0])], dtype=np.float32)


def draw_shape(
    image: np.ndarray,
    shape: str,
    centre: tuple[float, float],
    size: float,
    angle: float,
    colour: tuple[float, ...],
    marker: tuple[float, ...] | None = None,
) -> None:
    """Blend an anti-aliased, rotated shape into float32 ``image`` [H, W, 3] in place (bounding box only).

    Pixels are mapped into the shape's own frame (``u`` along its rotated x axis), where the shape is a fixed
    unit outline; ``marker`` colours one half (``u > 0``) so that any rotation shows.
    """
    h, w = image.shape[:2]
    reach = 1.5 * size + 2
    x_lo, x_hi = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 1, w)
    y_lo, y_hi = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 1, h)
    if x_lo >= x_hi or y_lo >= y_hi or size <= 0:
        return
    ys, xs = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32)
    dx, dy = xs - np.float32(centre[0]), ys - np.float32(centre[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = (c * dx + s * dy) / size, (-s * dx + c * dy) / size
    if shape == "square":
        dist = np.maximum(np.abs(u), np.abs(v)) - 1.0
    elif shape == "circle":
        dist = np.sqrt(u * u + v * v) - 1.0
    elif shape == "triangle":  # equilateral, circumradius 1.3 (inradius 0.65): about a square's area
        dist = np.max(_TRIANGLE_NORMALS[:, 0, None, None] * u + _TRIANGLE_NORMALS[:, 1, None, None] * v, axis=0)
        dist = (dist - 0.65) / 0.65
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    alpha = np.clip(0.5 - dist * size, 0.0, 1.0)[..., None]  # ~1 px soft edge
    fill = np.empty((*u.shape, 3), dtype=np.float32)
    fill[:] = np.asarray(colour, dtype=np.float32)
    if marker is not None:
        fill[u > 0] = np.asarray(marker, dtype=np.float32)
    patch = image[y_lo:y_hi, x_lo:x_hi]
    patch += alpha * (fill - patch)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A float32 textured scene (gratings + smooth blobs + static distractor shapes)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(50, 200, size=3).astype(np.float32)
    image: np.ndarray = np.broadcast_to(base, (height, width, 3)).copy()
    for _ in range(3):  # gratings
        theta, period = rng.uniform(0, np.pi), rng.uniform(10, 50)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin((xs * np.cos(theta) + ys * np.sin(theta)) * (2 * np.pi / period) + phase)
        image += wave[..., None] * rng.uniform(-15, 15, size=3).astype(np.float32)
    cells = rng.uniform(-20, 20, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    blobs: np.ndarray = np.repeat(np.repeat(cells, 16, axis=0), 16, axis=1)[:height, :width]
    for axis in (0, 1):  # two box blurs: smooth blobs
        blobs = (blobs + np.roll(blobs, 8, axis=axis)) / 2
        blobs = (blobs + np.roll(blobs, 4, axis=axis)) / 2
    image += blobs
    for _ in range(int(rng.integers(1, 4))):  # static distractors: same shapes, never moving
        side = min(width, height)
        draw_shape(
            image,
            str(rng.choice(SHAPES)),
            (rng.uniform(0, width), rng.uniform(0, height)),
            rng.uniform(0.05, 0.12) * side,
            rng.uniform(0, 2 * np.pi),
            tuple(rng.uniform(0, 255, size=3).tolist()),
        )
    return image


class _Camera:
    """A padded scene viewed through a jittering window, plus per-frame sensor noise."""

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        self.rng, self.width, self.height = rng, width, height
        self.scene = background(rng, width + 2 * JITTER_PX, height + 2 * JITTER_PX)
        self.offset = np.zeros(2)
        self.backdrop = tuple(self.scene.reshape(-1, 3).mean(axis=0).tolist())

    def shoot(self, actors: list[tuple[Actor, float]]) -> np.ndarray:
        """One uint8 RGB frame showing each (actor, t) pair."""
        self.offset = np.clip(self.offset + self.rng.normal(0, JITTER_STEP, size=2), -JITTER_PX, JITTER_PX)
        ox, oy = (int(round(o)) for o in self.offset)
        j = JITTER_PX
        frame = self.scene[j + oy : j + oy + self.height, j + ox : j + ox + self.width].copy()
        for actor, t in actors:
            cx, cy, angle, size = actor.state(t)
            draw_shape(frame, actor.shape, (cx - ox, cy - oy), size, angle, actor.colour, actor.marker)
        frame += self.rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(NOISE)
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def _encode(path: Path, frames: Iterator[np.ndarray], *, fps: int, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options=dict(ENCODER))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _check_size(width: int, height: int, fps: int) -> None:
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ConfigError(f"width and height must be even and >= 32 (yuv420p), got {width}x{height}")
    if fps < 1:
        raise ConfigError(f"fps must be >= 1, got {fps}")


# --- clips ------------------------------------------------------------------------------------------------------


def render_clip(
    motion: str, *, seconds: float = 3.0, fps: int = 30, width: int = 160, height: int = 120, seed: int = 0
) -> Iterator[np.ndarray]:
    """The frames (uint8 RGB [H, W, 3]) of one clip of ``motion``; the action spans the whole clip."""
    if motion not in MOTIONS:
        raise ConfigError(f"unknown motion {motion!r}; expected one of: {', '.join(MOTIONS)}")
    rng = np.random.default_rng(seed)
    camera = _Camera(rng, width, height)
    actor = random_actor(rng, MOTIONS[motion], width, height, seconds, camera.backdrop)
    n = max(1, round(seconds * fps))
    for i in range(n):
        yield camera.shoot([(actor, (i - (n - 1) / 2) / fps)])


def write_motion_clip(
    path: str | Path,
    motion: str,
    *,
    seconds: float = 3.0,
    fps: int = 30,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
) -> Path:
    """Write an H.264 MP4 in which one shape performs ``motion`` (one of :data:`MOTIONS`)."""
    _check_size(width, height, fps)
    frames = render_clip(motion, seconds=seconds, fps=fps, width=width, height=height, seed=seed)
    return _encode(Path(path), frames, fps=fps, width=width, height=height)


@dataclass(frozen=True)
class SyntheticSet:
    root: Path
    train: Path  # list file
    val: Path  # list file
    labels: Path


def _write_one(job: tuple[Path, str, float, int, int, int, int]) -> None:
    path, motion, seconds, fps, width, height, seed = job
    write_motion_clip(path, motion, seconds=seconds, fps=fps, width=width, height=height, seed=seed)


def write_dataset(
    root: str | Path,
    *,
    clips_per_class: int = 80,
    val_per_class: int = 20,
    seconds: float = 3.0,
    fps: int = 30,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    classes: tuple[str, ...] | None = None,
    jobs: int = 1,
) -> SyntheticSet:
    """Render ``(clips_per_class + val_per_class) × classes`` clips under ``root/videos/<class>/`` and write
    ``train.txt``, ``val.txt`` (paths relative to ``root``) and ``labels.txt``. Each clip's seed derives from
    (``seed``, split, class, index), so the set is identical whatever ``jobs`` is."""
    _check_size(width, height, fps)
    classes = tuple(MOTIONS) if classes is None else classes
    unknown = [c for c in classes if c not in MOTIONS]
    if unknown:
        raise ConfigError(f"unknown classes {unknown}; expected some of: {', '.join(MOTIONS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs_list: list[tuple[Path, str, float, int, int, int, int]] = []
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for split, count, split_id in (("train", clips_per_class, 0), ("val", val_per_class, 1)):
        for label, motion in enumerate(classes):
            for i in range(count):
                rel = Path("videos") / split / motion / f"{motion}_{i:04d}.mp4"
                clip_seed = int(np.random.SeedSequence([seed, split_id, MOTION_IDS[motion], i]).generate_state(1)[0])
                jobs_list.append((root / rel, motion, seconds, fps, width, height, clip_seed))
                lines[split].append(f"{rel.as_posix()} {label}")
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(_write_one, jobs_list, chunksize=4))
    else:
        for job in jobs_list:
            _write_one(job)
    paths = SyntheticSet(root, root / "train.txt", root / "val.txt", root / "labels.txt")
    paths.train.write_text("".join(f"{line}\n" for line in lines["train"]))
    paths.val.write_text("".join(f"{line}\n" for line in lines["val"]))
    paths.labels.write_text("".join(f"{c}\n" for c in classes))
    return paths


# --- scripted stream --------------------------------------------------------------------------------------------


def make_schedule(
    rng: np.random.Generator,
    *,
    seconds: float,
    labels: tuple[str, ...],
    action_s: tuple[float, float] = (2.5, 4.0),
    gap_s: tuple[float, float] = (1.5, 3.0),
) -> list[dict]:
    """Action segments separated by idle gaps, starting and ending with a gap; labels cycle in shuffled rounds."""
    schedule: list[dict] = []
    t = rng.uniform(*gap_s)
    pool: list[str] = []
    while True:
        duration = rng.uniform(*action_s)
        if t + duration + gap_s[0] > seconds:
            return schedule
        if not pool:
            pool = list(rng.permutation(labels))
        schedule.append({"label": str(pool.pop()), "start": round(t, 3), "end": round(t + duration, 3)})
        t += duration + rng.uniform(*gap_s)


def render_stream(
    schedule: list[dict], *, seconds: float, fps: int, width: int, height: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Frames of the scripted stream: each segment's actor appears (still) halfway through the gap before it,
    acts during its segment, and stays (still) until halfway through the gap after it."""
    camera = _Camera(rng, width, height)
    actors = [
        random_actor(rng, MOTIONS[s["label"]], width, height, s["end"] - s["start"], camera.backdrop) for s in schedule
    ]
    bounds = [s["start"] for s in schedule] + [seconds]
    switches = [0.0] + [(schedule[k]["end"] + bounds[k + 1]) / 2 for k in range(len(schedule) - 1)] + [seconds]
    k = 0
    for i in range(round(seconds * fps)):
        now = i / fps
        while k + 1 < len(schedule) and now >= switches[k + 1]:
            k += 1
        if not schedule:
            yield camera.shoot([])
            continue
        segment = schedule[k]
        middle, half = (segment["start"] + segment["end"]) / 2, (segment["end"] - segment["start"]) / 2
        yield camera.shoot([(actors[k], float(np.clip(now - middle, -half, half)))])


def write_scripted_stream(
    path_mp4: str | Path,
    path_json: str | Path,
    *,
    minutes: float = 2.0,
    fps: int = 30,
    width: int = 160,
    height: int = 120,
    seed: int = 0,
    labels: tuple[str, ...] | None = None,
    action_s: tuple[float, float] = (2.5, 4.0),
    gap_s: tuple[float, float] = (1.5, 3.0),
) -> list[dict]:
    """One long MP4 with actions (default: every non-still class) in segments separated by still gaps, and its
    schedule JSON ``[{"label", "start", "end"}]`` (seconds of video time). Returns the schedule."""
    _check_size(width, height, fps)
    labels = tuple(m for m in MOTIONS if m != "still") if labels is None else labels
    seconds = minutes * 60
    rng = np.random.default_rng(seed)
    schedule = make_schedule(rng, seconds=seconds, labels=labels, action_s=action_s, gap_s=gap_s)
    frames = render_stream(schedule, seconds=seconds, fps=fps, width=width, height=height, rng=rng)
    _encode(Path(path_mp4), frames, fps=fps, width=width, height=height)
    Path(path_json).parent.mkdir(parents=True, exist_ok=True)
    Path(path_json).write_text(json.dumps(schedule, indent=1) + "\n")
    return schedule
