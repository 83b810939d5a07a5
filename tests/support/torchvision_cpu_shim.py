"""Let PyPI's torchvision import beside the CPU build of torch, in the test environment only.

PyPI's torchvision 0.28 wheel carries C ops built for the CUDA build of torch. They fail to
load on the CPU build, and ``torchvision/_meta_registrations.py`` then raises
``RuntimeError: operator torchvision::nms does not exist`` while registering fake kernels
for them, which breaks ``import torchvision`` and, through it, ``import lightning``. The
model definitions (``torchvision.models``) need none of those ops, so this finder replaces
that one module with an empty one.

``make install`` copies this file into the virtual environment's site-packages with a
``.pth`` line that imports it, so subprocesses of the tests (DDP workers) get it too. It
is never part of the runtime package.
"""

import importlib.abc
import importlib.machinery
import sys

_SKIPPED = "torchvision._meta_registrations"


class _SkipMetaRegistrations(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == _SKIPPED:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__doc__ = "Skipped by the nsp test environment: see torchvision_cpu_shim."


if not any(isinstance(finder, _SkipMetaRegistrations) for finder in sys.meta_path):
    sys.meta_path.insert(0, _SkipMetaRegistrations())
