"""The README's example of a user's own probe analysis (test_probe_callback checks that they agree)."""

from nsp_lightning import AnalysisRecord, ProbeAnalysis
from nsp_lightning.report.sections import Section, Table


class ChannelMeans(ProbeAnalysis):
    """The mean activation of each channel of every layer, per probe."""

    name = "channel_means"

    def compute(self, model, probes, context):
        arrays, scalars = {}, {}
        for layer, acts in context.layers().items():  # (P, C, ...): the shared forward pass
            means = acts.flatten(2).mean(-1) if acts.dim() > 2 else acts  # (P, C)
            arrays[layer] = means.double().cpu().numpy()
            scalars[f"{layer}/mean"] = float(means.mean())
        return AnalysisRecord(arrays=arrays, scalars=scalars)

    def log(self, record, sink):
        for layer, means in record.arrays.items():
            sink.histogram(f"{layer}/channels", means)

    @classmethod
    def report(cls, records, header, context):
        rows = [
            [str(r.epoch)] + [f"{means.mean():.4g}" for means in r.arrays.values()]
            for r in records
        ]
        table = Table("mean activation of the channels", ["epoch", *records[0].arrays], rows)
        return Section("channels", "Mean activation per channel", [table])
