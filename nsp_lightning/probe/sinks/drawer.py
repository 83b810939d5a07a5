"""Images drawn in a helper process (:func:`draw_images`), so that drawing holds neither the training thread nor its GIL.

A record's images drawn later (:meth:`~nsp_lightning.probe.sinks.sink.LogSink.image_later`:
the spectrum's cards and change chart, about a hundred a record) are Python and small
numpy operations that hold the GIL. Drawn on the writer thread they still slowed training,
which waits for the GIL, by about as long as they took. They are drawn in one helper
process per Python process instead, at the lowest priority, started at the first record
and shared by every writer of the process; it ends when its process does (or with
:func:`stop_drawing`). The helper is a new Python interpreter that imports this module, run
with the parent's ``sys.path``, so the user's main module is never imported again (as
``multiprocessing``'s spawn would).

The helper also encodes each RGB(A) image as PNG (`EncodedImage`): about 2 MB of PNG a
spectrum record cross the pipe instead of about 60 MB of pixels, and TensorBoard takes the
bytes as they are.

A job ``(draw, args, kwargs)`` whose function or arguments cannot be pickled (a lambda, say)
is drawn in the calling thread; so is every job once the helper cannot be started or has
died (with one warning). No Lightning.
"""

from __future__ import annotations

import atexit
import io
import os
import pickle
import struct
import subprocess
import sys
import threading
import warnings
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

__all__ = ["DrawingError", "EncodedImage", "draw_images", "stop_drawing"]

Job = tuple[Callable[..., np.ndarray], tuple[Any, ...], dict[str, Any]]
_FRAME = struct.Struct(">Q")


class DrawingError(RuntimeError):
    """A drawing function raised: its error, as text (the helper's exceptions may not pickle)."""


class EncodedImage:
    """An RGB(A) image as PNG bytes, as the helper returns it: TensorBoard takes the bytes as they are.

    ``numpy.asarray`` decodes it (for the loggers that take pixels), so it stands wherever
    an image array does.

    Parameters
    ----------
    png : bytes
        The PNG file (`nsp.viz.png.encode_png`).
    shape : tuple of int
        The image's ``(height, width, channels)``.
    """

    def __init__(self, png: bytes, shape: tuple[int, int, int]) -> None:
        self.png = png
        self.shape = tuple(shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as image:
            array = np.asarray(image)
        return array if dtype is None else array.astype(dtype)


def _draw(job: Job) -> np.ndarray | DrawingError:
    draw, args, kwargs = job
    try:
        return np.asarray(draw(*args, **kwargs))
    except Exception as err:  # reported per image by the caller; the others are still drawn
        return DrawingError(f"{getattr(draw, '__qualname__', draw)}: {type(err).__name__}: {err}")


def _draw_encoded(job: Job) -> np.ndarray | EncodedImage | DrawingError:
    """`_draw`, with an RGB(A) uint8 image encoded here: a PNG crosses the pipe, not 30 times its bytes in pixels."""
    from nsp.viz.png import encode_png

    image = _draw(job)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4) \
            and image.shape[0] and image.shape[1]:
        return EncodedImage(encode_png(image), image.shape)
    return image


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes | None:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError(f"nsp_lightning drawing helper: {len(payload)} of {size} bytes")
    return payload


class _Helper:
    """The helper process of one Python process and the lock that keeps one request at a time."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from nsp_lightning.probe.sinks.drawer import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )

    def draw(self, payload: bytes) -> list[np.ndarray | EncodedImage | DrawingError]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.lock:
            _send(self.process.stdin, payload)
            answer = _receive(self.process.stdout)
        if answer is None:
            raise EOFError(f"nsp_lightning drawing helper ended (exit code {self.process.poll()})")
        return pickle.loads(answer)

    def stop(self) -> None:
        with self.lock:
            if self.process.stdin is not None:
                try:
                    self.process.stdin.close()
                except OSError:
                    pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_helper: _Helper | None = None
_broken = False
_start_lock = threading.Lock()


def _the_helper() -> _Helper | None:
    """This process's helper, started now if need be; None once it could not be started or died."""
    global _helper, _broken
    with _start_lock:
        if _helper is not None and _helper.pid != os.getpid():
            _helper = None  # a forked child: its parent's helper is not its own
        if _helper is None and not _broken:
            try:
                _helper = _Helper()
            except OSError as err:
                _broken = True
                warnings.warn(f"nsp_lightning: no drawing helper process ({err}); images are drawn on the writer thread",
                              RuntimeWarning, stacklevel=3)
        return _helper


def draw_images(jobs: Sequence[Job]) -> list[np.ndarray | EncodedImage | DrawingError]:
    """Run every ``draw(*args, **kwargs)`` of ``jobs``, in the helper process where they can be sent there.

    Parameters
    ----------
    jobs : sequence of (callable, tuple, dict)
        The drawing functions (module-level, so that they pickle) and their arguments.

    Returns
    -------
    list
        Per job, its image: an `EncodedImage` where the helper drew an RGB(A) uint8 image,
        else a numpy array; or a `DrawingError` saying why it failed.
    """
    global _broken, _helper
    if not jobs:
        return []
    try:
        payload = pickle.dumps(list(jobs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a lambda or a local function: drawn here
        return [_draw(job) for job in jobs]
    helper = _the_helper()
    if helper is not None:
        try:
            return helper.draw(payload)
        except (OSError, EOFError, pickle.UnpicklingError) as err:
            with _start_lock:
                _broken, _helper = True, None
            helper.process.kill()
            warnings.warn(f"nsp_lightning: the drawing helper process failed ({type(err).__name__}: {err}); images are"
                          " drawn on the writer thread from now on", RuntimeWarning, stacklevel=2)
    return [_draw(job) for job in jobs]


@atexit.register
def stop_drawing() -> None:
    """End this process's helper, if it runs (it ends by itself when this process does)."""
    global _helper
    with _start_lock:
        helper, _helper = _helper, None
    if helper is not None and helper.pid == os.getpid():
        helper.stop()


def _serve() -> None:
    """The helper's loop: read a batch of jobs, answer with their images, until the input ends."""
    if hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 19)  # the CPU time that training leaves
        except OSError:
            pass
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the answers
    source = sys.stdin.buffer
    while True:
        payload = _receive(source)
        if payload is None:
            return
        _send(out, pickle.dumps([_draw_encoded(job) for job in pickle.loads(payload)],
                                protocol=pickle.HIGHEST_PROTOCOL))

