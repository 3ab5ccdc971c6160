#!/usr/bin/env bash
# The test command (README: "Run the tests"). CI runs exactly this through .ci/run.
# Sets up the machine, checks formatting and lints, verifies the committed firmware image is
# reproducible, then runs every test (unit, end-to-end, emulator bit-exactness).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== engine builds for the RP2040 (thumbv6m-none-eabi) and uses no floating point"
bash firmware/engine/check-no-float.sh
if [ -x scripts/build-firmware.sh ]; then
  echo "== committed firmware image is reproducible"
  bash scripts/build-firmware.sh --check
fi
echo "== cargo test"
# The emulator tests skip only when explicitly allowed; here they must run.
STARMIND_REQUIRE_EMULATOR=1 cargo test --workspace
