"""wshub's benchmark suite: a C load generator against wshub, websockets and a floor.

Run it with ``python benchmarks/run.py`` (see benchmarks/README.md). Not part
of the test run: nothing here asserts on time.
"""
