"""Camera sharding for scale-out: replica ``i`` of ``N`` runs the cameras whose stable hash modulo ``N`` is ``i``.

The hash is SHA-256 of the camera's configured name (never Python's per-process salted ``hash()``), so every
replica, on every machine and Python version, computes the same assignment, and a camera's shard depends on its
name and ``N`` only: adding or removing other cameras never moves it. Changing ``N`` moves most cameras (that is
modulo hashing); every replica must then restart with the new ``N``, which a Kubernetes StatefulSet does when its
``ACTIONSTREAM_SHARDS`` changes.

Where the shard comes from (first match wins, see :func:`resolve_shard`):

1. ``--shard i/N`` on the command line;
2. ``ACTIONSTREAM_SHARD=i/N`` in the environment;
3. ``ACTIONSTREAM_SHARDS=N`` with the index from ``ACTIONSTREAM_SHARD_INDEX`` (Kubernetes >= 1.28 can fill it
   from the pod label ``apps.kubernetes.io/pod-index``) or, failing that, from the StatefulSet pod ordinal at
   the end of the host name (``actionstream-2`` is index 2).

No setting at all means one shard: this process runs every camera.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

from agent.errors import ShardError

ENV_SHARD = "ACTIONSTREAM_SHARD"
ENV_SHARDS = "ACTIONSTREAM_SHARDS"
ENV_SHARD_INDEX = "ACTIONSTREAM_SHARD_INDEX"
MAX_SHARDS = 4096

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_ORDINAL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-(\d+)$")


class _Named(Protocol):
    name: str


Named = TypeVar("Named", bound=_Named)


def shard_of(camera_name: str, shards: int) -> int:
    """The shard (``0 <= shard < shards``) that runs ``camera_name``: SHA-256 of the UTF-8 name, modulo ``shards``."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ShardError(f"shard count must be a positive integer, got {shards!r}")
    digest = hashlib.sha256(camera_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def _check(index: int, count: int, origin: str) -> tuple[int, int]:
    if count < 1:
        raise ShardError(f"{origin}: the shard count must be at least 1, got {count}")
    if count > MAX_SHARDS:
        raise ShardError(f"{origin}: the shard count must be at most {MAX_SHARDS}, got {count}")
    if not 0 <= index < count:
        raise ShardError(f"{origin}: shard index {index} is out of range for {count} shard(s): expected 0..{count - 1}")
    return index, count


def parse_shard(text: str, origin: str = "--shard") -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)``, with ``0 <= i < N``; anything else raises :class:`ShardError` naming ``origin``."""
    m = _SHARD.match(text or "")
    if not m:
        raise ShardError(f"{origin}: expected INDEX/COUNT such as 0/3 (index counts from 0), got {text!r}")
    return _check(int(m.group(1)), int(m.group(2)), origin)


def ordinal_from_hostname(hostname: str) -> int:
    """The StatefulSet pod ordinal at the end of a host name: ``actionstream-2`` (or ``actionstream-2.svc...``) → 2."""
    name = hostname.split(".", 1)[0].lower()
    m = _ORDINAL.match(name)
    if not m:
        raise ShardError(
            f"host name {hostname!r} does not end in a StatefulSet ordinal (NAME-<number>); "
            f"set {ENV_SHARD_INDEX} or {ENV_SHARD}=i/N, or pass --shard i/N"
        )
    return int(m.group(2))


def _int_env(env: Mapping[str, str], key: str) -> int:
    value = env[key].strip()
    if not value.isdigit():
        raise ShardError(f"{key}: expected a non-negative integer, got {env[key]!r}")
    return int(value)


def resolve_shard(
    flag: str | None = None, env: Mapping[str, str] | None = None, hostname: str | None = None
) -> tuple[int, int] | None:
    """The shard this process runs, from ``flag`` (``--shard``), then the environment; None when nothing is set."""
    env = os.environ if env is None else env
    if flag is not None:
        return parse_shard(flag, "--shard")
    if env.get(ENV_SHARD, "").strip():
        return parse_shard(env[ENV_SHARD], ENV_SHARD)
    if not env.get(ENV_SHARDS, "").strip():
        if env.get(ENV_SHARD_INDEX, "").strip():
            raise ShardError(f"{ENV_SHARD_INDEX} is set but {ENV_SHARDS} (the shard count) is not")
        return None
    count = _int_env(env, ENV_SHARDS)
    if env.get(ENV_SHARD_INDEX, "").strip():
        return _check(_int_env(env, ENV_SHARD_INDEX), count, ENV_SHARD_INDEX)
    host = hostname if hostname is not None else (env.get("HOSTNAME") or socket.gethostname())
    return _check(ordinal_from_hostname(host), count, f"{ENV_SHARDS}={count} with the ordinal of host {host!r}")


def select(cameras: Iterable[Named], index: int, count: int) -> list[Named]:
    """The cameras (anything with a ``name``) that shard ``index`` of ``count`` runs, in their configured order."""
    _check(index, count, "shard")
    return [c for c in cameras if shard_of(c.name, count) == index]


def assignment(names: Iterable[str], count: int) -> dict[int, list[str]]:
    """Every shard's camera names (an empty list for a shard with none): for planning and ``--shard`` logs."""
    out: dict[int, list[str]] = {i: [] for i in range(count)}
    for name in names:
        out[shard_of(name, count)].append(name)
    return out
