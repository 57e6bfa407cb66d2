#!/usr/bin/env bash
# Runs go test on the given packages and closes with "N passed, N failed"
# (subtests included), exiting non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
go test -v -count=1 -timeout 30m "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=$(grep -cE '^\s*--- PASS:' "$log")
failed=$(grep -cE '^\s*--- FAIL:' "$log")
skipped=$(grep -cE '^\s*--- SKIP:' "$log")
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	# A package that failed to build or set up reports no test.
	failed=1
fi
echo
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
