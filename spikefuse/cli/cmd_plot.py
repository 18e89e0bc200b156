"""``spikefuse plot FILE -o report.png|.html``.

An MCAP recording gives sensor reconstructions, a spike raster per node, motor outputs and
latency. An IMU table log (CSV/NPZ, e.g. BROAD with ground truth) gives the attitude report:
the event-driven estimate against the true inclination over time, and events/s against
motion (the same as ``spikefuse eval attitude LOG --plot``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spikefuse.errors import ConfigError
from spikefuse.tables import PRESETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot a recording (.mcap) or the attitude estimate on an IMU table log",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "file",
        help="a .mcap recording, or an IMU table log (.csv, .csv.gz, .npz) whose column "
        "layout is detected from its header",
    )
    p.add_argument("-o", "--output", required=True, help="report.png or report.html")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="IMU log: column layout to use instead of the one detected from the header",
    )
    src.add_argument("--mapping", help="IMU log: table mapping YAML (see configs/tables/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.suffix.lower() == ".mcap" or path.is_dir():
        from spikefuse.recording.plot import plot_log

        print(plot_log(args.file, args.output))
        return 0
    if Path(args.output).suffix.lower() not in (".png", ".html"):
        raise ConfigError(f"plot output must end in .png or .html, found {args.output!r}")
    from spikefuse.attitude.generate import AttitudeParams
    from spikefuse.attitude.plot import attitude_series, plot_attitude
    from spikefuse.config import validate_data
    from spikefuse.tables import load_mapping, load_table

    mapping = load_mapping(args.mapping) if args.mapping else None
    table = load_table(path, mapping=mapping, preset=args.preset)
    params = validate_data(AttitudeParams, {"rate_hz": table.rate_hz}, str(path))
    series = attitude_series(table, params)
    print(plot_attitude(series, args.output, title=f"{path.name}: event-driven attitude"))
    return 0
