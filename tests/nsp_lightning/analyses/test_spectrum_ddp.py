"""SpectrumCallback under DDP with two CPU processes: rank 0 computes and writes, nothing hangs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_helpers import LAYERS, TinyNet, image_run, probe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nsp
from nsp_lightning import read_records

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {helpers!r})
    import torch
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
    from nsp_lightning import SpectrumCallback

    root = sys.argv[1]
    cb = SpectrumCallback(probe(2))
    trainer = pl.Trainer(**trainer_kwargs(
        strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=TensorBoardLogger(root, name="tb"),
    ), callbacks=[cb])
    model = TinyNet()
    trainer.fit(model, loader(n=16, batch_size=4))
    rank = trainer.global_rank
    torch.save(model.state_dict(), os.path.join(root, f"model-{{rank}}.pt"))
    with open(os.path.join(root, f"rank-{{rank}}.json"), "w") as f:
        json.dump({{"recorded": cb.recorded_epochs, "dirpath": cb.dirpath, "log_dir": trainer.log_dir}}, f)
    # Left to interpreter exit, gloo's threads sometimes abort the process
    # ("terminate called without an active exception").
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_record_on_rank_zero_only(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT.format(helpers=str(Path(__file__).parents[2] / "support")))
    launcher_vars = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher_vars)}
    env["OMP_NUM_THREADS"] = "1"
    # A new session, so that on a timeout the launcher and the rank it spawned die together.
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "logs")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"DDP fit did not finish within 240 s:\n{output.decode()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output.decode()[-3000:]

    ranks = [json.loads((tmp_path / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["recorded"] == ranks[1]["recorded"] == [0, 1, 2]
    assert ranks[0]["dirpath"] == ranks[1]["dirpath"]
    manifests = [d for d, _, files in os.walk(tmp_path / "logs") if "manifest.json" in files]
    assert manifests == [ranks[0]["dirpath"]]
    records = read_records(ranks[0]["dirpath"])
    assert [r.epoch for r in records] == [0, 1, 2]
    # 16 samples over 2 ranks in batches of 4: 2 optimizer steps per epoch.
    assert [r.global_step for r in records] == [0, 2, 4]

    # The last record is the pattern of the trained model, the same on both ranks, and its
    # exact spectrum. The ranks ran on one thread each: their float32 forward pass may round
    # differently from this process's, so the pattern agrees to float32 rounding and the
    # spectrum is checked on the recorded values themselves.
    states = [torch.load(tmp_path / "logs" / f"model-{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    model = TinyNet().eval()
    model.load_state_dict(states[0])
    x = probe(2)
    for p in range(2):
        fresh = nsp.Activations(model, x[p: p + 1])
        recorded = np.concatenate([a.ravel() for a in records[-1].activations[p]])
        np.testing.assert_allclose(recorded, fresh.to_numpy(), rtol=1e-5, atol=1e-6)
        spectrum = nsp.NNGraph(fresh).transform(fresh.to_activations(recorded))
        for l in range(len(LAYERS)):
            np.testing.assert_array_equal(records[-1].spectra[p][l], spectrum.layeractivations[l].numpy())

    acc = EventAccumulator(ranks[0]["log_dir"], size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    steps = [r.global_step for r in records]  # logged at the global step, by default
    assert [e.step for e in image_run(ranks[0]["log_dir"]).Images("spectrum/05_fc/spectrum/probe_1")] == steps
    assert [s.step for s in acc.Scalars("spectrum/log10_energy/probe_0/01_conv")] == steps
