#!/bin/sh
# tests/test_ring32.sh — a 32-bit worker serves its window of a model file too large for its
# address space.  The file: a small synthetic model with a 5 GiB hole (a sparse file: no disk
# space) moved in before layer 2's tensors, so its data lies past 4 GiB.  A 32-bit build refuses
# to run it alone (the file cannot be mapped), but as a worker it maps only the header and its
# windows, and the ring (a 64-bit head, the 32-bit worker) produces exactly what one 64-bit
# device produces.
#   With `gcc -m32` (x86, SSE2 arithmetic) the worker natively holds layers 0 and 2: one of its
#   windows lies past 4 GiB, which takes a 64-bit off_t in mmap.
#   Otherwise, with the 32-bit ARM cross compiler under qemu-arm (what tests/test_arm64.sh
#   installs), it holds layers 0 and 1, below 4 GiB: qemu-user (7.2) cuts mmap offsets of
#   32-bit guests to 32 bits, so a window past 4 GiB would read the wrong bytes there (outside
#   halda; the native build shows halda's own side works).
# HALDA_RING32=armhf picks the second way where both are at hand.
# Skips when neither compiler, python3 (which writes the file) or sparse files are at hand.
# Every process started here is stopped here, by pid.
H=${HALDA_BIN:-./halda}
B=build/ring32
T=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
. "$(dirname "$0")/lib.sh"
finish() { echo "RESULT ring32 passed=$pass failed=$fail skipped=$skip"; [ $fail -eq 0 ]; exit $?; }
skipped() { skip=$((skip + 1)); echo "SKIP: $*"; finish; }

# ---- a 32-bit halda ------------------------------------------------------------------------------
WARN="-std=c11 -Wall -Wextra -Wshadow"
mkdir -p "$B"
RUN32=""
# gcc -m32 needs the 32-bit libc (gcc-12-multilib and friends) and <asm/...>, which Debian's
# gcc-multilib links as /usr/include/asm; that package conflicts with the ARM cross compilers
# tests/test_arm64.sh installs, so where it is absent the same link is made here, in build/.
printf '#include <errno.h>\nint main(void) { return sizeof(void *) != 4; }\n' >"$B/probe.c"
mkdir -p "$B/inc"; [ -e "$B/inc/asm" ] || ln -s /usr/include/x86_64-linux-gnu/asm "$B/inc/asm" 2>/dev/null
m32() { gcc -m32 $1 "$B/probe.c" -o "$B/probe" 2>/dev/null && "$B/probe"; }
if [ "${HALDA_RING32:-}" != armhf ] && { m32 "" || { [ -d /usr/include/x86_64-linux-gnu/asm ] && m32 "-I$B/inc" && ASM="-I$B/inc"; }; }; then
    # SSE2 arithmetic: the x87 unit would keep 80-bit intermediates and round differently
    CC32="gcc -m32 -msse2 -mfpmath=sse -Wno-psabi ${ASM:-}" KIND=x86 PLAN="-k 2 --layer-window 1,1"
elif command -v arm-linux-gnueabihf-gcc >/dev/null && command -v qemu-arm >/dev/null; then
    CC32="arm-linux-gnueabihf-gcc -march=armv7-a -mfpu=neon" KIND=armhf PLAN="-k 1 --layer-window 2,2"
    RUN32="env QEMU_LD_PREFIX=/usr/arm-linux-gnueabihf qemu-arm"
else
    skipped "no 32-bit compiler (gcc -m32, or arm-linux-gnueabihf-gcc with qemu-arm)"
fi
command -v python3 >/dev/null || skipped "python3 absent: the sparse model file is not written"
if $CC32 -O2 $WARN -pthread halda.c -o "$B/halda" -lm >"$B/build.log" 2>&1 && [ ! -s "$B/build.log" ]; then ok
else bad "the 32-bit build ($CC32): $(head -c 1500 "$B/build.log")"; finish; fi
H32=$T/halda32 # the binary, through qemu where it needs it
printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$RUN32" "$(pwd)/$B/halda" >"$H32"
chmod +x "$H32"

