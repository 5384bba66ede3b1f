#!/bin/sh
# make bench: speed figures on synthetic ~1B llama models (TinyLlama's shape: 22 layers, 2048 wide,
# 5632 feed-forward, 32 heads / 4 KV heads, 32000 tokens) written by halda's own GGUF writer.
# q4_k_m is llama-quantize's Q4_K_M layout (gen-model --mix q4_k_m).
# Override with BENCH_TYPES="q8_0 q4_0", BENCH_ARGS="-p 512 -n 128 -r 3", THREADS=N.
set -e
H=./halda
mkdir -p build
TYPES=${BENCH_TYPES:-"q4_k_m q8_0"}
ARGS=${BENCH_ARGS:-"-p 128 -n 64 -r 3"}
for t in $TYPES; do
    M=build/bench-1b-$t.gguf
    if [ ! -s $M ]; then
        echo "writing $M ..."
        if [ $t = q4_k_m ]; then types="--mix q4_k_m"; else types="--type $t --out-type q6_k"; fi
        $H gen-model -o $M --layers 22 --embd 2048 --ff 5632 --heads 32 --kv-heads 4 --vocab 32000 --ctx 4096 $types
    fi
    echo "== $M"
    $H bench -m $M $ARGS ${THREADS:+-t $THREADS}
done
