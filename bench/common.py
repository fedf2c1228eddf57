"""Shared helpers for the benchmarks: cached artifacts, JSON lines, percentiles, process and thread statistics."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
DEMO_MODEL = ROOT / "models" / "motion_demo.onnx"
# The bundled demo model's architecture (for its PyTorch twin in bench/model.py): SlowOnly 8x8, ResNet-18, width 16.
DEMO_ARCH = {"arch": "slowonly_r50_8x8", "depth": 18, "width": 16, "size": 96, "num_classes": 9}


class Emitter:
    """Prints JSON lines and appends them to ``out`` (when given); every record carries the device name."""

    def __init__(self, out: Path | None = None, device: str | None = None) -> None:
        self.device = device or device_name()
        self.out: IO[str] | None = None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.out = open(out, "a")  # noqa: SIM115 - closed by close()

    def __call__(self, record: dict) -> dict:
        record = {"bench": record.pop("bench"), "device": self.device} | record
        line = json.dumps(record)
        print(line, flush=True)
        if self.out is not None:
            self.out.write(line + "\n")
            self.out.flush()
        return record

    def close(self) -> None:
        if self.out is not None:
            self.out.close()


def device_name() -> str:
    """The accelerator's name when one is visible (nvidia-smi), else the CPU model, core count and widest vector
    unit, so results from different CPU generations behind one model name (this project's 2-core hosts all say
    "AMD EPYC") go to different files."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    model, flags = platform.processor() or "cpu", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    vector = next((name for flag, name in (("avx512f", " AVX-512"), ("avx2", " AVX2")) if flag in flags), "")
    return f"{model} x{os.cpu_count()}{vector}"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def percentiles(values: list[float] | np.ndarray, qs=(50, 95, 99)) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


class ProcessStats:
    """CPU time (user + system, this process and waited children) and resident memory, over an interval."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = _cpu_seconds()

    def cpu_percent(self) -> float:
        wall = time.perf_counter() - self.t0
        return 100 * (_cpu_seconds() - self.cpu0) / wall if wall > 0 else 0.0

    @staticmethod
    def settled_rss_mb() -> float:
        """RSS after handing freed memory back to the OS (a baseline that earlier, larger work does not inflate)."""
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap pages otherwise
        return ProcessStats.rss_mb()

    @staticmethod
    def rss_mb() -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class ThreadCpu:
    """CPU % of this process's threads over an interval, summed by what they do: ``group`` maps a Python thread's
    name to its group (threads Python did not start, such as FFmpeg's or ONNX Runtime's pools, are named "")."""

    def __init__(self, group: Callable[[str], str]) -> None:
        self.group = group
        self.t0 = time.perf_counter()
        self.cpu0 = thread_cpu_seconds()

    def percent(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        names = {t.native_id: t.name for t in threading.enumerate()}
        out: dict[str, float] = {}
        for tid, seconds in thread_cpu_seconds().items():
            key = self.group(names.get(tid, ""))
            out[key] = out.get(key, 0.0) + 100 * (seconds - self.cpu0.get(tid, 0.0)) / wall
        return out


class GpuUtilisation:
    """The GPU's utilisation (%) over an interval, as ``nvidia-smi`` samples it twice a second (the first GPU's); the
    mean of the samples from now until :meth:`stop`, or None without ``nvidia-smi``."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self._proc = None
            return
        self._reader = threading.Thread(target=self._read, name="gpu-util", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.split(",")[0]))

    def stop(self) -> float | None:
        if self._proc is None:
            return None
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)
        self._reader.join(5)
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of this process, by native id (Linux /proc; {} elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # the thread may have ended since the listing
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (stat fields 14, 15)
    return out


def stream_links(video: Path, k: int, folder: str) -> list[Path]:
    """K names of ``video`` (links under ``CACHE / folder``): camera entries that name one file share its stream
    (one decode per stream), while K cameras on these are K streams."""
    where = CACHE / folder
    where.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(k):
        link = where / f"cam{i:03d}{video.suffix}"
        if link.is_symlink() and link.resolve() != video.resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(video.resolve())
        links.append(link)
    return links


def test_video(seconds: int, width: int, height: int, fps: int = 25, name: str | None = None) -> Path:
    """A moving test pattern encoded with H.264 (PyAV's encoder, so no ffmpeg CLI is needed), cached."""
    import av

    path = CACHE / (name or f"testsrc_{width}x{height}_{fps}fps_{seconds}s.mp4")
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(2 * fps)}
        for i in range(seconds * fps):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = (xx + 4 * i) % 256
            rgb[..., 1] = (yy + 2 * i) % 256
            rgb[..., 2] = ((xx // 32 + yy // 32 + i // 5) % 2) * 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path
