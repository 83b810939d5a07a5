"""Plumbing every tool shares, written once.

==========================  ================================================================
:mod:`nsp.common.tracer`    the op tracer (a ``TorchFunctionMode`` that knows module paths)
:mod:`nsp.common.layers`    the layer resolver (a ``layer=`` argument, name or module, to the module)
:mod:`nsp.common.memory`    the memory limit, and refusals with an estimate
:mod:`nsp.common.progress`  progress messages of long computations (the ``nsp`` logger)
==========================  ================================================================
"""
