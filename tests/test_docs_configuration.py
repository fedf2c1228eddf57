"""docs/configuration.md documents every configuration key, and only keys that exist.

The keys come from the pydantic models of :mod:`agent.config`, walked from :class:`AgentConfig`: lists become
``key[]``, dictionaries keyed by a name ``key.NAME``, nested sections ``key.field``. A section that appears a second
time (a camera's own ``events``) is documented once, where it first appears (``events.*``)."""

from __future__ import annotations

import re
import types
import typing
from collections import deque

from pydantic import BaseModel

from agent.config import AgentConfig
from tests.docs import CONFIGURATION, code_spans, first_column, read


def _section_type(annotation) -> tuple[str, type[BaseModel]] | None:
    """How a field nests a section: ``("", Model)``, ``("[]", Model)`` or ``(".NAME", Model)``; None for a value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        found = [s for s in map(_section_type, args) if s is not None]
        return found[0] if found else None
    if origin is list and args:
        inner = _section_type(args[0])
        return ("[]", inner[1]) if inner and not inner[0] else None
    if origin is dict and len(args) == 2:
        inner = _section_type(args[1])
        return (".NAME", inner[1]) if inner and not inner[0] else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "", annotation
    return None


def config_keys(root: type[BaseModel] = AgentConfig) -> list[str]:
    """Every dotted key of the configuration, breadth first (``cameras``, ``cameras[].name``, ``models.NAME.path``)."""
    keys: list[str] = []
    documented_at = {root: ""}
    queue: deque[tuple[str, type[BaseModel]]] = deque([("", root)])
    while queue:
        prefix, model = queue.popleft()
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            keys.append(key)
            nested = _section_type(field.annotation)
            if nested is not None and nested[1] not in documented_at:
                documented_at[nested[1]] = key
                queue.append((f"{key}{nested[0]}.", nested[1]))
    return keys


def test_every_config_key_is_documented():
    text = read(CONFIGURATION)
    missing = [key for key in config_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


def test_every_documented_key_exists():
    keys = set(config_keys())
    top = {key for key in keys if "." not in key and "[" not in key}
    documented = [
        span
        for cell in first_column(read(CONFIGURATION))
        for span in code_spans(cell)
        if re.fullmatch(r"[a-z_]+(\[\]|\.NAME|\.[a-z_]+)*", span) and span.split(".")[0].split("[")[0] in top
    ]
    assert documented, "docs/configuration.md: no key tables found"
    unknown = [key for key in documented if key not in keys]
    assert not unknown, f"docs/configuration.md documents keys the config does not have: {', '.join(unknown)}"
