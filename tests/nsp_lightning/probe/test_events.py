"""nsp's own TensorBoard event files: the vectorised CRC-32C and the image records (issue 21, #7)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New, crc32c, masked_crc32c

from nsp.viz.png import encode_png
from nsp_lightning.probe.sinks import events

# Around the 4 bytes that fold in the initial value, the 256-byte chunks and several powers of two of them.
LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 12, 255, 256, 257, 511, 512, 513, 768, 1023, 1025, 4096, 9999, 65536 + 17]


def test_crc32c_many_is_tensorboards_crc32c_of_each_message():
    rng = np.random.default_rng(0)
    messages = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in LENGTHS]
    messages += [b"\x00" * 300, b"\xff" * 300, b"123456789"]
    got = events.crc32c_many(messages)
    assert got.dtype == np.uint32 and len(got) == len(messages)
    assert [int(c) for c in got] == [crc32c(m) for m in messages]
    assert int(events.crc32c_many([b"123456789"])[0]) == 0xE3069283  # the CRC-32C check value
    # One message at a time gives what a batch gives, whatever its neighbours.
    assert [int(events.crc32c_many([m])[0]) for m in messages] == [int(c) for c in got]
    assert events.crc32c_many([]).shape == (0,)
    for message in messages[:12]:
        assert events.masked_crc32c(message) == masked_crc32c(message)


def png_of(seed: int, height: int, width: int) -> tuple[bytes, tuple[int, int, int]]:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode_png(pixels), pixels.shape


def records_of(path) -> int:
    """How many records TensorBoard's own reader reads from ``path``, checking every CRC."""
    reader, count = PyRecordReader_New(str(path)), 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return count
        count += 1


def test_image_events_read_back_by_tensorboard_with_every_crc_checked(tmp_path):
    runs = [str(tmp_path / "a_images"), str(tmp_path / "b" / "a_images")]
    first = [png_of(0, 5, 7), None, png_of(1, 300, 40)]
    events.write_image_events(runs, ["x/card", "x/missing", "x/tall"], first, step=3)
    events.write_image_events(runs, ["x/card"], [png_of(2, 5, 7)], step=9)
    events.write_image_events(runs, ["x/none"], [None], step=10)  # nothing drawn: nothing written
    for run in runs:
        [path] = list((tmp_path / run).glob("events.out.tfevents.*"))
        assert records_of(path) == 4  # the file version, then three images
        acc = EventAccumulator(run, size_guidance={"images": 0})
        acc.Reload()
        assert sorted(acc.Tags()["images"]) == ["x/card", "x/tall"]
        assert [e.step for e in acc.Images("x/card")] == [3, 9]
        [tall] = acc.Images("x/tall")
        assert (tall.height, tall.width) == (300, 40)
        assert tall.encoded_image_string == first[2][0]
        decoded = np.asarray(Image.open(io.BytesIO(acc.Images("x/card")[1].encoded_image_string)))
        assert np.array_equal(decoded, np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8))


def test_a_corrupted_record_is_refused_by_tensorboards_reader(tmp_path):
    # The read-back test above can fail: TensorBoard's reader checks each CRC.
    events.write_image_events([str(tmp_path)], ["t"], [png_of(0, 4, 4)], step=0)
    [path] = list(tmp_path.glob("events.out.tfevents.*"))
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DataLossError, match="crc32"):
        records_of(path)
