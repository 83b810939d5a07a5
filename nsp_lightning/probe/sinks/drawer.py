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
spectrum record instead of about 60 MB of pixels. Given `ImageEvents`, it writes them to
TensorBoard event files itself (:mod:`~nsp_lightning.probe.sinks.events`), so that neither
the PNG nor TensorBoard's checksum of it costs the training process anything; then only
their shapes come back, unless another logger needs the images.

Nothing crossing the pipe is pickled. A job names its function (``module:qualname``), which
must be registered with :func:`drawable`; its arguments are JSON (numbers, strings, lists,
tuples, dicts, the dataclasses registered with :func:`drawable_value`) and numpy arrays
saved with ``allow_pickle=False``. A job that cannot be sent so (a lambda, say) is drawn in
the calling thread; so is every job once the helper cannot be started or has died (with
one warning). No Lightning.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
import warnings
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np

from nsp.viz.png import PalettedImage, encode_png

__all__ = ["DrawingError", "EncodedImage", "ImageEvents", "draw_images", "drawable", "drawable_value", "stop_drawing"]

Job = tuple[Callable[..., np.ndarray], tuple[Any, ...], dict[str, Any]]
_FRAME = struct.Struct(">Q")


class DrawingError(RuntimeError):
    """A drawing function raised: its error, as text (the helper sends text, not exceptions)."""


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
            # A palette PNG (a card) reads as its indices: its RGB pixels are what was drawn.
            array = np.asarray(image.convert("RGB") if image.mode == "P" else image)
        return array if dtype is None else array.astype(dtype)


@dataclasses.dataclass(frozen=True)
class ImageEvents:
    """Where :func:`draw_images` writes the images it draws as TensorBoard image summaries.

    Parameters
    ----------
    directories : list of str
        Run directories only nsp's event writer writes to (`~nsp_lightning.probe.sinks.events`).
    tags : list of str
        One tag per job.
    step : int
        The step of every image.
    keep : bool
        Whether the images are returned too (another logger takes them), or only written.
    """

    directories: list[str]
    tags: list[str]
    step: int
    keep: bool


_DRAWINGS: dict[str, Callable[..., np.ndarray]] = {}
_VALUES: dict[str, type] = {}


