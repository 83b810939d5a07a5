"""All five analyses at their defaults on the digits demo, under a 6 GiB address-space limit (issue 21).

The fit runs in a subprocess whose RLIMIT_AS is 6 GiB: an analysis that tried to allocate
past it would fail (or, without the limit, have the kernel kill the run, as the linear
regions' old default box did at 11.7 GB). The fit must complete; a record that cannot be
taken must be refused with a warning that gives an estimate. (A box too large already at the
baseline is refused at fit start instead, with the estimate: nothing trained is lost then.
Later refusals, as warnings, are tested in test_linear_regions_analysis.py.) FeatureVisAnalysis has no
default targets (it refuses to render nothing), so it renders the ten classes, its other
arguments at their defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 6 << 30

SCRIPT = textwrap.dedent("""
    import json, resource, sys, warnings
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    sys.path.insert(0, {examples!r})
    import torch
    import lightning.pytorch as pl
    from demo_digits import PROBES, DigitsCNN, digits_loaders
    from nsp_lightning import ProbeCallback
    from nsp_lightning.analyses import (AttributionAnalysis, FeatureVisAnalysis, LinearRegionsAnalysis,
                                        ResponseMapAnalysis, SpectrumAnalysis)

    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders()
    probe = next(iter(val))[0][:PROBES]
    analyses = [SpectrumAnalysis(), AttributionAnalysis(), FeatureVisAnalysis(classes=range(10)), ResponseMapAnalysis(),
                LinearRegionsAnalysis()]
    callback = ProbeCallback(probe, analyses)
    trainer = pl.Trainer(default_root_dir={root!r}, max_epochs=2, limit_train_batches=20, limit_val_batches=2,
                         accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(DigitsCNN(), train, val)
    # The old default box (three digits and a margin): about 55,000 regions a probe, which the
    # kernel's OOM killer ended at 11.7 GB after 13 minutes. At the baseline it is refused at once
    # (nothing trained is lost), with the estimate and the argument to change.
    wide = ProbeCallback(probe, [LinearRegionsAnalysis(zoom=None)])
    again = pl.Trainer(default_root_dir={root!r} + "/wide", max_epochs=1, limit_train_batches=2, accelerator="cpu",
                       devices=1, logger=False, callbacks=[wide], enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False)
    try:
        again.fit(DigitsCNN(), train, val)
        refusal = None
    except Exception as err:
        refusal = f"{{type(err).__name__}}: {{err}}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"finished": trainer.state.finished, "epochs": trainer.current_epoch,
                       "failed": callback.failed_records, "warnings": [str(w.message) for w in caught],
                       "refusal": refusal, "peak_rss": peak}}))
""")


@pytest.mark.slow
def test_five_analyses_at_defaults_under_6_gib(tmp_path):
    script = SCRIPT.format(limit=LIMIT, examples=str(ROOT / "examples"), root=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["finished"] and result["epochs"] == 2
    assert result["peak_rss"] <= LIMIT
    # Every refused record was warned about, with an estimate ("about ... regions", "needs about ... GiB").
    for name, epochs in result["failed"].items():
        for epoch in epochs:
            said = [w for w in result["warnings"] if f"{name!r} could not take record {epoch}" in w]
            assert said and "about" in said[0], (name, epoch, result["warnings"])
    # At their defaults, all five analyses take every record on this model.
    assert result["failed"] == {}, result["failed"]
    assert result["refusal"] is not None and result["refusal"].startswith("RegionBudgetError"), result["refusal"]
    assert "holds about" in result["refusal"] and "more than max_regions=2,000" in result["refusal"]
    assert "give a smaller `domain` or a larger `max_regions`" in result["refusal"]
