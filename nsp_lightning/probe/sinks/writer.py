"""The background thread that hands each record's :class:`LogSink` to the loggers' sinks, in record order."""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Sequence

from nsp_lightning.probe.sinks.sink import LogSink, MediaSink

__all__ = ["BackgroundWriter", "write_sinks"]


def write_sinks(sink: LogSink, targets: Sequence[MediaSink]) -> None:
    """Write ``sink`` to every logger's sink in ``targets``; one that fails does not keep the others from theirs.

    Images drawn later (:meth:`LogSink.image_later`) are drawn first, in the drawing helper
    process (:mod:`~nsp_lightning.probe.sinks.drawer`), which also writes them to the
    TensorBoard runs of the sinks that name one (:meth:`MediaSink.image_runs`); one whose
    drawing fails is left out, and the others are written.

    Raises
    ------
    RuntimeError
        Naming each image that could not be drawn and each logger that could not take
        ``sink``, with their errors, after all were tried.
    """
    import nsp.viz.render
    from nsp_lightning.probe.sinks.drawer import DrawingError, ImageEvents, draw_images

    # Figures and images drawn later are drawn once, however many loggers take them: figures on this (the
    # writer's) thread, images drawn later in the drawing helper process (which holds no GIL of training's).
    later = [(tag, value) for kind, tag, value, _ in sink.items if kind == "later"]
    # A target that is no MediaSink takes images and names no run of its own.
    own = [getattr(target, "image_runs", lambda _: [])(sink) for target in targets]
    runs = [run for runs_of_target in own for run in runs_of_target]
    # The helper writes the TensorBoard runs itself: the images come back only for a logger that takes them here.
    keep = any("image" in getattr(target, "takes", {"image"}) and not mine for target, mine in zip(targets, own))
    events = ImageEvents(runs, [tag for tag, _ in later], sink.step, keep) if runs and later else None
    drawn = iter(draw_images([value for _, value in later], events))
    items, failed = [], []
    for kind, tag, value, options in sink.items:
        if kind == "figure":
            items.append(("image", tag, nsp.render.figure_to_rgb(value), {"dataformats": "HWC"}))
        elif kind == "later":
            image = next(drawn)
            if isinstance(image, DrawingError):
                failed.append(f"drawing {tag}: {image}")
            elif image is not None:
                items.append(("image", tag, image, {**options, "in_image_runs": True} if events else options))
        else:
            items.append((kind, tag, value, options))
    sink.items = items
    for target in targets:
        try:
            target.write(sink)
        except Exception as err:  # the other loggers still get the record; the error is raised below
            failed.append(f"{target.name}: {type(err).__name__}: {err}")
    if failed:
        raise RuntimeError("; ".join(failed))


class BackgroundWriter:
    """Hands sinks to their writers on one background thread, in the order they were submitted.

    :meth:`submit` returns at once unless ``capacity`` sinks are waiting already (then it
    waits for room: a writer slower than training holds training back rather than letting
    images pile up in memory). :meth:`close` waits until everything submitted is written;
    call it before the writers are closed. The thread and its queue are made at the first
    :meth:`submit` and dropped at :meth:`close` (a later :meth:`submit` makes them again),
    so that a closed writer can be pickled, as ``ddp_spawn`` pickles callbacks. The thread runs at
    the lowest priority where the system sets one per thread (Linux).

    Parameters
    ----------
    write : callable, default :func:`write_sinks`
        ``write(sink, writers)``, called on the background thread.
    capacity : int, default 4
        How many sinks may wait to be written.
    """

    def __init__(self, write: Callable[[LogSink, Sequence[Any]], None] | None = None, capacity: int = 4) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"BackgroundWriter(capacity={capacity!r}): expected an int >= 1")
        self._write = write_sinks if write is None else write
        self._capacity = capacity
        self._queue: queue.Queue[tuple[LogSink, Sequence[Any]] | None] | None = None
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []

    def submit(self, sink: LogSink, writers: Sequence[Any]) -> None:
        """Write ``sink`` to ``writers`` on the background thread, after everything submitted before it."""
        if not sink.items or not writers:
            return
        if self._thread is None or self._queue is None or not self._thread.is_alive():
            self._queue = queue.Queue(maxsize=self._capacity)
            # A daemon, so that an interpreter ending without close() is not held up; close() is what
            # guarantees that nothing is lost.
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="nsp-tensorboard-writer", daemon=True
            )
            self._thread.start()
        self._queue.put((sink, list(writers)))

    def close(self) -> list[str]:
        """Wait until every submitted sink is written, end the thread; return what could not be written.

        Returns
        -------
        list of str
            One line per sink whose writing raised (its tag prefix, step and the error), in order.
        """
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
        self._thread = self._queue = None
        errors, self._errors = self._errors, []
        return errors

    def _run(self, jobs: queue.Queue[tuple[LogSink, Sequence[Any]] | None]) -> None:
        # The lowest priority (Linux sets it per thread): encoding takes the CPU time that
        # training leaves, not training's.
        if hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:
                pass
        while True:
            item = jobs.get()
            if item is None:
                return
            sink, writers = item
            try:
                self._write(sink, writers)
            except Exception as err:  # reported by close(): the training thread decides what to do
                self._errors.append(f"{sink.prefix} at step {sink.step}: {type(err).__name__}: {err}")
