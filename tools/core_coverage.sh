#!/usr/bin/env bash
# Branch coverage of core/ from the core's own tests (README, "Proof").
#
# "The core's own tests" are the test modules named for the core: they drive
# the sans-IO state machines directly, with no socket and no event loop
#   tests/test_core_*.py   connections, framing, handshake, limits, timers...
#   tests/test_hub_*.py    the hub (routing, auth, commands, history, model)
#   tests/test_auth*.py tests/test_tokens.py tests/test_envelope.py
#   tests/test_redaction.py
# (the adapters' and CLI's tests also run core code; they do not count here).
#
#   bash tools/core_coverage.sh            # report, lines and branches missed
#   bash tools/core_coverage.sh 100        # and fail below 100 %
#
# Each line is tagged with the tests that ran it (tools/test_contexts.py): the
# mutation tester reads that (tools/mutate_core.py --coverage-data .coverage).
# Hypothesis runs with a fixed seed and string hashing is fixed too (set order
# decides, e.g., which stale deadline reaches a heap's top first), so the figure
# does not depend on luck; each branch also has a test that reaches it on purpose.
set -euo pipefail
export PYTHONHASHSEED=0
cd "$(dirname "$0")/.."
python -m coverage erase
python -m coverage run --branch --source=wshub.core -m pytest -q -p no:cacheprovider -p tools.test_contexts --hypothesis-seed=0 \
    tests/test_core_*.py tests/test_hub_*.py tests/test_auth*.py tests/test_tokens.py \
    tests/test_envelope.py tests/test_redaction.py
python -m coverage report --show-missing --skip-covered ${1:+--fail-under="$1"}
