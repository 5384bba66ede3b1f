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
echo "Next: 'make test' runs every test; README.md shows how to run a real GGUF model."
