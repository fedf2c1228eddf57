"""actionstream: real-time action recognition for live cameras (the torch-free agent)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("actionstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
