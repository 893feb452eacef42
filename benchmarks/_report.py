"""What every benchmark script shares: the ``--json`` flag and where its table goes.

With ``--json`` a script still prints its table, but to stderr, and prints its figures on stdout as one
JSON object, name -> µs (``paired.py`` reads that line, and ``tests/benchmarks/test_scripts.py`` checks it). The
tables stay exactly as they were for a human reader.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def add_flags(parser: argparse.ArgumentParser, *, quick: bool = True) -> None:
    """``--json``, ``--smoke`` (and ``--quick`` where the script did not define it itself)."""
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON object (µs)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for the test that the script runs: the figures mean nothing"
    )
    if quick:
        parser.add_argument("--quick", action="store_true", help="fewer samples (a rough figure in a few seconds)")


def size(opts: argparse.Namespace, full: T, quick: T, smoke: T) -> T:
    """The script's sizes for the mode it runs in (``--smoke`` wins over ``--quick``)."""
    if opts.smoke:
        return smoke
    return quick if opts.quick else full


@contextlib.contextmanager
def figures(as_json: bool) -> Iterator[dict[str, float]]:
    """A dict to fill with name -> µs; with ``as_json`` the table printed inside goes to stderr.

    The JSON is printed only when the block ends normally, so a failed run never looks like a result.
    """
    out: dict[str, float] = {}
    if not as_json:
        yield out
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield out
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
    sys.stdout.flush()
