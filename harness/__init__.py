"""Real stacks on free ports, for the tests and the benchmarks alike: the native one (the launcher
./demo.sh uses) and a Compose project of its own. Neither package imports the other."""
