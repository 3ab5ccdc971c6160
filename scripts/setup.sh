#!/usr/bin/env bash
# Installs everything starmind needs on a fresh Debian/Ubuntu machine with rustup, node and npm:
# system libraries for probe-rs, the RP2040 Rust target, and the rp2040js emulator.
# Idempotent: each step is skipped when already done. Sourced by scripts/test.sh and scripts/run.sh.
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
emu="$root/scripts/emulator"
if [ -f "$emu/package-lock.json" ] && ! cmp -s "$emu/package-lock.json" "$emu/node_modules/.package-lock.json" 2>/dev/null; then
  echo "setup: installing the rp2040js emulator (npm ci)"
  npm ci --prefix "$emu" --no-audit --no-fund --loglevel=error
fi
