"""``spikefuse plot FILE -o report.png|.html``.

An MCAP recording gives sensor reconstructions, a spike raster per node, motor outputs and
latency. An IMU table log (CSV/NPZ, e.g. BROAD with ground truth) gives the attitude report:
the event-driven estimate against the true inclination over time, and events/s against
motion (the same as ``spikefuse eval attitude LOG --plot``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spikefuse.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot", help="plot a recording (.mcap) or the attitude estimate on an IMU table log"
    )
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="report.png or report.html")
    p.add_argument("--preset", help="table layout of an IMU log (broad, vqf, xio)")
    p.add_argument("--mapping", help="table mapping YAML of an IMU log")
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
