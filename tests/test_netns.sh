#!/bin/sh
# tests/test_netns.sh — the ring over a real (emulated) home network: three network namespaces
# (the head and two workers) joined by veth pairs through a bridge in a fourth, 100 Mbit/s per
# device (tc tbf), and in front of each worker our userspace relay adding 3 ms delay, 1 ms
# jitter and 0.2% loss (this kernel has no tc netem).  The ring must generate exactly what one
# device generates; the per-token latency is reported.  Needs root, ip and tc; skips otherwise.
H=${HALDA_BIN:-./halda}
RELAY=${RELAY_BIN:-tests/bin/relay}
. "$(dirname "$0")/lib.sh"
finish() { echo "RESULT netns passed=$pass failed=$fail skipped=$skip"; [ $fail -eq 0 ]; exit $?; }
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v tc >/dev/null || [ ! -x "$RELAY" ]; then
    echo "SKIP: network namespaces need root, ip, tc and $RELAY"; skip=1; finish
fi
tag=hn$$
net=10.213.$(( $$ % 200 + 20 ))
T=$(mktemp -d)
PIDS=""
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    for n in sw d0 d1 d2; do ip netns del $tag$n 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
if ! ip netns add ${tag}sw 2>"$T/err"; then
    echo "SKIP: cannot create network namespaces: $(cat "$T/err")"; skip=1; finish
fi
setup_ok=1
ip -n ${tag}sw link add br0 type bridge && ip -n ${tag}sw link set br0 up && ip -n ${tag}sw link set lo up || setup_ok=0
for i in 0 1 2; do
    ip netns add ${tag}d$i || setup_ok=0
    ip link add ${tag}v$i type veth peer name ${tag}p$i || setup_ok=0
    ip link set ${tag}v$i netns ${tag}d$i && ip link set ${tag}p$i netns ${tag}sw || setup_ok=0
    ip -n ${tag}sw link set ${tag}p$i master br0 up || setup_ok=0
    ip -n ${tag}d$i addr add $net.$((i + 1))/24 dev ${tag}v$i && ip -n ${tag}d$i link set ${tag}v$i up && ip -n ${tag}d$i link set lo up || setup_ok=0
    ip netns exec ${tag}d$i tc qdisc add dev ${tag}v$i root tbf rate 100mbit burst 32kbit latency 50ms || setup_ok=0
done
if [ $setup_ok != 1 ]; then echo "SKIP: could not build the emulated network"; skip=1; finish; fi

M="$T/m.gguf"
"$H" gen-model -o "$M" --arch qwen2 --type q8_0 --layers 6 --embd 512 --ff 1376 --heads 8 --kv-heads 4 --vocab 2048 --tied
for i in 1 2; do
    ip netns exec ${tag}d$i "$H" worker -m "$M" --cluster-key wifi --port 9137 >"$T/w$i.log" 2>&1 &
    PIDS="$PIDS $!"
    ip netns exec ${tag}d$i "$RELAY" 9200 127.0.0.1 9137 --delay-ms 3 --jitter-ms 1 --loss 0.002 >"$T/r$i.log" 2>&1 &
    PIDS="$PIDS $!"
done
i=0; while [ $i -lt 50 ] && ! { grep -q listening "$T/w1.log" && grep -q listening "$T/w2.log"; }; do sleep 0.1; i=$((i + 1)); done
W="$net.2:9200,$net.3:9200"
"$H" eval -m "$M" -p "Once upon a time there was a little girl" -n 16 >"$T/one"
for plan in "-k 1" "-k 2 --layer-window 1,1,1"; do
    ip netns exec ${tag}d0 "$H" eval -m "$M" -p "Once upon a time there was a little girl" -n 16 --workers "$W" --cluster-key wifi $plan >"$T/ring" 2>"$T/err"
    if cmp -s "$T/one" "$T/ring"; then ok; else bad "ring over the emulated Wi-Fi differs ($plan): $(tail -1 "$T/err")"; fi
    ip netns exec ${tag}d0 "$H" run -m "$M" -p "Once upon a time" -n 32 --temp 0 --workers "$W" --cluster-key wifi $plan >/dev/null 2>"$T/run"
    line=$(grep "generation" "$T/run")
    ms=$(echo "$line" | sed 's/.*generation \([0-9]*\) tokens, \([0-9.]*\) ms.*/\2 \1/' | awk '{ if ($2 > 0) printf "%.1f", $1 / $2 }')
    echo "emulated Wi-Fi (100 Mbit/s, 3±1 ms, 0.2% loss), 3 devices, $plan: ${ms:-?} ms per token"
    if [ -n "$ms" ]; then ok; else bad "run over the emulated Wi-Fi: $(tail -2 "$T/run")"; fi
done
finish
