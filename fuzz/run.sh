#!/usr/bin/env bash
# Run every atheris harness for SECONDS each (default 60); fail on any crash.
# Seeds come from fuzz/corpus/<harness>/ (read only); inputs found along the
# way go to a scratch folder, crash reproducers to fuzz/artifacts/.
#   usage: fuzz/run.sh [SECONDS]      (PYTHON=/path/to/python to override)
set -euo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$here/artifacts"

status=0
for harness in fuzz_server_bytes fuzz_frames fuzz_client_bytes fuzz_envelope fuzz_hub_ops; do
    echo "== $harness: ${seconds}s"
    mkdir -p "$scratch/$harness"
    if ! "$python" "$here/$harness.py" \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$harness-" \
        "$scratch/$harness" "$here/corpus/$harness"; then
        echo "!! $harness crashed; reproducer in $here/artifacts/" >&2
        status=1
    fi
done
exit "$status"