# ---- the file ------------------------------------------------------------------------------------
M=$T/small.gguf BIG=$T/big.gguf
"$H" gen-model -o "$M" --layers 4 --embd 256 --ff 512 --heads 4 --kv-heads 2 --vocab 1024 --type q8_0
# copy a GGUF, moving the data of every tensor of layers >= FIRST GAP bytes further on
python3 - "$M" "$BIG" 2 $((5 << 30)) <<'PY'
import struct, sys
src, dst, first, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
b = open(src, "rb").read()
n_tensors, n_kv = struct.unpack_from("<QQ", b, 8)
p, align = 24, 32
def skip(t):  # one metadata value of type t
    global p
    if t == 8:
        n, = struct.unpack_from("<Q", b, p); p += 8 + n
    elif t == 9:
        et, n = struct.unpack_from("<IQ", b, p); p += 12
        for _ in range(n): skip(et)
    else:
        p += {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}[t]
for _ in range(n_kv):
    n, = struct.unpack_from("<Q", b, p); key = b[p + 8:p + 8 + n]; p += 8 + n
    t, = struct.unpack_from("<I", b, p); p += 4
    if key == b"general.alignment": align, = struct.unpack_from("<I", b, p)
    skip(t)
tensors = []  # (name, where its offset is written, offset)
for _ in range(n_tensors):
    n, = struct.unpack_from("<Q", b, p); name = b[p + 8:p + 8 + n].decode(); p += 8 + n
    nd, = struct.unpack_from("<I", b, p); p += 4 + 8 * nd + 4
    off, = struct.unpack_from("<Q", b, p); tensors.append((name, p, off)); p += 8
data = (p + align - 1) // align * align
ends = sorted(o for _, _, o in tensors) + [len(b) - data]
header = bytearray(b[:data])
with open(dst, "wb") as f:
    for name, at, off in tensors:
        new = off + (gap if name.startswith("blk.") and int(name.split(".")[1]) >= first else 0)
        struct.pack_into("<Q", header, at, new)
        size = min(e for e in ends if e > off) - off
        f.seek(data + new); f.write(b[data + off:data + off + size])
    f.seek(0); f.write(header)
PY
size=$(wc -c <"$BIG" 2>/dev/null || echo 0) disk=$(du -k "$BIG" 2>/dev/null | cut -f1)
if [ "$size" -le $((5 << 30)) ] || [ "${disk:-999999}" -gt 65536 ]; then
    skipped "no sparse 5 GiB file here (size $size bytes, $disk KiB on disk)"
fi
echo "model file: $size bytes, $disk KiB on disk; 32-bit worker: $KIND"
P="Once upon a time there was"
"$H" eval -m "$M" -p "$P" -n 6 >"$T/one"
"$H" eval -m "$BIG" -p "$P" -n 6 >"$T/big"
check "the file with the hole runs as the original does (64-bit)" cmp -s "$T/one" "$T/big"

# ---- the 32-bit build: alone it cannot map the file; as a worker it serves its windows ----------
"$H32" eval -m "$BIG" -p "$P" -n 1 >/dev/null 2>"$T/alone.err"; rc=$?
if [ $rc -eq 1 ] && grep -q "cannot be mapped in a 32-bit address space" "$T/alone.err"; then ok
else bad "the 32-bit build alone should refuse the 5 GiB file (exit $rc): $(cat "$T/alone.err")"; fi
H64=$H H=$H32
start_worker "$BIG" -t 1 || { bad "cannot start the 32-bit worker: $(cat "$T"/w*.log)"; finish; }
H=$H64 W=$WPID WP=$WPORT
"$H" eval -m "$BIG" -p "$P" -n 6 --workers "127.0.0.1:$WP" $PLAN >"$T/ring" 2>"$T/ring.err"
if [ $? -eq 0 ] && cmp -s "$T/one" "$T/ring"; then ok
else bad "a 64-bit head and the 32-bit worker ($PLAN) differ from one device: $(tail -2 "$T/ring.err")"; fi
grep "halda worker: mapped" "$T/w$WP.log"
if grep -q "halda worker: mapped .* of the 5123.* MiB model file.*(2 layers)" "$T/w$WP.log"; then ok
else bad "the worker did not report mapping its 2 layers: $(cat "$T/w$WP.log")"; fi
stop_worker $W
finish
