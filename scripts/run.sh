#!/usr/bin/env bash
# The main job (README: "Run it"): set up, build, then train → export → bench in the RP2040 emulator.
#
#   scripts/run.sh [--config NAME] [--data FILE|HF-DATASET] [--valid FILE] [--out DIR] [--force]
#
# Without --data the training text is TinyStories: its first 16 MiB from the Hugging Face hub
# (hf-hub cache), or with no network the sample bundled in the binary (datasets/README.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

config=story-1k
out=""
train_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --data|--valid) train_args+=("$1" "$2"); shift 2 ;;
    --force) train_args+=("$1"); shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
# Without --out: the first free runs/<config>, runs/<config>-2, … (an earlier run is kept; with
# --out DIR holding a checkpoint, train refuses unless --force).
if [ -z "$out" ]; then
  out=runs/$config
  n=2
  while [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; do
    out=runs/$config-$n
    n=$((n + 1))
  done
fi

bash scripts/setup.sh
cargo build --release --quiet
starmind=target/release/starmind

echo "== train $config → $out"
"$starmind" train --config "$config" --out "$out" ${train_args[@]+"${train_args[@]}"}
echo "== export → $out/$config.smb"
"$starmind" export "$out" -o "$out/$config.smb"
echo "== bench in the rp2040js emulator (bit-exact check against the host engine)"
"$starmind" bench "$out/$config.smb" --emulator --check
