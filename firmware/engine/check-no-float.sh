#!/usr/bin/env bash
# Builds the engine for the RP2040 (thumbv6m-none-eabi, no FPU) and fails if it references any
# soft-float routine (__aeabi_f*, __aeabi_d*, __addsf3, __muldf3, ...): the device has no FPU,
# soft-float is slow, and rp2040js crashes on the ROM float routines (shared/FACTS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
rustup target add thumbv6m-none-eabi >/dev/null 2>&1 || true
cargo build -p starmind-engine --target thumbv6m-none-eabi --release --quiet
rlib=target/thumbv6m-none-eabi/release/libstarmind_engine.rlib
symbols=$(nm "$rlib" 2>/dev/null | awk '$1 == "U" {print $2}' | sort -u)
floats=$(grep -E '^__aeabi_(f|d|[iu]2[fd]|l2[fd]|ul2[fd])|^__(add|sub|mul|div|neg|cmp|eq|ne|lt|le|gt|ge|unord|extend|trunc|fix|float)[sd]f' <<<"$symbols" || true)
if [[ -n "$floats" ]]; then
    echo "starmind-engine uses floating point on the device:" >&2
    echo "$floats" >&2
    exit 1
fi
echo "starmind-engine (thumbv6m-none-eabi): no float symbols; runtime helpers used: $(grep -E '^__aeabi' <<<"$symbols" | tr '\n' ' ')"
