#!/usr/bin/env bash
# Side-by-side training benchmark: starmind's candle trainer and the PyTorch reference
# (../shared/anchors/torch_train_ref.py, when `python3 -c "import torch"` works) on the same
# shape, batch, sequence, data and cores, for the same wall-clock budget, one after the other in
# the same run. Writes the table into docs/training.md (between the bench-train markers).
#
# usage: scripts/bench-train.sh [SECONDS]        (default 60 per trainer and shape)
# env:   DATA, VALID (default ../shared/datasets/tinystories/{train,valid}.txt),
#        SHAPES (default "story-1k chat-10k stories260k"; an entry `shape:S` gives that shape its own
#        budget of S seconds, e.g. SHAPES="story-1k:120 stories260k:600"), THREADS (default 2),
#        MEMORY_KB (ulimit -v for both trainers, default 16000000)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-60}
DATA=${DATA:-../shared/datasets/tinystories/train.txt}
VALID=${VALID:-../shared/datasets/tinystories/valid.txt}
SHAPES=${SHAPES:-story-1k chat-10k stories260k}
THREADS=${THREADS:-2}
MEMORY_KB=${MEMORY_KB:-16000000}
REF=../shared/anchors/torch_train_ref.py
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

cargo build --release --quiet
BIN=target/release/starmind

# The reference's flags for each config's shape (read from the config itself).
torch_flags() {
    python3 - "$1" <<'PY'
import json, sys
m = json.load(open(f"configs/{sys.argv[1]}.json"))["model"]
print(f"--dim {m['dim']} --hidden {m['hidden_dim']} --layers {m['n_layers']} --heads {m['n_heads']} "
      f"--kv-heads {m['n_kv_heads']} --vocab {m['vocab_size']} --seq {m['seq_len']} --ffn {m['ffn']}")
PY
}

HAVE_TORCH=0
if python3 -c "import torch" 2>/dev/null && [ -f "$REF" ]; then HAVE_TORCH=1; fi
budget_of() { case "$1" in *:*) echo "${1#*:}" ;; *) echo "$SECONDS_PER_RUN" ;; esac; }
for entry in $SHAPES; do
    shape=${entry%%:*}
    budget=$(budget_of "$entry")
    echo "== $shape: starmind, ${budget} s" >&2
    (ulimit -v "$MEMORY_KB"; nice -n 10 "$BIN" train --config "$shape" --data "$DATA" --valid "$VALID" \
        --out "$OUT/$shape" --batch-size 32 --steps 1000000 --max-seconds "$budget" \
        --threads "$THREADS" --json) > "$OUT/$shape.starmind.log" 2> "$OUT/$shape.starmind.err" \
        || { tail -5 "$OUT/$shape.starmind.err" >&2; exit 1; }
    tail -1 "$OUT/$shape.starmind.log" > "$OUT/$shape.starmind.json"
    if [ "$HAVE_TORCH" = 1 ]; then
        echo "== $shape: pytorch, ${budget} s" >&2
        # shellcheck disable=SC2046
        (ulimit -v "$MEMORY_KB"; nice -n 10 python3 "$REF" --seconds "$budget" $(torch_flags "$shape") \
            --batch 32 --threads "$THREADS" --train "$DATA" --valid "$VALID") | tail -1 > "$OUT/$shape.torch.json"
    fi
done

python3 - "$OUT" "$SECONDS_PER_RUN" "$DATA" "$VALID" "$THREADS" "$SHAPES" <<'PY'
import json, os, re, subprocess, sys, datetime
out, budget, data, valid, threads, shapes = sys.argv[1:7]
def load(path):
    return json.load(open(path)) if os.path.exists(path) else None
load_avg = open("/proc/loadavg").read().split()[:3]
rows = []
for entry in shapes.split():
    shape, _, own = entry.partition(":")
    secs = own or budget
    s, t = load(f"{out}/{shape}.starmind.json"), load(f"{out}/{shape}.torch.json")
    cfg = json.load(open(f"configs/{shape}.json"))["model"]
    seq = cfg["seq_len"]
    gb = lambda b: f"{b / 1e9:.2f} GB" if b else "?"
    if t:
        ratio = s["tokens_per_s"] / t["tokens_per_s"]
        rows.append(f"| {shape} | 32 × {seq} | {secs} s | {s['tokens_per_s']:,.0f} | {t['tokens_per_s']:,.0f} | {ratio:.2f}× "
                    f"| {gb(s['peak_rss_bytes'])} | {gb(t['peak_rss_bytes'])} | {s['val_bpb']:.3f} | {t['val_bpb']:.3f} "
                    f"| {s['steps']} / {t['steps']} |")
    else:
        rows.append(f"| {shape} | 32 × {seq} | {secs} s | {s['tokens_per_s']:,.0f} | – | – | {gb(s['peak_rss_bytes'])} | – "
                    f"| {s['val_bpb']:.3f} | – | {s['steps']} / – |")
env = [f'SHAPES="{shapes}"'] if shapes != "story-1k chat-10k stories260k" else []
env += [f"DATA={data}"] if data != "../shared/datasets/tinystories/train.txt" else []
command = " ".join(env + [f"scripts/bench-train.sh {budget}"])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
# The trainers' own threads count in the load average; more than that means other work shared the cores.
shared = (": the machine was shared, so read the ratios, taken one run after the other, rather than the absolute figures"
          if float(load_avg[0]) > int(threads) + 0.5 else ", the trainers' own threads: a quiet machine")
table = "\n".join([
    f"Measured by `{command}` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC "
    f"(commit {commit}, {os.cpu_count()} cores, {threads} threads each, load average {' '.join(load_avg)} at the end{shared}). "
    f"Each trainer had the same budget of training (the budget column; {budget} s unless the shape names its own) on `{data}`; starmind's val bpb is over all of `{valid}` with its "
    "config's tokenizer, PyTorch's over its first 200 KB with characters (bits per byte compare across tokenizers).",
    "",
    "| shape | batch × seq | budget | starmind tok/s | PyTorch tok/s | ratio | starmind peak RSS | PyTorch peak RSS "
    "| starmind val bpb | PyTorch val bpb | steps (starmind / PyTorch) |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    *rows,
])
doc = "docs/training.md"
text = open(doc).read()
begin, end = "<!-- bench-train:begin -->", "<!-- bench-train:end -->"
block = f"{begin}\n{table}\n{end}"
if begin in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
else:
    text += f"\n## Training speed against PyTorch\n\n{block}\n"
open(doc, "w").write(text)
print(table)
PY
