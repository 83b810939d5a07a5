"""Module paths that moved, kept importable for code written against them.

nsp's modules live in one folder per tool (:mod:`nsp.graph`, :mod:`nsp.transforms`,
:mod:`nsp.viz`, ...). Code written against an older path, or against the seed's module
names (``nsp.nngraph``, ``nsp.outputLoader``, ...), still imports: :class:`MovedModules`
answers such an import with the module at its new path, the same object, so patching one
patches the other. No file exists at the old path, so the tree shows only the new layout.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Mapping
from types import ModuleType

__all__ = ["MovedModules", "install"]


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta-path finder that imports ``old`` as the module at ``moved[old]``.

    Parameters
    ----------
    moved : Mapping[str, str]
        Old dotted module path to new dotted module path.
    """

    def __init__(self, moved: Mapping[str, str]) -> None:
        self.moved = dict(moved)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.moved:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.moved[spec.name])
        # The import system stamps the alias's spec on the module it gets back; the module
        # keeps its own, so that reloading, pickling and tracebacks name the real file.
        self._specs = getattr(self, "_specs", {})
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install(moved: Mapping[str, str]) -> None:
    """Make every old path in ``moved`` importable as its new module (once per mapping)."""
    if not any(isinstance(f, MovedModules) and f.moved == dict(moved) for f in sys.meta_path):
        sys.meta_path.append(MovedModules(moved))
