#!/usr/bin/env bash
# Builds the board program (firmware/rp2040) into the flat image the CLI embeds:
#   firmware/prebuilt/starmind-rp2040.bin (+ .sha256), loaded at 0x10000000 (boot2 first).
# Reproducible byte for byte: absolute paths are remapped, so any checkout at any path with the
# pinned toolchain (firmware/rp2040/rust-toolchain.toml) and Cargo.lock gives the same bytes.
#
#   scripts/build-firmware.sh           rebuild and overwrite the committed image
#   scripts/build-firmware.sh --check   rebuild and fail if it differs from the committed image
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
firmware=$root/firmware/rp2040
prebuilt=$root/firmware/prebuilt
image=$prebuilt/starmind-rp2040.bin
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

cd "$firmware"
if ! rustup target list --installed | grep -qx thumbv6m-none-eabi; then
  rustup target add thumbv6m-none-eabi
fi

cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd)
export RUSTFLAGS="--remap-path-prefix=$root=/build --remap-path-prefix=$cargo_home=/cargo"
export SOURCE_DATE_EPOCH=0
cargo build --release --locked

mkdir -p target/host
rustc --edition 2021 -O tools/elf2bin.rs -o target/host/elf2bin
built=target/starmind-rp2040.bin
target/host/elf2bin target/thumbv6m-none-eabi/release/starmind-rp2040 "$built"
size=$(wc -c <"$built")
sum=$(sha256sum "$built" | cut -d' ' -f1)

if [[ $check == 1 ]]; then
  if ! cmp -s "$built" "$image"; then
    echo "firmware/prebuilt/starmind-rp2040.bin is stale or not reproducible:" >&2
    echo "  committed $(sha256sum "$image" 2>/dev/null | cut -d' ' -f1 || echo missing)" >&2
    echo "  rebuilt   $sum ($size bytes)" >&2
    echo "run scripts/build-firmware.sh and commit firmware/prebuilt/" >&2
    exit 1
  fi
  echo "firmware image up to date: $sum ($size bytes)"
else
  mkdir -p "$prebuilt"
  cp "$built" "$image"
  echo "$sum  starmind-rp2040.bin" >"$image.sha256"
  echo "wrote $image: $size bytes, sha256 $sum"
fi
