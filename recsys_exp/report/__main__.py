"""``python -m recsys_exp.report <dir> [<dir> ...]``: the command line of :mod:`recsys_exp.report`.

Exit status 0 when the report is written (also when some runs are missing or failed: the
report names them), 2 when a dir does not exist or holds no run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import recsys_exp.report as report_pkg
from recsys_exp.report.collect import NoRunsFound
from recsys_exp.report.stats import DEFAULT_REPS

PROG = "python -m recsys_exp.report"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the package docstring)."""
    parser = argparse.ArgumentParser(prog=PROG, description=report_pkg.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="multirun dir, sweep dir, run dir, or a dir holding run dirs at any depth")
    parser.add_argument("--out", metavar="DIR", help="where to write the report (default: the first DIR)")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default: %(default)s)")
    return parser.parse_args(argv)


def fail(message: str) -> int:
    """One error line on stderr; exit status 2."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Write the report; 2 with one error line for a bad dir."""
    args = parse_args(argv)
    for d in args.dirs:
        if not Path(d).is_dir():
            return fail(f"{d}: {'not a directory' if Path(d).exists() else 'no such directory'}")
    if args.reps < 1:
        return fail(f"--reps {args.reps}: must be at least 1")
    try:
        paths = report_pkg.make_report(args.dirs, args.out, reps=args.reps, seed=args.seed)
    except NoRunsFound as e:
        return fail(str(e))
    print(f"report: {paths['md']}")
    print(f"report: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
