"""Force how INCL=False ancestor sets are chunked, so tests reach every representation."""

import itertools

import pytest

from nsp.transforms import ancestor_sets

MODES = ("auto", "sparse", "dense", "alternate")


def force(monkeypatch: pytest.MonkeyPatch, mode: str, chunk: int) -> None:
    """Rows per chunk near ``chunk`` candidate pairs; every chunk sparse, dense, in turn, or by size ('auto')."""
    monkeypatch.setattr(ancestor_sets, "_CHUNK_ENTRIES", chunk)
    choices = {"sparse": itertools.repeat(True), "dense": itertools.repeat(False),
               "alternate": itertools.cycle([True, False, False])}
    if mode != "auto":
        monkeypatch.setattr(ancestor_sets, "_prefer_sparse", lambda nnz, rows, n_cols, it=choices[mode]: next(it))
