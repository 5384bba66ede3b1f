#!/bin/sh
# tests/test_overload.sh — a worker whose share of the model does not fit in its memory: it runs
# inside a memory cgroup (v1) capped below its windows, must report itself overloaded, and the
# ring must still produce exactly the single-device output.  Also prints per-token latency with
# --prefetch on and off (figures, not assertions).  Needs root and writable v1 memory cgroups.
H=${HALDA_BIN:-./halda}
. "$(dirname "$0")/lib.sh"
finish() { echo "RESULT overload passed=$pass failed=$fail skipped=$skip"; [ $fail -eq 0 ]; exit $?; }
CG=/sys/fs/cgroup/memory/halda-test-$$
if [ "$(id -u)" != 0 ] || ! mkdir "$CG" 2>/dev/null; then
    echo "SKIP: cannot create a memory cgroup (needs root and cgroup v1 memory at /sys/fs/cgroup/memory)"; skip=1; finish
fi
if [ -n "$HALDA_SANITIZE" ]; then echo "SKIP: memory limits and sanitizers do not mix"; skip=1; rmdir "$CG"; finish; fi
T=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    sleep 0.2
    rmdir "$CG" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
echo $((40 * 1024 * 1024)) >"$CG/memory.limit_in_bytes"
M="$T/m.gguf"
"$H" gen-model -o "$M" --layers 6 --embd 1024 --ff 2816 --heads 8 --kv-heads 4 --vocab 2048 --type q8_0
drop_cache() { python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)" "$M" 2>/dev/null; }
start_workers() { # $1: extra worker flags; sets P1 P2
    P1=$(( 30000 + $$ % 5000 )); P2=$(( P1 + 1 ))
    sh -c "echo \$\$ >$CG/cgroup.procs; exec $H worker -m $M --port $P1" >"$T/w1.log" 2>&1 &
    W1=$!; PIDS="$PIDS $W1"
    "$H" worker -m "$M" --port $P2 >"$T/w2.log" 2>&1 &
    W2=$!; PIDS="$PIDS $W2"
    i=0; while [ $i -lt 50 ] && ! { grep -q listening "$T/w1.log" && grep -q listening "$T/w2.log"; }; do sleep 0.1; i=$((i + 1)); done
}
"$H" eval -m "$M" -p "Once upon a time" -n 8 >"$T/one"
start_workers
drop_cache
# worker 1 holds 4 of the 6 layers (~49 MB) under a 40 MiB cap
"$H" eval -m "$M" -p "Once upon a time" -n 8 --workers 127.0.0.1:$P1,127.0.0.1:$P2 -k 2 --layer-window 1,2,0 >"$T/ring" 2>"$T/head"
if cmp -s "$T/one" "$T/ring"; then ok; else bad "overloaded ring output differs: $(tail -1 "$T/head")"; fi
if grep -q "overloaded" "$T/w1.log" && grep -q "127.0.0.1:$P1 2 (overloaded)" "$T/head"; then ok
else bad "the overloaded worker was not reported: $(cat "$T/head" "$T/w1.log" | tr '\n' '|')"; fi
if ! grep -q "overloaded" "$T/w2.log"; then ok; else bad "the unconstrained worker claims overload"; fi
peak=$(cat "$CG/memory.max_usage_in_bytes" 2>/dev/null)
echo "worker 1 under a 40 MiB cap: peak cgroup usage $(( ${peak:-0} / 1048576 )) MiB"
for pf in off on; do
    drop_cache
    "$H" run -m "$M" -p "Once upon a time" -n 24 --temp 0 --workers 127.0.0.1:$P1,127.0.0.1:$P2 -k 2 --layer-window 1,2,0 --prefetch $pf >/dev/null 2>"$T/run"
    echo "prefetch $pf: $(grep generation "$T/run" | sed 's/.*generation/generation/')"
done
finish
