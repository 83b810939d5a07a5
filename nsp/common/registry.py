"""A table of entries that refuses to replace one silently, as ``torch.utils.flop_counter``'s does.

The op rules (:mod:`nsp.graph.rules`), the attribution methods (:mod:`nsp.attribution`) and
the transforms chosen by name (:mod:`nsp.transforms.transformer`) each keep one. It reads
like a dict; it changes only through :meth:`Registry.register` (which refuses to replace
an entry unless told to), :meth:`Registry.unregister` and the scoped :meth:`Registry.using`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry"]

V = TypeVar("V")


class Registry(Mapping[Hashable, V], Generic[V]):
    """Entries by key, read as a mapping, changed through ``register``/``unregister``/``using``.

    Parameters
    ----------
    owner : str
        The public module whose functions wrap this registry (``'nsp.rules'``): messages
        name ``{owner}.register_{kind}``, ``{owner}.unregister_{kind}`` and ``{owner}.{using}``.
    kind : str
        What an entry is (``'rule'``, ``'method'``, ``'transform'``).
    using : str
        The name of the owner's scoped override.
    check : callable, optional
        ``check(key, value, where)`` raises ``TypeError`` for an entry the registry refuses.
    identity : callable, optional
        ``identity(key)``: equal for keys that name one thing (a function and its name),
        so that registering one refuses to shadow the other. By default the key itself.
    describe : callable, optional
        How messages name a key; by default ``repr``.

    Examples
    --------
    >>> colours = Registry("my.palette", "colour", "using_colours")
    >>> colours.register("red", "#f00")
    >>> with colours.using({"red": "#e00", "blue": "#00f"}):
    ...     dict(colours)
    {'red': '#e00', 'blue': '#00f'}
    >>> dict(colours)
    {'red': '#f00'}
    """

    def __init__(self, owner: str, kind: str, using: str, check: Callable[[Hashable, V, str], None] | None = None,
                 identity: Callable[[Hashable], Hashable] | None = None,
                 describe: Callable[[Hashable], str] = repr) -> None:
        self.owner, self.kind, self.using_name = owner, kind, using
        self._check = check
        self._identity = identity or (lambda key: key)
        self.describe = describe
        self._entries: dict[Hashable, V] = {}
        # The keys of each identity, in order of registration.
        self._named: dict[Hashable, list[Hashable]] = {}

    def __getitem__(self, key: Hashable) -> V:
        return self._entries[key]

    # Mapping's own get and __contains__ go through __getitem__ and a KeyError per miss;
    # rule look-ups (every module and op of a recorded forward pass) mostly miss.
    def get(self, key: Hashable, default: V | None = None) -> V | None:
        return self._entries.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{self.owner} registry of {len(self)} {self.kind}s>"

    def same(self, key: Hashable) -> list[Hashable]:
        """The keys that name the same thing as ``key`` (``key`` itself first, if present)."""
        keys = self._named.get(self._identity(key), [])
        return [key] + [k for k in keys if k != key] if key in self._entries else list(keys)

    def _set(self, key: Hashable, value: V) -> None:
        if key not in self._entries:
            self._named.setdefault(self._identity(key), []).append(key)
        self._entries[key] = value

    def register(self, key: Hashable, value: V, *, override: bool = False, where: str | None = None) -> None:
        """File ``value`` under ``key``; ``where`` names the caller in messages.

        Raises
        ------
        ValueError
            If ``key``, or a key naming the same thing, has an entry and ``override`` is false.
        TypeError
            If the registry's ``check`` refuses the entry.
        """
        where = where or f"{self.owner}.register_{self.kind}"
        if self._check is not None:
            self._check(key, value, where)
        clash = self.same(key)
        if clash and not override:
            other = clash[0]
            under = "" if other == key else f", registered as {self.describe(other)}"
            raise ValueError(
                f"{where}: {self.describe(key)} already has a {self.kind} ({_name(self._entries[other])}{under}); "
                f"pass override=True to replace it, or use {self.owner}.{self.using_name} to replace it in a block"
            )
        self._set(key, value)

    def unregister(self, key: Hashable) -> V:
        """Remove the entry filed under ``key`` and return it.

        Raises
        ------
        KeyError
            If ``key`` has no entry of its own (the message names the key that has one).
        """
        if key in self._entries:
            keys = self._named[self._identity(key)]
            keys.remove(key)
            if not keys:
                del self._named[self._identity(key)]
            return self._entries.pop(key)
        where = f"{self.owner}.unregister_{self.kind}"
        others = self.same(key)
        if others:
            raise KeyError(f"{where}: {self.describe(key)} has no {self.kind} of its own; its {self.kind} is "
                           f"registered as {self.describe(others[0])}")
        raise KeyError(f"{where}: {self.describe(key)} has no {self.kind}")

    @contextlib.contextmanager
    def using(self, overrides: Mapping[Hashable, V]) -> Iterator[None]:
        """Within the block, ``overrides`` replace or add entries; on leaving it, even by an
        exception, the registry is exactly as it was (also undoing registrations made inside)."""
        if not isinstance(overrides, Mapping):
            raise TypeError(f"{self.owner}.{self.using_name}: expected a mapping of keys to {self.kind}s, "
                            f"got {type(overrides).__name__}")
        saved = dict(self._entries)
        saved_named = {ident: list(keys) for ident, keys in self._named.items()}
        try:
            for key, value in overrides.items():
                self.register(key, value, override=True, where=f"{self.owner}.{self.using_name}")
            yield
        finally:
            self._entries.clear()
            self._entries.update(saved)
            self._named = saved_named


def _name(value: object) -> str:
    """A short name of an entry: a class's or function's name, else the type of an instance."""
    return getattr(value, "__qualname__", None) or type(value).__name__
