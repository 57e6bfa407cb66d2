#!/usr/bin/env bash
# make fuzz: every fuzz target for a set number of executions, one after
# the other, then "N passed, N failed". Counts rather than a duration
# (-fuzztime 30s): Go 1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" when a duration runs out
# (golang/go#75804, fixed in Go 1.27). An input that fails is written to
# the package's testdata/fuzz/<target>/, where `go test` replays it from
# then on: commit it with its fix.
set -uo pipefail
SCALE=${FUZZ_SCALE:-1}
targets=(
	"./plugin/spec FuzzGenerate 200000"
	"./extension FuzzLogURI 300000"
	"./extension FuzzStdinURI 200000"
	"./shim FuzzCRILog 30000"
)
passed=0 failed=0
logs=$(mktemp -d /tmp/mine-fuzz-XXXXXX)
for t in "${targets[@]}"; do
	read -r pkg name count <<<"$t"
	count=$((count * SCALE))
	start=$(date +%s)
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "${count}x" -timeout 20m "$pkg" >"$logs/$name.log" 2>&1; then
		passed=$((passed + 1)) verdict=ok
	else
		failed=$((failed + 1)) verdict=FAIL
		tail -20 "$logs/$name.log"
	fi
	echo "fuzz: $name ($pkg): $count executions, $(($(date +%s) - start)) s, $verdict"
done
rm -rf "$logs"
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
