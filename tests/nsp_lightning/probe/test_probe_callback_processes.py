"""The README's own analysis (ChannelMeans) under DDP with two CPU processes, and killed mid-record."""

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
from lightning_helpers import LAYERS, TinyNet, probe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_probe_callback import channel_means
from test_report import SECTIONS, section_ids, table

from nsp_lightning import ProbeRecord, SpectrumRecord, read_records, report

HELPERS = str(Path(__file__).parents[2] / "support")

DDP = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {helpers!r})
    import torch
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from channel_means import ChannelMeans
    from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
    from nsp_lightning import ProbeCallback

    root = sys.argv[1]
    cb = ProbeCallback(probe(2), [ChannelMeans()])
    trainer = pl.Trainer(**trainer_kwargs(
        strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, logger=TensorBoardLogger(root, name="tb"),
    ), callbacks=[cb])
    model = TinyNet()
    trainer.fit(model, loader(n=16, batch_size=4))
    rank = trainer.global_rank
    torch.save(model.state_dict(), os.path.join(root, f"model-{{rank}}.pt"))
    with open(os.path.join(root, f"rank-{{rank}}.json"), "w") as f:
        json.dump({{"recorded": cb.recorded_epochs, "dirs": cb.record_dirs, "log_dir": trainer.log_dir}}, f)
    torch.distributed.destroy_process_group()
    """
)

# Dies by SIGKILL in the middle of writing the 6th record file: ChannelMeans's record 2
# (each record writes spectra, then channel means), half of the file on disk.
KILL = textwrap.dedent(
    """
    import os, signal, sys, warnings
    sys.path.insert(0, {helpers!r})
    import numpy as np
    import lightning.pytorch as pl
    from channel_means import ChannelMeans
    from lightning_helpers import TinyNet, loader, probe, trainer_kwargs
    from nsp_lightning import ProbeCallback
    from nsp_lightning.analyses import SpectrumAnalysis

    real_savez, calls = np.savez, []

    def savez(handle, **arrays):
        calls.append(1)
        if len(calls) == 6:
            handle.write(b"PK\\x03\\x04 half a record")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real_savez(handle, **arrays)

    np.savez = savez
    warnings.simplefilter("ignore")
    cb = ProbeCallback(probe(2), [SpectrumAnalysis(), ChannelMeans()], dirpath=sys.argv[1])
    pl.Trainer(**trainer_kwargs(max_epochs=3), callbacks=[cb]).fit(TinyNet(), loader())
    """
)


def run_script(tmp_path, source, *args, timeout=240):
    script = tmp_path / "script.py"
    script.write_text(source.format(helpers=HELPERS))
    launcher_vars = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher_vars)}
    env["OMP_NUM_THREADS"] = "1"
    # A new session, so that on a timeout the launcher and the rank it spawned die together.
    proc = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the script did not finish within {timeout} s:\n{output.decode()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, output.decode()


@pytest.mark.slow
def test_own_analysis_under_ddp_with_two_cpu_processes_records_on_rank_zero_only(tmp_path):
    returncode, output = run_script(tmp_path, DDP, tmp_path / "logs")
    assert returncode == 0, output[-3000:]
    ranks = [json.loads((tmp_path / "logs" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["recorded"] == ranks[1]["recorded"] == [0, 1, 2]
    assert ranks[0]["dirs"] == ranks[1]["dirs"]
    directory = ranks[0]["dirs"]["channel_means"]
    assert [d for d, _, files in os.walk(tmp_path / "logs") if "manifest.json" in files] == [directory]
    records = read_records(directory)
    # 16 samples over 2 ranks in batches of 4: 2 optimizer steps per epoch.
    assert [(r.epoch, r.global_step) for r in records] == [(0, 0), (1, 2), (2, 4)]

    states = [torch.load(tmp_path / "logs" / f"model-{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    model = TinyNet()
    model.load_state_dict(states[0])
    expected = channel_means(model, probe(2))
    for layer in LAYERS:
        np.testing.assert_allclose(records[-1].arrays[layer], expected[layer], rtol=1e-5, atol=1e-6)

    acc = EventAccumulator(ranks[0]["log_dir"], size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    assert [s.step for s in acc.Scalars("channel_means/conv/mean")] == [0, 2, 4]  # the global step
    assert [h.step for h in acc.Histograms("channel_means/fc/channels")] == [0, 2, 4]
    page = report(ranks[0]["log_dir"], tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == ["channels"]
    assert [row[0] for row in table(page, "mean activation of the channels")[1:]] == ["0", "1", "2"]


@pytest.mark.slow
def test_a_kill_9_mid_record_leaves_every_completed_record_readable(tmp_path):
    run = tmp_path / "run"
    returncode, output = run_script(tmp_path, KILL, run)
    assert returncode == -signal.SIGKILL, output[-3000:]
    spectra, means = read_records(run / "spectrum"), read_records(run / "channel_means")
    assert [r.epoch for r in spectra] == [0, 1, 2] and all(isinstance(r, SpectrumRecord) for r in spectra)
    assert [r.epoch for r in means] == [0, 1] and all(isinstance(r, ProbeRecord) for r in means)
    assert all(r.arrays["conv"].shape == (2, 2) for r in means)
    # The half-written file never got its name; the manifest does not list it. Left aside: the lock
    # file, and the killed writer's note of itself as the lock's holder.
    leftovers = sorted(name for name in os.listdir(run / "channel_means") if name not in (".lock", ".lock.holder"))
    assert leftovers[-3:] == ["epoch-000000.npz", "epoch-000001.npz", "manifest.json"]
    assert len(leftovers) == 4 and leftovers[0].startswith(".epoch-000002.npz.") and leftovers[0].endswith(".tmp")
    page = report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    assert section_ids(page) == SECTIONS + ["channels"]
