"""When a :class:`~nsp_lightning.ProbeCallback` records: the baseline, then every n epochs or chosen epochs.

Records are numbered by the training epochs completed: record 0 is the baseline before
any training step, record ``k`` is taken at the end of Lightning's epoch ``k - 1``. No
Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Iterable

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """The records a callback takes, besides the baseline, which it always takes.

    Attributes
    ----------
    every_n_epochs : int or None
        Record every ``n`` training epochs (None when ``epochs`` is given).
    epochs : frozenset of int or None
        Record after exactly these numbers of completed epochs.
    """

    every_n_epochs: int | None
    epochs: frozenset[int] | None

    @classmethod
    def from_arguments(cls, every_n_epochs: int | None, epochs: Iterable[int] | None, who: str) -> "Schedule":
        """The schedule a callback's ``every_n_epochs`` and ``epochs`` arguments ask for (default: every epoch).

        Parameters
        ----------
        every_n_epochs : int or None
            An int ``>= 1``.
        epochs : iterable of int or None
            A non-empty collection of ints ``>= 0``; exclusive with ``every_n_epochs``.
        who : str
            The callback, for the messages.

        Raises
        ------
        TypeError
            If ``epochs`` is not an iterable.
        ValueError
            If both are given, or either is invalid.

        Examples
        --------
        >>> Schedule.from_arguments(None, [5, 1], "ProbeCallback").due(5)
        True
        """
        if every_n_epochs is not None and epochs is not None:
            raise ValueError(f"{who}(every_n_epochs={every_n_epochs!r}, epochs={epochs!r}): pass one of them, not both")
        if epochs is not None:
            if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Iterable):
                raise TypeError(f"{who}(epochs={epochs!r}): expected an iterable of ints >= 0")
            values = list(epochs)
            if not values or not all(isinstance(e, Integral) and not isinstance(e, bool) and e >= 0 for e in values):
                raise ValueError(f"{who}(epochs={epochs!r}): expected a non-empty collection of ints >= 0")
            return cls(None, frozenset(int(e) for e in values))
        if every_n_epochs is None:
            return cls(1, None)
        if not isinstance(every_n_epochs, Integral) or isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise ValueError(f"{who}(every_n_epochs={every_n_epochs!r}): expected an int >= 1")
        return cls(int(every_n_epochs), None)

    def due(self, epoch: int) -> bool:
        """Whether record ``epoch`` (training epochs completed) is taken; the baseline, 0, always is."""
        if epoch == 0:
            return True
        if self.epochs is not None:
            return epoch in self.epochs
        assert self.every_n_epochs is not None
        return epoch % self.every_n_epochs == 0
