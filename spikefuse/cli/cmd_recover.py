"""``spikefuse recover IN -o OUT``: write an indexed copy of an unfinished MCAP log."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recover", help="write an indexed copy of an unfinished MCAP log")
    p.add_argument("input", help="the unfinished (or finished) .mcap log")
    p.add_argument("-o", "--output", required=True, help="the indexed copy to write (.mcap)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spikefuse.recording.recover import recover

    res = recover(args.input, args.output)
    state = "was indexed" if res.was_indexed else f"was unfinished ({res.problem})"
    print(f"{args.input}: {state}; wrote {res.n_messages} messages to {args.output} (indexed)")
    return 0
