"""``nsp-report``: turn a run's spectrum records into an offline HTML (and PDF) report.

    nsp-report lightning_logs/version_0 -o report.html --pdf
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]

_DESCRIPTION = """\
Write a self-contained HTML report of the records that probe analyses wrote during
training, a section per analysis. For spectra (SpectrumCallback): run and model summary,
per-layer spectral energy across epochs, energy shares, and activation and spectrum
heatmaps at up to 12 selected epochs with an epoch slider. The page embeds its images and
opens from disk without a network.
"""

_EPILOG = """\
examples:
  nsp-report lightning_logs/version_0
  nsp-report lightning_logs/version_0/spectrum -o out/report.html --pdf
  nsp-report lightning_logs/version_0 --import my_project.analyses
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nsp-report",
        usage="%(prog)s [-h] [-o OUT] [--pdf] [-q] [--skip-bad] RUN_DIR [--import MODULE]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a run directory, e.g. lightning_logs/version_0 (every analysis's records inside it), "
        "or one record directory (SpectrumCallback.dirpath, by default <log_dir>/spectrum)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="the HTML file to write, or a directory to write report.html in (default: RUN_DIR/report.html)",
    )
    parser.add_argument("--pdf", action="store_true", help="also write a PDF with the same content (OUT with .pdf)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="report the rest of the run when a record or record directory is corrupt or contradicts its series;"
        " the page then lists what was left out and why. By default the first such file stops the report with an"
        " error naming it",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first, so that the analyses it defines draw their own sections (repeatable); "
        "without it, an analysis from outside nsp_lightning gets the default section",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nsp-report`` with ``argv`` (default: the command line).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        The exit status: 0 on success, 1 if the report could not be written (the
        reason is printed to stderr). ``--help`` and usage errors exit through
        argparse (status 0 and 2).
    """
    args = _parser().parse_args(argv)
    # Imported here so that --help answers without loading torch and matplotlib.
    from nsp_lightning.report.html import import_analyses, report

    try:
        import_analyses(args.imports)
        html = report(args.run_dir, args.output, pdf=args.pdf, progress=not args.quiet, skip_bad=args.skip_bad)
    except (OSError, ImportError) as err:
        print(f"nsp-report: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        hint = "" if args.skip_bad else " (--skip-bad reports the rest of the run)"
        print(f"nsp-report: error: {err}{hint}", file=sys.stderr)
        return 1
    except Exception as err:
        # Files are checked before use, so this is a fault of nsp-report, not of the records: say so, briefly.
        print(f"nsp-report: error: {type(err).__name__}: {err} (an nsp-report bug; please report it)", file=sys.stderr)
        return 1
    print(html)
    if args.pdf:
        print(html.with_suffix(".pdf"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
