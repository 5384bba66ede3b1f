#!/bin/sh
# make demo: what a newcomer should see first.  Writes a synthetic model (no download), shows
# its tokens, generates from it, and runs a real tiny trained model when ../shared has one.
set -e
H=./halda
mkdir -p build
M=build/demo-llama-q8_0.gguf
echo "== 1. A synthetic llama model: 8 layers, 512 wide, Q8_0 weights, deterministic random values"
$H gen-model -o $M --layers 8 --embd 512 --ff 1376 --heads 8 --kv-heads 4 --vocab 2048 --type q8_0
ls -l $M
echo
echo "== 2. Tokenize: halda tokenize -m $M -p 'Once upon a time'"
$H tokenize -m $M -p "Once upon a time"
echo
echo "== 3. Generate: halda run -m $M -p 'Once upon a time' -n 48   (random weights: gibberish text, real speed)"
$H run -m $M -p "Once upon a time" -n 48 --seed 1
echo
if [ -f ../shared/models/stories260K.gguf ]; then
    echo "== 4. A real (tiny, 260K-parameter) trained model: stories260K"
    $H run -m ../shared/models/stories260K.gguf -p "Once upon a time" -n 96 --temp 0.6 --seed 42
else
    echo "== 4. (../shared/models/stories260K.gguf is absent: see models/README.md for real models)"
fi
echo
echo "== 5. A cluster on this machine: two 'halda worker's on loopback and a head, k=2 cycles"
P1=$(( 30000 + $$ % 10000 )); P2=$(( P1 + 1 ))
$H worker -m $M --port $P1 2>build/demo-w1.log & W1=$!
$H worker -m $M --port $P2 2>build/demo-w2.log & W2=$!
trap 'kill $W1 $W2 2>/dev/null' EXIT
sleep 0.5
echo "   halda run -m $M -p 'Once upon a time' -n 32 --workers 127.0.0.1:$P1,127.0.0.1:$P2 -k 2 --layer-window 2,1,1"
$H run -m $M -p "Once upon a time" -n 32 --seed 1 --workers 127.0.0.1:$P1,127.0.0.1:$P2 -k 2 --layer-window 2,1,1
kill $W1 $W2 2>/dev/null; wait $W1 $W2 2>/dev/null || true
trap - EXIT
echo
echo "Next: 'make test' runs every test; README.md shows how to run a real GGUF model and a real cluster."
