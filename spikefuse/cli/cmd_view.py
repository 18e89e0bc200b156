"""``spikefuse view [--launch FILE [--set k=v ...] | --run-dir DIR | --endpoint E ...]``:
a live view of a running launch in the browser (camera integrated from its DVS events,
the events, events/s per stream, motor commands, a simulated robot's pose on its track).
Prints the URL to open; serves on 127.0.0.1 unless ``--bind`` says otherwise. Needs
``pip install 'spikefuse[view]'``. See ``docs/liveview.md``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="live view of a running launch in the browser (Rerun)",
        description="Serve a live view of a running launch in the browser, offline, on "
        "127.0.0.1: the camera integrated from its DVS events, the events, events/s per "
        "stream, motor commands and a simulated robot on its track (status/sim). Prints the "
        "URL to open. Exit 0 on SIGINT/SIGTERM or --duration, 1 if its server dies, 2 for a "
        "bad option. See docs/liveview.md.",
    )
    p.add_argument("--launch", type=Path, default=None, metavar="FILE", help="the launch file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the launch's --set overrides (with --launch), e.g. camera.dvs.width=64",
    )
    p.add_argument("--run-dir", type=Path, default=None, help="without --launch: every *.sock")
    p.add_argument("--endpoint", action="append", default=[], help="extra endpoint (repeatable)")
    p.add_argument(
        "--local-transport",
        choices=("zmq", "unix"),
        default=None,
        help="the transport of the view's own status socket in the run folder (default: "
        "the launch's local_transport, else zmq)",
    )
    p.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="SENSOR/INPUT=WxH",
        help="pixel layout of a DVS stream (derived from the launch file when given)",
    )
    p.add_argument("--port", type=int, default=9090, help="web viewer port (0: a free one)")
    p.add_argument("--grpc-port", type=int, default=9876, help="data port (0: a free one)")
    p.add_argument("--bind", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("--image-rate", type=float, default=15.0, metavar="HZ", help="max image rate")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S s")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`ViewConfig` the options describe (a bad option is a ConfigError)."""
    from spikefuse.config import validate_data
    from spikefuse.errors import ConfigError
    from spikefuse.sdk.config import DEFAULT_RUN_DIR
    from spikefuse.view.config import ViewConfig, parse_camera

    data: dict = {"endpoints": list(args.endpoint), "cameras": {}}
    if args.launch is not None:
        from spikefuse.launch import load_launch
        from spikefuse.view.from_launch import launch_view

        lv = launch_view(load_launch(args.launch, args.overrides, check_configs=False))
        data.update(run_dir=lv.run_dir, cameras=dict(lv.cameras), wait_for_status=lv.cores)
        data.update(local_transport=lv.local_transport)
        data.update(sensor_endpoints=lv.sensor_endpoints, security=lv.security)
        data["endpoints"] = lv.endpoints + data["endpoints"]
    elif args.overrides:
        raise ConfigError("--set needs --launch", "--set")
    else:
        run_dir = args.run_dir or DEFAULT_RUN_DIR
        data["run_dir"] = run_dir
        from spikefuse.transport.unix import endpoint_of_socket_file

        data["endpoints"] += [
            endpoint_of_socket_file(p) for p in sorted(Path(run_dir).glob("*.sock"))
        ]
        if not data["endpoints"]:
            raise ConfigError(
                f"no *.sock endpoints in {run_dir}; give --launch, --run-dir or --endpoint"
            )
    for item in args.camera:
        key, layout = parse_camera(item)
        data["cameras"][key] = layout
    if args.local_transport is not None:
        data["local_transport"] = args.local_transport
    data.update(
        bind=args.bind, web_port=args.port, grpc_port=args.grpc_port, image_rate_hz=args.image_rate
    )
    return validate_data(ViewConfig, data, "spikefuse view")


def run(args: argparse.Namespace) -> int:
    from spikefuse.errors import ConfigError
    from spikefuse.view.run import run_view

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration: expected a number > 0, found {args.duration}")
    cfg = build_config(args)
    if cfg.bind not in ("127.0.0.1", "::1", "localhost"):
        print(f"spikefuse view: warning: serving on {cfg.bind}: reachable from the network")
    return run_view(cfg, args.duration)
