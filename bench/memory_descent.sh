#!/bin/sh
# bench/memory_descent.sh — peak RSS of a LoRA training step at the GPT-2 124M shape with 1024 tokens,
# one memory cure added per row (docs/MEMORY.md): the plain loss and attention, then the fused chunked
# LM head + cross-entropy, attention without the T × T matrix, gradient checkpointing, and the frozen
# base quantised (q8_0, q4_0, nf4). Each row is a process of its own (peak RSS is per process); the
# rows print their exact command. RSS only: the steps are too few, and the machine too shared, for times.
#
#   bench/memory_descent.sh [PEFT] [THREADS]      (default build/peft, 2 threads)
set -eu
PEFT=${1:-build/peft}
THREADS=${2:-2}
SHAPE="--method lora --n_layer 12 --n_head 12 --n_embd 768 --block 1024 --batch 1 --vocab 50257"
RUN="--steps 1 --warmup_steps 1 --threads $THREADS --json"

row() {   # row NAME FLAGS...
    name=$1
    shift
    cmd="$PEFT bench $SHAPE $* $RUN"
    json=$($cmd | tail -n 1)
    field() { echo "$json" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
    awk -v n="$name" -v rss="$(field peak_rss_bytes)" -v saved="$(field peak_saved_bytes)" \
        -v q="$(field peak_quantized_bytes)" -v c="peft bench $SHAPE${*:+ $*}" \
        'BEGIN { m = 1048576; printf "| %-28s | %5.0f MiB | %6.1f MiB | %5.1f MiB | `%s` |\n", n, rss / m, saved / m, q / m, c }'
}

echo "| row | peak RSS | peak saved | quantized | command (+ $RUN) |"
echo "|---|---|---|---|---|"
row "fp32, plain loss + attention" --unfused_loss --attention_saved_probs
row "+ fused chunked CE" --attention_saved_probs
row "+ attention without T×T"
row "+ gradient checkpointing" --gradient_checkpointing
row "q8_0 base" --gradient_checkpointing --quantize q8_0
row "q4_0 base" --gradient_checkpointing --quantize q4_0
row "nf4 base" --gradient_checkpointing --quantize nf4
