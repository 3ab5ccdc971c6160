#!/usr/bin/env bash
# The main job (README: "Run it"): set up, build, then train → export → bench in the RP2040 emulator.
#
#   scripts/run.sh [--config NAME] [--data FILE|HF-DATASET] [--valid FILE] [--out DIR]
#
# Without --data the training text is TinyStories fetched from the Hugging Face hub (hf-hub cache);
# offline, pass a local file, e.g. --data ../shared/datasets/tinystories/train.txt.
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
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-runs/$config}

bash scripts/setup.sh
cargo build --release --quiet
starmind=target/release/starmind

echo "== train $config → $out"
"$starmind" train --config "$config" --out "$out" "${train_args[@]}"
echo "== export → $out/$config.smb"
"$starmind" export "$out" -o "$out/$config.smb"
echo "== bench in the rp2040js emulator (bit-exact check against the host engine)"
"$starmind" bench "$out/$config.smb" --emulator --check
