# tests/lib.sh — what the shell tests share.  Source it after setting H (the halda binary) and
# T (a scratch folder).  Counts checks in pass/fail/skip; each script prints its own
# "RESULT name passed=N failed=M skipped=K" line at the end.
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...: passes when the command succeeds
    d=$1; shift
    if "$@"; then ok; else bad "$d"; fi
}
# expect_exit_in CODE PATTERN STDIN -- ARGS: with STDIN as its input, halda exits with CODE and
# prints exactly one stderr line, matching PATTERN
expect_exit_in() {
    code=$1 pat=$2 in=$3; shift 4
    { printf '%s' "$in" 2>/dev/null; } | "$H" "$@" >"$T/x.out" 2>"$T/x.err"; rc=$?
    if [ "$rc" -eq "$code" ] && [ "$(wc -l <"$T/x.err")" -eq 1 ] && grep -q -e "$pat" "$T/x.err"; then ok
    else bad "halda $* -> exit $rc (want $code), stderr: $(head -c 300 "$T/x.err")"; fi
}
# expect_exit CODE PATTERN -- ARGS: the same with empty input
expect_exit() {
    code=$1 pat=$2; shift 3
    expect_exit_in "$code" "$pat" "" -- "$@"
}

# Workers on loopback for the cluster tests (the caller sets PIDS and kills them at exit).
# start_worker MODEL [flags...]: a worker on a free loopback port; sets WPID and WPORT
start_worker() {
    m=$1; shift
    for try in 1 2 3 4 5 6 7 8; do
        WPORT=$(( 20000 + ($$ * 7 + try * 131 + $(od -An -N2 -tu2 /dev/urandom)) % 30000 ))
        "$H" worker -m "$m" --port $WPORT "$@" >"$T/w$WPORT.log" 2>&1 &
        WPID=$!
        PIDS="$PIDS $WPID"
        i=0
        while [ $i -lt 50 ] && ! grep -q listening "$T/w$WPORT.log" 2>/dev/null; do
            kill -0 $WPID 2>/dev/null || break
            sleep 0.1; i=$((i + 1))
        done
        grep -q listening "$T/w$WPORT.log" 2>/dev/null && return 0
        kill -9 $WPID 2>/dev/null
    done
    return 1
}
stop_worker() { kill -9 "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
