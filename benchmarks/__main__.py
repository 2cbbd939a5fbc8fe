"""`./demo.sh bench`: the platform measured beside the machine's limits and a peer, in one run.

    .venv/bin/python -m benchmarks [--seconds 8] [--tasks 20000] [--reuse]
    .venv/bin/python -m benchmarks --compose [--seconds 8] [--tasks 20000]

See benchmarks/suite.py, and benchmarks/compose.py for --compose (native and Compose side by side).
"""

import sys

from benchmarks import compose, suite


def main(argv: list[str]) -> int:
    if "--compose" in argv:
        return compose.main([arg for arg in argv if arg != "--compose"])
    return suite.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
