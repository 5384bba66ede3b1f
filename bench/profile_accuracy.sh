#!/bin/sh
# bench/profile_accuracy.sh: does the profiler predict this machine?  For synthetic ~1B llama
# models (TinyLlama's shape, as bench/bench.sh writes them), compare the cost model's latency for
# a single-device plan, kappa + L·t_cpu from `halda profile`, with the generation time per token
# that `halda bench` measures.  The profile is taken just before and just after the bench and
# averaged, so a change of load during the run shows up as a gap between the two.  Load on a
# shared machine moves both figures: note the load average printed beside them.
# Override with BENCH_TYPES="q8_0 q4_0", BENCH_ARGS="-p 0 -n 32 -r 3", THREADS=N.
set -e
H=${HALDA_BIN:-./halda}
mkdir -p build
TYPES=${BENCH_TYPES:-"q8_0 q4_0"}
ARGS=${BENCH_ARGS:-"-p 0 -n 32 -r 3"}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$PWD/build/cache}
predict() { # kappa + L·t_cpu in ms, from a fresh profile
    "$H" profile -m "$1" --reprofile ${THREADS:+-t $THREADS} >build/profile.out
    awk '/^model layers=/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         /^device name=/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         /measured in/   { sub(/.*measured in /, ""); sub(/ s\).*/, ""); wall = $0 }
         END { printf "%.1f %s %s %s %s\n", v["kappa_ms"] + v["layers"] * v["t_cpu"], v["kappa_ms"], v["t_cpu"], v["layers"], wall }' build/profile.out
}
for t in $TYPES; do
    M=build/bench-1b-$t.gguf
    if [ ! -s $M ]; then
        echo "writing $M ..."
        $H gen-model -o $M --layers 22 --embd 2048 --ff 5632 --heads 32 --kv-heads 4 --vocab 32000 \
            --ctx 4096 --type $t --out-type q6_k
    fi
    echo "== $M   ($(uptime | sed 's/.*load/load/'))"
    set -- $(predict $M)
    p1=$1
    echo "  profile before: kappa $2 ms + $4 x t_cpu $3 ms = $1 ms per token (profiling took $5 s)"
    tg=$("$H" bench -m $M $ARGS ${THREADS:+-t $THREADS} 2>/dev/null | sed -n 's/^bench .*tg=\([0-9.]*\).*/\1/p')
    set -- $(predict $M)
    p2=$1
    echo "  profile after:  kappa $2 ms + $4 x t_cpu $3 ms = $1 ms per token (profiling took $5 s)"
    awk -v a="$p1" -v b="$p2" -v tg="$tg" -v load="$(uptime | sed 's/.*load average: //')" 'BEGIN {
        pred = (a + b) / 2; meas = 1000 / tg
        printf "  predicted %.1f ms per token, measured %.1f ms per token (%.3f tok/s): %+.1f%%   [load %s]\n",
               pred, meas, tg, 100 * (pred - meas) / meas, load }'
done
