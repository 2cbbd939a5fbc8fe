"""`./demo.sh bench`: the platform measured beside the machine's limits and a peer, in one run.

    .venv/bin/python -m benchmarks [--seconds 8] [--tasks 20000] [--reuse]
    .venv/bin/python -m benchmarks --compose [--seconds 8] [--tasks 20000]
    .venv/bin/python -m benchmarks --capacity [--seconds 8] [--tasks 40000]
    .venv/bin/python -m benchmarks --growth [--depths 0,100000,1000000] [--rows 0,1000000,10000000]

See benchmarks/suite.py, benchmarks/compose.py for --compose (native and Compose side by side), and
benchmarks/capacity.py for --capacity (CPU per task of each part, and the capacity model), and
benchmarks/growth.py for --growth (how each cost grows with the backlog and the history).
"""

import sys

from benchmarks import capacity, compose, growth, suite


def main(argv: list[str]) -> int:
    # Both start a native stack of their own, whichever engine ./demo.sh found (it adds --compose
    # with Docker).
    if "--growth" in argv:
        return growth.main([arg for arg in argv if arg not in ("--growth", "--compose")])
    if "--capacity" in argv:
        return capacity.main([arg for arg in argv if arg not in ("--capacity", "--compose")])
    if "--compose" in argv:
        return compose.main([arg for arg in argv if arg != "--compose"])
    return suite.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
