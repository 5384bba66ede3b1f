#!/bin/sh
# bench/profile_accuracy.sh: does the profiler predict this machine?  For synthetic ~1B llama
# models (TinyLlama's shape, as bench/bench.sh writes them), compare the cost model's latency for
# a single-device plan, kappa + L·t_cpu from `halda profile`, with the generation time per token
# that `halda bench` measures.  Profiles and bench runs alternate (profile, bench, profile, ...,
# profile) and each side is averaged, so that a change of load during the comparison — other
# programs on a shared machine — moves both figures alike.  The load average is printed beside
# each comparison: on a busy machine expect a wider spread.
# Override with BENCH_TYPES="q8_0 q4_0", ROUNDS=5, BENCH_ARGS="-p 0 -n 16", THREADS=N.
set -e
H=${HALDA_BIN:-./halda}
mkdir -p build
TYPES=${BENCH_TYPES:-"q8_0 q4_0"}
ROUNDS=${ROUNDS:-5}
ARGS=${BENCH_ARGS:-"-p 0 -n 16"}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-$PWD/build/cache}
predict() { # prints "kappa+L·t_cpu kappa t_cpu L profiling_seconds" from a fresh profile
    "$H" profile -m "$1" --reprofile ${THREADS:+-t $THREADS} >build/profile.out
    awk '/^(model|device) / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
         /measured in/     { sub(/.*measured in /, ""); sub(/ s\).*/, ""); wall = $0 }
         END { printf "%.1f %s %s %s %s\n", v["kappa_ms"] + v["layers"] * v["t_cpu"], v["kappa_ms"], v["t_cpu"], v["layers"], wall }' build/profile.out
}
measure() { # generation ms per token from one bench run
    "$H" bench -m "$1" $ARGS -r 1 ${THREADS:+-t $THREADS} 2>/dev/null | sed -n 's/^bench .*tg=\([0-9.]*\).*/\1/p' | awk '{ printf "%.1f\n", 1000 / $1 }'
}
for t in $TYPES; do
    M=build/bench-1b-$t.gguf
    if [ ! -s $M ]; then
        echo "writing $M ..."
        $H gen-model -o $M --layers 22 --embd 2048 --ff 5632 --heads 32 --kv-heads 4 --vocab 32000 \
            --ctx 4096 --type $t --out-type q6_k
    fi
    echo "== $M   (load average $(uptime | sed 's/.*load average: //'))"
    preds="" meas=""
    r=0
    while :; do
        set -- $(predict $M)
        preds="$preds $1"
        echo "  profile: kappa $2 ms + $4 x t_cpu $3 ms = $1 ms per token (profiling took $5 s)"
        [ $r -ge $ROUNDS ] && break
        m=$(measure $M)
        meas="$meas $m"
        echo "  bench:   $m ms per token"
        r=$((r + 1))
    done
    echo "$preds|$meas|$(uptime | sed 's/.*load average: //')" | awk -F'|' '{
        np = split($1, p, " "); nm = split($2, m, " ")
        for (i = 1; i <= np; i++) sp += p[i]; for (i = 1; i <= nm; i++) sm += m[i]
        pred = sp / np; meas = sm / nm
        printf "  predicted %.1f ms per token, measured %.1f ms per token: %+.1f%%   [load %s]\n", pred, meas, 100 * (pred - meas) / meas, $3 }'
done
