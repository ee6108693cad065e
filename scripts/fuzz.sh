#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) and runs each for SECONDS_PER_TARGET seconds (default 20), one
# after another; fails on the first crash, panic, out-of-memory or timeout, leaving the input
# under the artifacts directory it prints. Prints, per target, the runs executed.
#
#   scripts/fuzz.sh            # the short run (CI runs it with a shorter time still)
#   scripts/fuzz.sh 3600       # an hour per target
#   scripts/fuzz.sh 600 gossip # one target
#   TALLY_FUZZ_DEV=1 scripts/fuzz.sh 10   # what CI runs: an unoptimised build
#
# Works on the stable toolchain alone: `--sanitizer none` leaves out the only flag that needs
# nightly (-Zsanitizer); coverage comes from LLVM's sancov pass, which stable rustc runs.
# Debug assertions (and so overflow checks) are on. The corpus each target grows is kept under
# the cargo target directory, so later runs start from it; seeds come from fuzz/src/seeds.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds="${1:-20}"
shift || true
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

work="${CARGO_TARGET_DIR:-$root/target}/fuzz"
flags=(--sanitizer none --debug-assertions --target-dir "$work")
# TALLY_FUZZ_DEV=1: an unoptimised build, several times quicker to build and slower to run; CI
# uses it for its short run, where the build is most of the time.
if [ "${TALLY_FUZZ_DEV:-}" = 1 ]; then
  flags+=(--dev)
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

echo "== cargo fuzz build (${#targets[@]} targets)"
start=$(date +%s)
(cd fuzz && cargo fuzz build "${flags[@]}")
echo "   built in $(($(date +%s) - start)) s"

failed=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  seeds="$work/seeds/$target"
  artifacts="$work/artifacts/$target"
  mkdir -p "$corpus" "$seeds" "$artifacts"
  extra=()
  # The repository's scenario files are real inputs of the scenario target.
  if [ "$target" = scenario ]; then
    extra=("$root/scenarios")
  fi
  log="$work/$target.log"
  set +e
  (cd fuzz && TALLY_FUZZ_SEEDS="$seeds" cargo fuzz run "${flags[@]}" "$target" \
    "$corpus" "$seeds" "${extra[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/") >"$log" 2>&1
  status=$?
  set -e
  runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  if [ "$status" -eq 0 ]; then
    printf '   %-14s %10s runs in %s s, corpus %s inputs\n' "$target" "${runs:-?}" "$seconds" \
      "$(find "$corpus" -type f | wc -l)"
  else
    printf '   %-14s FAILED (exit %s); log: %s\n' "$target" "$status" "$log"
    grep -aE 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written|out-of-memory|timeout' "$log" | head -20 || true
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs under $work/artifacts)"
  exit 1
fi
echo "== fuzzing: no crash in ${#targets[@]} targets"
