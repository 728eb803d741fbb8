#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, then runs all of it:
# formatting, lints, unit tests and the integration tests (real FUSE, loop devices, ext4,
# cryptsetup, qemu-img). Set VAULTDISK_REQUIRE_ALL=1 to turn every SKIP into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
install_system_packages

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo doc (rustdoc warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "== scripts/bench.sh --smoke (keeps the benchmark script working; ~40 s, figures mean nothing)"
mkdir -p target/tmp
bash scripts/bench.sh --smoke > target/tmp/bench-smoke.md 2> target/tmp/bench-smoke.log ||
    { cat target/tmp/bench-smoke.log; exit 1; }
echo "== cargo test"
# Integration tests mount FUSE and attach loop devices: keep them to two at a time on a
# two-core machine so a slow KDF never races a timeout.
skips=target/tmp/skipped-tests.txt
rm -f "$skips"
cargo test --quiet -- --test-threads="${VAULTDISK_TEST_THREADS:-2}"
if [ -s "$skips" ]; then
    echo "== skipped tests (they ran no check here):"
    sort -u "$skips"
fi
