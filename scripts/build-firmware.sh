#!/usr/bin/env bash
# Builds the board program (firmware/rp2040) into the flat image the CLI embeds:
#   firmware/prebuilt/starmind-rp2040.bin (+ .sha256), loaded at 0x10000000 (boot2 first), and
#   firmware/prebuilt/starmind-rp2040.syms (function addresses, for `starmind bench --profile`).
# Reproducible byte for byte: built at one fixed path with paths remapped, so any checkout at any
# path with the pinned toolchain (firmware/rp2040/rust-toolchain.toml) and Cargo.lock gives the
# same bytes.
#
#   scripts/build-firmware.sh           rebuild from the working tree and overwrite the image
#   scripts/build-firmware.sh --check   rebuild and fail if it differs from the committed image
#   scripts/build-firmware.sh --head    rebuild from the committed sources (HEAD) only, ignoring
#                                       uncommitted edits to firmware/ (e.g. someone else's engine
#                                       work in progress), so the image matches what CI checks
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
firmware=$root/firmware/rp2040
prebuilt=$root/firmware/prebuilt
image=$prebuilt/starmind-rp2040.bin
check=0
from_head=0
case "${1:-}" in
  --check) check=1 ;;
  --head) from_head=1 ;;
  "") ;;
  *) echo "usage: $0 [--check | --head]" >&2; exit 2 ;;
esac

if ! rustup target list --installed | grep -qx thumbv6m-none-eabi; then
  rustup target add thumbv6m-none-eabi
fi

# Cargo derives each path crate's symbol hash from its absolute source path, and those hashes
# steer LTO's code layout: the same sources at two paths give images that differ in a few
# hundred bytes. So the sources are copied to one fixed path and built there (the target dir
# stays firmware/rp2040/target, so registry crates stay compiled).
build=/tmp/starmind-firmware-build
mkdir -p "$build"
exec 9>"$build.lock"
flock 9
rm -rf "$build/rp2040" "$build/engine" "$build/head"
mkdir -p "$build/rp2040" "$build/engine"
sources=$root/firmware
if [[ $from_head == 1 ]]; then
  mkdir -p "$build/head"
  git -C "$root" archive HEAD firmware/rp2040 firmware/engine | tar -x -C "$build/head"
  sources=$build/head/firmware
fi
(cd "$sources/rp2040" && tar -c --exclude=./target .) | tar -x -C "$build/rp2040"
(cd "$sources/engine" && tar -c --exclude=./target .) | tar -x -C "$build/engine"
# Fresh mtimes: cargo decides staleness by mtime, and copies from different sources (HEAD or the
# working tree) land on the same path, so the two path crates are always recompiled (~20 s).
find "$build/rp2040" "$build/engine" -type f -exec touch {} +

cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd)
export RUSTFLAGS="--remap-path-prefix=$build=/build --remap-path-prefix=$cargo_home=/cargo"
export SOURCE_DATE_EPOCH=0
export CARGO_TARGET_DIR=$firmware/target
(cd "$build/rp2040" && cargo build --release --locked)

cd "$firmware"
mkdir -p target/host
rustc --edition 2021 -O tools/elf2bin.rs -o target/host/elf2bin
built=target/starmind-rp2040.bin
syms=target/starmind-rp2040.syms
target/host/elf2bin target/thumbv6m-none-eabi/release/starmind-rp2040 "$built" "$syms"
size=$(wc -c <"$built")
sum=$(sha256sum "$built" | cut -d' ' -f1)

if [[ $check == 1 ]]; then
  if ! cmp -s "$built" "$image" || ! cmp -s "$syms" "$prebuilt/starmind-rp2040.syms"; then
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
  cp "$syms" "$prebuilt/starmind-rp2040.syms"
  echo "$sum  starmind-rp2040.bin" >"$image.sha256"
  echo "wrote $image: $size bytes, sha256 $sum"
fi
