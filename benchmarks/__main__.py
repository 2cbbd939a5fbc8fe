"""`./demo.sh bench`: the platform measured beside the machine's limits and a peer, in one run.

    .venv/bin/python -m benchmarks [--seconds 8] [--tasks 20000] [--reuse]

See benchmarks/suite.py.
"""

from benchmarks.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
