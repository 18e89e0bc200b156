"""``spikefuse keygen NAME``: write a CurveZMQ key pair (``NAME.key`` public,
``NAME.key_secret`` secret, mode 0600) for the bus's ``security`` config."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="write a CurveZMQ key pair NAME.key / NAME.key_secret",
        description=(
            "Write a CurveZMQ key pair. Give NAME.key (public) to the peers that must accept "
            "you (their security.allowed_client_keys) or connect to you "
            "(their security.server_public_key_file); keep NAME.key_secret private "
            "(your security.secret_key_file)."
        ),
    )
    p.add_argument("name", help="key name (file stem), e.g. the sensor or host name")
    p.add_argument(
        "--dir", type=Path, default=Path("."), dest="key_dir", help="output directory (default: .)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.transport.security import generate_keypair

    public, secret = generate_keypair(args.key_dir, args.name, overwrite=args.force)
    print(f"public key: {public}")
    print(f"secret key: {secret}")
    return 0
