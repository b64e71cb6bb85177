#!/usr/bin/env bash
# Run atheris harnesses for SECONDS each, one after the other; exit 1 if any
# crashed (an exception, a timeout, or too much memory).
#
#   usage: fuzz/run.sh [SECONDS] [HARNESS...]      (default: 60 s, every harness)
#   env:   PYTHON=/path/to/python      the interpreter with wshub and atheris
#          FUZZ_ARGS="-jobs=2 ..."     extra libFuzzer flags (see fuzz/README.md)
#
# Seeds come from fuzz/corpus/<harness>/ (read only); new inputs found along
# the way, and libFuzzer's logs with -jobs, go to a scratch folder removed at
# the end (FUZZ_KEEP=DIR keeps them: DIR/<harness>/, DIR/logs/<harness>/).
# Crash reproducers go to fuzz/artifacts/ (ignored by git); replay one with
#   python fuzz/<harness>.py --corpus fuzz/artifacts/<file>
set -euo pipefail

seconds="${1:-60}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python}"
all=(fuzz_server_bytes fuzz_frames fuzz_client_bytes fuzz_envelope fuzz_hub_ops)
if [ "$#" -gt 0 ]; then harnesses=("$@"); else harnesses=("${all[@]}"); fi
read -r -a extra <<<"${FUZZ_ARGS:-}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
keep="${FUZZ_KEEP:-$scratch}"
artifacts="$here/artifacts"
mkdir -p "$artifacts"

status=0
for harness in "${harnesses[@]}"; do
    echo "== $harness: ${seconds}s"
    mkdir -p "$keep/$harness" "$keep/logs/$harness"
    crashed=0
    before="$(find "$artifacts" -type f | wc -l)"
    # libFuzzer writes fuzz-N.log files into the working directory (-jobs).
    if ! (cd "$keep/logs/$harness" && "$python" "$here/$harness.py" \
        -max_total_time="$seconds" \
        -max_len=4096 \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/$harness-" \
        "${extra[@]}" \
        "$keep/$harness" "$here/corpus/$harness"); then
        crashed=1
    fi
    if [ "$(find "$artifacts" -type f | wc -l)" -ne "$before" ]; then
        crashed=1
    fi
    if [ "$crashed" -ne 0 ]; then
        status=1
        echo "!! $harness crashed; reproducers in $artifacts/:" >&2
        ls -t "$artifacts" | head -n 5 >&2
    fi
done
exit "$status"
