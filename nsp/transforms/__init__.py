"""Spectra of activation patterns: each transform is an object you apply to a graph.

=======================================  =====================================================
:mod:`nsp.transforms.causal`             the exact causal (Möbius) transform and its inverse
:mod:`nsp.transforms.limbs`              its exact integers as int64 limbs, rounded once
:mod:`nsp.transforms.product_kernel`     its INCL=True kernel: relations that are products
:mod:`nsp.transforms.product_ops`        that kernel's per-term operations, compiled once
:mod:`nsp.transforms.concatenations`     that kernel's gathers, masks and parts (concatenations)
:mod:`nsp.transforms.ancestor_sets`      its INCL=False kernel: ancestor sets in row chunks
:mod:`nsp.transforms.growth`             its INCL=False growth bound, checked before the sets
:mod:`nsp.transforms.laplacian`          the graph-Laplacian transform (dense eigenbasis)
:mod:`nsp.transforms.laplacian_operator` the graph Laplacian as an operator, at scale
:mod:`nsp.transforms.laplacian_bands`    Laplacian band energies at scale (Chebyshev filters)
:mod:`nsp.transforms.transformer`        transforms by name (``register_transform``), the seed's ``Transformer``
:mod:`nsp.transforms.energy`             per-layer spectral energy and its change over training
:mod:`nsp.transforms.conditioning`       ``rounding_sensitivity`` of a spectrum
=======================================  =====================================================
"""