def _name(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def drawable(draw: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Register ``draw`` (a module-level function) as one the helper process may run; returns it.

    The helper imports ``draw``'s module by name and runs it only if that import registered it.
    """
    _DRAWINGS[_name(draw)] = draw
    return draw


def drawable_value(cls: type) -> type:
    """Register a dataclass whose instances may be a drawing's argument (rebuilt from its fields); returns it."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"nsp_lightning drawer: {cls!r} is not a dataclass")
    _VALUES[_name(cls)] = cls
    return cls


def _encode(value: Any, blobs: list[np.ndarray]) -> Any:
    """``value`` as JSON, its arrays appended to ``blobs``; TypeError for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError("an object array")
        blobs.append(array)
        return {"$a": len(blobs) - 1}
    if isinstance(value, bytes):
        blobs.append(np.frombuffer(value, np.uint8))
        return {"$b": len(blobs) - 1}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, blobs) for v in value]
        return items if isinstance(value, list) else {"$t": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"$d": {k: _encode(v, blobs) for k, v in value.items()}}
    if _name(type(value)) in _VALUES:
        return {"$c": _name(type(value)),
                "f": {f.name: _encode(getattr(value, f.name), blobs) for f in dataclasses.fields(value)}}
    raise TypeError(f"{type(value).__qualname__} cannot be sent to the drawing helper")


def _decode(value: Any, blobs: list[np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, blobs) for v in value]
    if not isinstance(value, dict):
        return value
    if "$a" in value:
        array = blobs[value["$a"]]
        return array[()] if array.ndim == 0 else array
    if "$b" in value:
        return blobs[value["$b"]].tobytes()
    if "$t" in value:
        return tuple(_decode(v, blobs) for v in value["$t"])
    if "$d" in value:
        return {k: _decode(v, blobs) for k, v in value["$d"].items()}
    if value["$c"] not in _VALUES:
        raise TypeError(f"nsp_lightning drawing helper: {value['$c']} is not registered with drawable_value()")
    return _VALUES[value["$c"]](**{k: _decode(v, blobs) for k, v in value["f"].items()})


def _pack(tree: Any) -> bytes:
    """``tree`` as bytes: its JSON, then each array as a ``.npy`` file; TypeError if it cannot be sent."""
    blobs: list[np.ndarray] = []
    head = json.dumps(_encode(tree, blobs)).encode()
    out = io.BytesIO()
    out.write(_FRAME.pack(len(head)) + head)
    for array in blobs:
        data = io.BytesIO()
        np.save(data, array, allow_pickle=False)
        out.write(_FRAME.pack(data.tell()) + data.getvalue())
    return out.getvalue()


def _read(payload: bytes) -> tuple[Any, list[np.ndarray]]:
    """`_pack`'s JSON and arrays, read back (arrays with ``allow_pickle=False``), not yet decoded."""
    source = io.BytesIO(payload)
    (size,) = _FRAME.unpack(source.read(_FRAME.size))
    tree = json.loads(source.read(size))
    blobs = []
    while head := source.read(_FRAME.size):
        (size,) = _FRAME.unpack(head)
        blobs.append(np.load(io.BytesIO(source.read(size)), allow_pickle=False))
    return tree, blobs


def _pack_jobs(jobs: Sequence[Job], events: ImageEvents | None = None) -> bytes:
    names = []
    for draw, _, _ in jobs:
        name = _name(draw) if hasattr(draw, "__qualname__") and hasattr(draw, "__module__") else ""
        if _DRAWINGS.get(name) is not draw or name.startswith("__main__:"):
            # The helper's own __main__ is not the caller's script: it could not find the drawing there.
            raise TypeError(f"{draw!r} is not registered with drawable() in an importable module")
        names.append(name)
    where = None if events is None else dataclasses.asdict(events)
    return _pack({"jobs": [[name, list(args), kwargs] for name, (_, args, kwargs) in zip(names, jobs)], "events": where})


def _unpack_jobs(payload: bytes) -> tuple[list[Job], ImageEvents | None]:
    tree, blobs = _read(payload)
    where = tree["$d"]["events"]
    events = None if where is None else ImageEvents(**_decode(where, blobs))
    tree = tree["$d"]["jobs"]
    for name, _, _ in tree:
        # Importing a drawing's module registers it and the values it takes, before they are decoded.
        importlib.import_module(name.partition(":")[0])
        if name not in _DRAWINGS:
            raise TypeError(f"nsp_lightning drawing helper: {name} is not registered with drawable()")
    jobs = [(_DRAWINGS[name], tuple(_decode(args, blobs)), _decode(kwargs, blobs)) for name, args, kwargs in tree]
    return jobs, events


def _pack_images(images: Sequence[np.ndarray | EncodedImage | DrawingError | None]) -> bytes:
    tree = [{"png": image.png, "shape": list(image.shape)} if isinstance(image, EncodedImage)
            else {"error": str(image)} if isinstance(image, DrawingError) else image for image in images]
    return _pack(tree)


def _unpack_images(payload: bytes) -> list[np.ndarray | EncodedImage | DrawingError | None]:
    return [EncodedImage(item["png"], tuple(item["shape"])) if isinstance(item, dict) and "png" in item
            else DrawingError(item["error"]) if isinstance(item, dict) else item for item in _decode(*_read(payload))]


def _draw(job: Job, paletted: bool = False) -> np.ndarray | PalettedImage | DrawingError:
    """The job's image, as an array (a `PalettedImage` kept as it is if ``paletted``), or why it failed."""
    draw, args, kwargs = job
    try:
        image = draw(*args, **kwargs)
        return image if paletted and isinstance(image, PalettedImage) else np.asarray(image)
    except Exception as err:  # reported per image by the caller; the others are still drawn
        return DrawingError(f"{getattr(draw, '__qualname__', draw)}: {type(err).__name__}: {err}")


def _draw_encoded(job: Job) -> np.ndarray | EncodedImage | DrawingError:
    """`_draw`, with an RGB(A) uint8 image encoded here: a PNG crosses the pipe, not 30 times its bytes in pixels.

    A `PalettedImage` (a card) is encoded as a palette PNG, a third of the bytes to compress and write.
    """
    image = _draw(job, paletted=True)
    if isinstance(image, PalettedImage):
        return EncodedImage(encode_png(image), image.shape)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4) \
            and image.shape[0] and image.shape[1]:
        return EncodedImage(encode_png(image), image.shape)
    return image


def _draw_all(jobs: Sequence[Job], events: ImageEvents | None) -> list[np.ndarray | EncodedImage | DrawingError | None]:
    """Every job drawn and encoded here; with ``events``, written as TensorBoard events, and None where not kept."""
    from nsp_lightning.probe.sinks.events import write_image_events

    images = [_draw_encoded(job) for job in jobs]
    if events is None:
        return images
    # An image the loggers could not take as it is (not RGB(A) uint8) is refused, as it would be by TensorBoard.
    images = [image if isinstance(image, (EncodedImage, DrawingError))
              else DrawingError(f"{getattr(job[0], '__qualname__', job[0])}: expected a uint8 (H, W, 3 or 4) image,"
                                f" got {image.dtype} {list(image.shape)}") for image, job in zip(images, jobs)]
    try:
        write_image_events(events.directories, events.tags,
                           [(i.png, i.shape) if isinstance(i, EncodedImage) else None for i in images], events.step)
    except OSError as err:  # a full disk, say: every image of the call is reported missing
        return [DrawingError(f"writing TensorBoard events: {type(err).__name__}: {err}")] * len(images)
    return [image if events.keep or isinstance(image, DrawingError) else None for image in images]


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
            # `-c` puts the working directory first on sys.path: dropped, so that another checkout there is not
            # imported instead of this process's own modules (the parent's sys.path is the PYTHONPATH above).
            [sys.executable, "-c",
             "import sys; del sys.path[0]; from nsp_lightning.probe.sinks.drawer import _serve; _serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )

    def draw(self, payload: bytes) -> list[np.ndarray | EncodedImage | DrawingError]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.lock:
            _send(self.process.stdin, payload)
            answer = _receive(self.process.stdout)
        if answer is None:
            raise EOFError(f"nsp_lightning drawing helper ended (exit code {self.process.poll()})")
        return _unpack_images(answer)

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


def draw_images(
    jobs: Sequence[Job], events: ImageEvents | None = None
) -> list[np.ndarray | EncodedImage | DrawingError | None]:
    """Run every ``draw(*args, **kwargs)`` of ``jobs``, in the helper process where they can be sent there.

    Parameters
    ----------
    jobs : sequence of (callable, tuple, dict)
        The drawing functions (registered with `drawable`) and their arguments.
    events : ImageEvents, optional
        Write every image as a TensorBoard image summary there, from the process that drew
        it (the helper, or this one where the helper cannot draw them). An image that is
        not RGB(A) uint8 is then a `DrawingError`.

    Returns
    -------
    list
        Per job, its image: an `EncodedImage` where an RGB(A) uint8 image was drawn (in the
        helper, or here with ``events``), else a numpy array; None where ``events`` wrote it
        and does not keep it; or a `DrawingError` saying why it failed.
    """
    global _broken, _helper
    if not jobs:
        return []
    if events is not None and len(events.tags) != len(jobs):
        raise ValueError(f"draw_images: {len(jobs)} jobs but {len(events.tags)} tags in events")
    try:
        payload = _pack_jobs(jobs, events)
    except TypeError:  # an unregistered function or an argument JSON cannot carry: drawn here
        return _draw_all(jobs, events) if events is not None else [_draw(job) for job in jobs]
    helper = _the_helper()
    if helper is not None:
        try:
            return helper.draw(payload)
        except (OSError, EOFError, ValueError) as err:
            with _start_lock:
                _broken, _helper = True, None
            helper.process.kill()
            warnings.warn(f"nsp_lightning: the drawing helper process failed ({type(err).__name__}: {err}); images are"
                          " drawn on the writer thread from now on", RuntimeWarning, stacklevel=2)
    return _draw_all(jobs, events) if events is not None else [_draw(job) for job in jobs]


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
        try:
            answer = _pack_images(_draw_all(*_unpack_jobs(payload)))
        except Exception as err:  # a job it cannot read: the caller hears it as the helper's failure
            print(f"nsp_lightning drawing helper: {type(err).__name__}: {err}", file=sys.stderr)
            return
        _send(out, answer)

