#!/usr/bin/env bash
# Builds every fuzz target and runs each one briefly from its seeds; exits non-zero if any
# target crashes (panic, failed assertion, sanitizer report, OOM, timeout).
#
#   FUZZ_SECONDS=20 bash smoke.sh            # every target, 20 s each (the default)
#   FUZZ_SECONDS=60 bash smoke.sh pack index # only these targets
#
# Seeds (seeds/<target>/, committed) are copied into corpus/<target>/ (gitignored), which keeps
# what the fuzzer finds between runs. Crash inputs land in artifacts/<target>/; logs in
# target/smoke-logs/.
set -uo pipefail
cd "$(dirname "$0")"

secs=${FUZZ_SECONDS:-20}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
logs=target/smoke-logs
mkdir -p "$logs"

cargo +nightly fuzz build || { echo "smoke: build failed" >&2; exit 1; }

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    if [ -d "seeds/$t" ]; then
        cp seeds/"$t"/* "corpus/$t/"
    fi
    echo "=== $t: ${secs}s"
    cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n1)
    rate=$(grep -o 'exec/s: [0-9]*' "$logs/$t.log" | tail -n1 | sed 's/exec\/s: //')
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n1 | sed 's/cov: //')
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        summary+=("$(printf '%-18s CRASH (exit %s), see %s and artifacts/%s/' "$t" "$rc" "$logs/$t.log" "$t")")
        tail -n 40 "$logs/$t.log"
    else
        summary+=("$(printf '%-18s ok  execs %-10s exec/s %-8s cov %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}")")
    fi
done

echo
echo "=== smoke summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "smoke: all ${#targets[@]} targets ran without crashes"
