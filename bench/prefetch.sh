#!/bin/sh
# bench/prefetch.sh — what prefetching buys a disk-bound device (a benchmark, not a test: it
# prints figures and asserts nothing).
#
# The setup the Halda cost model says prefetching is for (../shared/halda/MODEL.md): a device
# whose windows do not all fit in its memory (overloaded: it re-reads them from disk every
# token) but two of them do (the one it computes and the next), and k >= 2 cycles, so that
# while the token is on the other devices it has time to read its next window.  Here:
#   - a synthetic 20-layer model of TinyLlama's width (2048, 5632 feed-forward, Q8_0: ~47 MiB
#     per layer), k = 4 cycles of 5 layers: head 2, worker 1 one, worker 2 two per cycle;
#   - worker 1 holds 4 layers (178 MiB) in a v1 memory cgroup capped at PREFETCH_CAP_MIB
#     (default 150): it must re-read part of them from disk every token; the others are
#     unconstrained and keep theirs in memory;
#   - the model file's pages are dropped from the page cache before each run;
#   - runs alternate --prefetch off / on, ROUNDS times each (default 3), N tokens each (16);
#   - each line gives tok/s and what worker 1 read from disk per token (/proc/PID/io).
# Figures and what they mean: bench/README.md (try PREFETCH_CAP_MIB=150 and 110).
# Needs root and cgroup v1 memory at /sys/fs/cgroup/memory.  Every process started here is
# stopped here, by pid; the cgroup is removed.
set -u
H=${HALDA_BIN:-./halda}
ROUNDS=${ROUNDS:-3} N=${N:-16} CAP=${PREFETCH_CAP_MIB:-150} THREADS=${THREADS:-1}
M=build/bench-prefetch.gguf
CG=/sys/fs/cgroup/memory/halda-prefetch-$$
mkdir -p build
if [ ! -s $M ]; then
    echo "writing $M ..."
    $H gen-model -o $M --layers 20 --embd 2048 --ff 5632 --heads 32 --kv-heads 4 --vocab 32000 --ctx 4096 --type q8_0
fi
if [ "$(id -u)" != 0 ] || ! mkdir "$CG" 2>/dev/null; then
    echo "bench/prefetch.sh needs root and cgroup v1 memory at /sys/fs/cgroup/memory"; exit 1
fi
T=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    sleep 0.2; rmdir "$CG" 2>/dev/null; rm -rf "$T"
}
trap cleanup EXIT
echo $((CAP * 1024 * 1024)) >"$CG/memory.limit_in_bytes"
P1=$(( 31000 + $$ % 4000 )) P2=$(( 31000 + $$ % 4000 + 1 ))
sh -c "echo \$\$ >$CG/cgroup.procs; exec $H worker -m $M --port $P1 -t $THREADS" >"$T/w1.log" 2>&1 &
W1=$!; PIDS="$PIDS $W1"
$H worker -m $M --port $P2 -t $THREADS >"$T/w2.log" 2>&1 &
PIDS="$PIDS $!"
i=0; while [ $i -lt 100 ] && ! { grep -q listening "$T/w1.log" && grep -q listening "$T/w2.log"; }; do sleep 0.1; i=$((i + 1)); done
drop() { python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)" "$M"; }
echo "worker 1: 4 layers of $(( $(wc -c <$M) / 1048576 )) MiB file under a $CAP MiB cap; k=4, windows head 2, w1 1, w2 2; $N tokens, -t $THREADS"
for r in $(seq 1 "$ROUNDS"); do
    for pf in off on; do
        drop
        echo 0 >"$CG/memory.max_usage_in_bytes" 2>/dev/null
        in0=$(sed -n 's/^read_bytes: //p' /proc/$W1/io)
        $H run -m $M -p "Once upon a time" -n "$N" -c 256 --temp 0 --ignore-eos -t "$THREADS" --prefetch $pf \
            --workers 127.0.0.1:$P1,127.0.0.1:$P2 -k 4 --layer-window 2,1,2 >/dev/null 2>"$T/run"
        tg=$(sed -n 's/.*generation [0-9]* tokens, \([0-9.]*\) ms, \([0-9.]*\) tok\/s.*/\2 tok\/s (\1 ms)/p' "$T/run")
        peak=$(( $(cat "$CG/memory.max_usage_in_bytes" 2>/dev/null || echo 0) / 1048576 ))
        in1=$(sed -n 's/^read_bytes: //p' /proc/$W1/io)
        echo "round $r prefetch $pf: ${tg:-failed: $(tail -1 "$T/run")}; worker 1: peak $peak MiB, read $(( (in1 - in0) / 1048576 / (N + 1) )) MiB from disk per token"
    done
done
grep -h "overloaded" "$T/w1.log" | head -1
