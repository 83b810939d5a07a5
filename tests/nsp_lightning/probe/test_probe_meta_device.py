"""A probe on the meta device is refused by name when the callback is made (issue 22: 12)."""

from __future__ import annotations

import pytest
import torch

from nsp_lightning import ProbeCallback, SpectrumCallback
from nsp_lightning.analyses import SpectrumAnalysis


@pytest.mark.reliability
def test_a_probe_on_the_meta_device_is_refused_by_name():
    meta = torch.empty(2, 1, 6, 6, device="meta")
    with pytest.raises(ValueError, match=r"ProbeCallback\(probe\): the probe is on the meta device"):
        ProbeCallback(meta, [SpectrumAnalysis()])
    with pytest.raises(ValueError, match=r"SpectrumCallback\(probe\): the probe is on the meta device"):
        SpectrumCallback(meta)
