"""captum, imported on first use (the optional extra ``nsp-lightning[attribution]``)."""

from __future__ import annotations

import importlib
from types import ModuleType


def captum_attr(where: str) -> ModuleType:
    """``captum.attr``, or an ImportError that names the extra to install."""
    try:
        return importlib.import_module("captum.attr")
    except ImportError as err:
        raise ImportError(
            f"{where} needs captum, an optional dependency: pip install 'nsp-lightning[attribution]'"
        ) from err
