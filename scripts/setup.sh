#!/usr/bin/env bash
# Installs everything starmind needs on a fresh Debian/Ubuntu machine with rustup, node and npm:
# system libraries for probe-rs, the RP2040 Rust target, and the rp2040js emulator.
# Idempotent and quiet: each step is skipped (silently) when already done. Run by scripts/test.sh
# and scripts/run.sh. STARMIND_EMULATOR_DIR points the emulator step elsewhere (tests).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

need_apt=()
for pkg in libudev-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (probe-rs links libudev)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx thumbv6m-none-eabi; then
  echo "setup: adding the thumbv6m-none-eabi Rust target (RP2040)"
  rustup target add thumbv6m-none-eabi
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup: node is missing: install Node.js >= 18 (e.g. apt-get install nodejs npm)" >&2
  exit 1
fi
emu="${STARMIND_EMULATOR_DIR:-$root/scripts/emulator}"
# npm ci only when the lockfile changed since the last install: a stamp file in node_modules
# holds the checksum of the package-lock.json it installed.
stamp="$emu/node_modules/.starmind-package-lock.sha256"
if [ -f "$emu/package-lock.json" ]; then
  want=$(sha256sum "$emu/package-lock.json" | cut -d' ' -f1)
  if [ ! -d "$emu/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing the rp2040js emulator (npm ci)"
    npm ci --prefix "$emu" --no-audit --no-fund --loglevel=error
    mkdir -p "$emu/node_modules"
    echo "$want" > "$stamp"
  fi
fi
