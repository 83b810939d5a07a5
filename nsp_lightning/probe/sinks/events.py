"""TensorBoard event files of nsp's own, for the images drawn later: written with a vectorised CRC-32C.

TensorBoard without TensorFlow checksums every event record with a pure-Python CRC-32C
(``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c``): about 0.23 s,
holding the GIL, for the 2 MB of PNG of one spectrum record, about a tenth of the digits
demo's epoch. The images drawn later (:meth:`~nsp_lightning.probe.sinks.sink.LogSink.image_later`)
are therefore written here, by whichever process drew them (the drawing helper, as a
rule), into a run directory of their own that no other writer touches: TensorBoard reads
one event file of a directory at a time, so two writers must not share one. The records
are TensorBoard's (``tensorflow/core/lib/io/record_writer.cc``): the length (8 bytes, little
endian), its masked CRC-32C, the serialized ``Event``, its masked CRC-32C. The CRCs of a
whole record are computed at once, in numpy (:func:`crc32c_many`).

Each writing process appends to one file per directory (``events.out.tfevents.<time>.
<host>.<pid>.nsp``), opened and closed at every call, so nothing needs closing at the end.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Sequence

import numpy as np

__all__ = ["crc32c_many", "masked_crc32c", "write_image_events"]

# CRC-32C (Castagnoli), reflected: the polynomial 0x1EDC6F41 bit-reversed.
_POLY = 0x82F63B78
# Bytes per lane of the vectorised CRC: every message is cut into chunks of this many.
_CHUNK = 256


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()
# _SHIFTS[k]: (4, 256) tables of the linear map "the CRC register run over _CHUNK * 2**k zero bytes".
_SHIFTS: list[np.ndarray] = []
_shift_lock = threading.Lock()


def _run_zero_bytes(registers: np.ndarray, count: int) -> np.ndarray:
    for _ in range(count):
        registers = _TABLE[registers & 0xFF] ^ (registers >> 8)
    return registers


def _apply(tables: np.ndarray, registers: np.ndarray) -> np.ndarray:
    """The linear map of ``tables`` (one 256-entry table per byte of the register) applied to ``registers``."""
    return (tables[0][registers & 0xFF] ^ tables[1][(registers >> 8) & 0xFF]
            ^ tables[2][(registers >> 16) & 0xFF] ^ tables[3][registers >> 24])


def _tables_of(images: np.ndarray) -> np.ndarray:
    """The byte tables of the linear map that sends bit ``i`` to ``images[i]`` (32 values)."""
    values = np.arange(256)
    bits = ((values[:, None] >> np.arange(8)) & 1).astype(bool)  # (256, 8)
    tables = np.zeros((4, 256), np.uint32)
    for byte in range(4):
        for bit in range(8):
            tables[byte][bits[:, bit]] ^= images[8 * byte + bit]
    return tables


def _shift(level: int) -> np.ndarray:
    """The tables of running the register over ``_CHUNK * 2**level`` zero bytes, made once."""
    with _shift_lock:
        while len(_SHIFTS) <= level:
            basis = np.uint32(1) << np.arange(32, dtype=np.uint32)
            images = _run_zero_bytes(basis, _CHUNK) if not _SHIFTS else _apply(_SHIFTS[-1], _apply(_SHIFTS[-1], basis))
            _SHIFTS.append(_tables_of(images))
        return _SHIFTS[level]


def crc32c_many(messages: Sequence[bytes]) -> np.ndarray:
    """The CRC-32C of each of ``messages``, computed together: uint32, one per message.

    Each message is cut into chunks of 256 bytes (zero-padded at its front: a CRC register
    that starts at zero stays zero over zero bytes), every chunk of every message is run
    through the byte table at once, one byte column at a time, and each chunk's register
    is moved past the chunks after it (a linear map over zero bytes, applied by tables for
    256·2^k bytes) before a message's chunks are combined by XOR. The initial value
    0xFFFFFFFF is folded in by inverting a message's first four bytes; messages shorter
    than that are run byte by byte.
    """
    result = np.zeros(len(messages), np.uint32)
    long = [i for i, m in enumerate(messages) if len(m) >= 4]
    for i, message in enumerate(messages):
        if len(message) < 4:
            register = 0xFFFFFFFF
            for byte in message:
                register = int(_TABLE[(register ^ byte) & 0xFF]) ^ (register >> 8)
            result[i] = register ^ 0xFFFFFFFF
    if not long:
        return result
    chunks = [-(-len(messages[i]) // _CHUNK) for i in long]
    lanes = np.zeros((sum(chunks), _CHUNK), np.uint8)
    # Where each message's chunks start among the lanes, and how many chunks follow each chunk in its message.
    starts = np.concatenate([[0], np.cumsum(chunks)[:-1]]).astype(np.int64)
    flat = lanes.reshape(-1)
    for i, start, count in zip(long, starts, chunks):
        message = np.frombuffer(messages[i], np.uint8)
        end = (start + count) * _CHUNK
        flat[end - message.size:end] = message
        flat[end - message.size:end - message.size + 4] ^= 0xFF
    columns = np.ascontiguousarray(lanes.T)
    registers = np.zeros(lanes.shape[0], np.uint32)
    for column in columns:
        registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
    after = np.repeat(np.asarray(chunks) + starts, chunks) - 1 - np.arange(lanes.shape[0])
    level = 0
    while after.any():
        moved = (after >> level) & 1 == 1
        if moved.any():
            registers[moved] = _apply(_shift(level), registers[moved])
        after = np.where(moved, after - (1 << level), after)
        level += 1
    result[long] = np.bitwise_xor.reduceat(registers, starts) ^ np.uint32(0xFFFFFFFF)
    return result


def masked_crc32c(data: bytes) -> int:
    """The CRC-32C of ``data`` masked as TFRecord masks it (rotated right by 15 bits, plus 0xa282ead8)."""
    return _mask(int(crc32c_many([data])[0]))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _records(events: Sequence[bytes]) -> bytes:
    """``events`` (serialized ``Event`` protos) framed as TFRecords, every CRC computed in one call."""
    heads = [struct.pack("<Q", len(event)) for event in events]
    crcs = crc32c_many([m for pair in zip(heads, events) for m in pair])
    return b"".join(
        head + struct.pack("<I", _mask(int(crcs[2 * i]))) + event + struct.pack("<I", _mask(int(crcs[2 * i + 1])))
        for i, (head, event) in enumerate(zip(heads, events))
    )


_files: dict[str, str] = {}
_files_lock = threading.Lock()


def _event_file(directory: str) -> tuple[str, bool]:
    """This process's event file in ``directory`` and whether it is new (named as TensorBoard names its own)."""
    with _files_lock:
        path = _files.get(directory)
        if path is not None and os.path.exists(path):
            return path, False
        os.makedirs(directory, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.nsp"
        _files[directory] = path = os.path.join(directory, name)
        return path, True


def write_image_events(
    directories: Sequence[str], tags: Sequence[str], images: Sequence[tuple[bytes, tuple[int, int, int]] | None],
    step: int,
) -> None:
    """Append one image summary per ``(png, (height, width, channels))`` of ``images`` to every directory's event file.

    Parameters
    ----------
    directories : sequence of str
        TensorBoard run directories that only this module writes to (made if missing).
    tags : sequence of str
        Each image's tag.
    images : sequence of (bytes, tuple) or None
        Each image's PNG and shape; None (an image that could not be drawn) is skipped.
    step : int
        The step of every image.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    walltime = time.time()
    events = [
        Event(wall_time=walltime, step=step, summary=Summary(value=[Summary.Value(tag=tag, image=Summary.Image(
            height=shape[0], width=shape[1], colorspace=shape[2], encoded_image_string=png))])).SerializeToString()
        for tag, image in zip(tags, images) if image is not None for png, shape in [image]
    ]
    if not events:
        return
    body = _records(events)
    for directory in directories:
        path, new = _event_file(directory)
        with open(path, "ab") as handle:
            if new:
                handle.write(_records([Event(wall_time=walltime, file_version="brain.Event:2").SerializeToString()]))
            handle.write(body)
