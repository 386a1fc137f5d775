"""The release this code is, as recorded beside each schema step it applies."""

from __future__ import annotations

from functools import cache
from importlib import metadata

__all__ = ["release"]


@cache
def release() -> str:
    """The installed ``wsbroker`` distribution's version (``"unknown"`` when run from a tree)."""
    try:
        return metadata.version("wsbroker")
    except metadata.PackageNotFoundError:
        return "unknown"
