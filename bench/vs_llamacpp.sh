#!/bin/sh
# Side by side with llama.cpp: llama-bench and `halda bench` on the same GGUF files, with the same
# thread count and the same -p/-n, alternating in rounds so that both see the same machine load.
# Prints one line per run as it goes, then a markdown table of the per-round medians.
#
#   LLAMA_BENCH=/tmp/llama.cpp/build/bin/llama-bench sh bench/vs_llamacpp.sh
#
# Settings (environment): LLAMA_BENCH (required), MODELS (default: the two `make bench` models),
# THREADS (default "1 2"), ROUNDS (default 3), P (prompt tokens, 64), N (generated tokens, 32),
# R (repetitions inside each program, 2), HALDA (./halda).
set -e
cd "$(dirname "$0")/.."
: "${LLAMA_BENCH:?set LLAMA_BENCH to a llama-bench binary built outside this repository (see bench/README.md)}"
[ -x "$LLAMA_BENCH" ] || { echo "vs_llamacpp: $LLAMA_BENCH is not an executable" >&2; exit 1; }
HALDA=${HALDA:-./halda}
MODELS=${MODELS:-"build/bench-1b-q4_k_m.gguf build/bench-1b-q8_0.gguf"}
THREADS=${THREADS:-"1 2"}
ROUNDS=${ROUNDS:-3}
P=${P:-64} N=${N:-32} R=${R:-2}
for m in $MODELS; do [ -f "$m" ] || { echo "vs_llamacpp: $m is missing (make bench writes it)" >&2; exit 1; }; done

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for t in $THREADS; do
    for m in $MODELS; do
        round=1
        while [ "$round" -le "$ROUNDS" ]; do
            load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo ?)
            # llama-bench's JSON lines: one object per test, with n_prompt, n_gen and avg_ts.
            l=$("$LLAMA_BENCH" -m "$m" -p "$P" -n "$N" -t "$t" -r "$R" -o jsonl 2>/dev/null |
                awk '{ ts = $0; sub(/.*"avg_ts": */, "", ts); sub(/[,}].*/, "", ts)
                       if ($0 ~ /"n_gen": 0[,}]/) pp = ts; else tg = ts }
                     END { printf "%s %s", pp, tg }')
            h=$("$HALDA" bench -m "$m" -p "$P" -n "$N" -t "$t" -r "$R" 2>/dev/null | tail -1 |
                sed 's/.*pp=\([0-9.]*\) tg=\([0-9.]*\) bw=\([0-9.]*\) membw=\([0-9.]*\).*/\1 \2 \3 \4/')
            echo "$(basename "$m") t=$t round $round load $load: llama.cpp pp tg = $l; halda pp tg bw membw = $h"
            echo "$(basename "$m") $t $l $h $load" >>"$raw"
            round=$((round + 1))
        done
    done
done

echo
echo "| model | threads | llama.cpp pp | halda pp | ratio | llama.cpp tg | halda tg | ratio | halda weight bandwidth | load |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
# Medians over the rounds of each (model, threads), and the load range.
awk '
function median(list,   n, a, i, j, x) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    k = $1 " " $2
    if (!(k in seen)) { seen[k] = 1; order[++nk] = k; lo[k] = hi[k] = $9 }
    lpp[k] = lpp[k] " " $3; ltg[k] = ltg[k] " " $4; hpp[k] = hpp[k] " " $5; htg[k] = htg[k] " " $6
    bw[k] = bw[k] " " $7; mb[k] = mb[k] " " $8
    if ($9 < lo[k]) lo[k] = $9
    if ($9 > hi[k]) hi[k] = $9
}
END {
    for (i = 1; i <= nk; i++) {
        k = order[i]; split(k, f, " ")
        a = median(lpp[k]); b = median(hpp[k]); c = median(ltg[k]); d = median(htg[k]); e = median(bw[k]); g = median(mb[k])
        printf "| %s | %s | %.1f | %.1f | %.2fx | %.1f | %.1f | %.2fx | %.1f GB/s (%.0f%% of %.1f copy) | %s-%s |\n",
               f[1], f[2], a, b, b / a, c, d, d / c, e, 100 * e / g, g, lo[k], hi[k]
    }
}' "$raw"
