"""Every error a user can cause, in one tree; the command line catches :class:`ActionstreamError` and prints one
``error:`` line naming the file or key and what was expected.

::

    ActionstreamError
     ├── ConfigError       a config file, command-line value or environment setting (agent and trainer)
     │    └── ShardError   a shard setting (--shard, ACTIONSTREAM_SHARD*)
     ├── SpecError         an ONNX file that does not follow the model contract, or cannot be opened
     ├── VideoError        a video file that cannot be read
     ├── ProposalsError    a person-boxes file that cannot be used
     ├── CheckpointError   a checkpoint that cannot be loaded into the chosen arch (export)
     ├── ExportError       an export that cannot go on: labels, flags, a numeric mismatch (export)
     ├── DatasetError      a list file, folder or clip the trainer cannot use (train)
     └── InferenceError    a model run that failed; the clips in it are lost, the agent goes on

All but :class:`InferenceError` also derive from :class:`ValueError`: the value given was wrong.
"""

from __future__ import annotations


class ActionstreamError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(ActionstreamError, ValueError):
    """A configuration problem; the message names the file and the key path."""


class ShardError(ConfigError):
    """A shard setting that cannot be used; the message names where it came from and what was expected."""


class SpecError(ActionstreamError, ValueError):
    """An ONNX file that does not follow the model contract; the message names the file and the key."""


class VideoError(ActionstreamError, ValueError):
    """A video that cannot be read; the message names the file."""


class ProposalsError(ActionstreamError, ValueError):
    """A proposals file that cannot be used; the message names the file and the line or key."""


class CheckpointError(ActionstreamError, ValueError):
    """A checkpoint that does not fit the model; the message names the file and the key."""


class ExportError(ActionstreamError, ValueError):
    """An export that cannot go on; the message names the flag or file."""


class DatasetError(ActionstreamError, ValueError):
    """A dataset that cannot be used; the message names the file and line."""


class InferenceError(ActionstreamError):
    """A model run failed (ONNX Runtime raised); carries the model's name."""
