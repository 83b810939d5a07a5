"""nsp.common.modes.eval_mode: eval inside the block, every submodule's own mode after."""

from __future__ import annotations

import pytest
from torch import nn

from nsp.common.modes import eval_mode


def test_mixed_modes_come_back_exactly_also_after_an_exception():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.BatchNorm1d(2)).train()
    net[2].eval()
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(net) as same:
            assert same is net and not any(m.training for m in net.modules())
            raise RuntimeError("inside")
    assert [m.training for m in net.modules()] == [True, True, True, False]
