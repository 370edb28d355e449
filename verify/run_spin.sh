#!/bin/sh
# Model-check the KThread protocol: every verify/*.pml, or the ones named.
#
#   verify/run_spin.sh [FILE.pml ...]
#
# Each model is checked with the command on its " * run: spin ..." line, in
# a private temporary directory (pan writes its files there).  A model whose
# name contains "mutant" must FAIL (SPIN reports an error); every other model
# must pass with a complete search (no error, no truncated depth).  Prints one
# line per model with the outcome, the states stored and the seconds taken;
# for an unexpected outcome it keeps the directory with the log and the error
# trail, and says how to replay it.  Exit status: 0 when every model behaved
# as expected, 1 otherwise, 2 when spin or a C compiler is missing.
set -u
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v spin >/dev/null 2>&1; then
    echo "run_spin.sh: spin is not installed (Debian/Ubuntu: apt-get install spin)" >&2
    exit 2
fi
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    echo "run_spin.sh: no C compiler (cc/gcc) to build SPIN's verifier" >&2
    exit 2
fi

if [ $# -eq 0 ]; then
    set -- "$here"/*.pml
fi

status=0
total_start=$(date +%s)
for model in "$@"; do
    name=$(basename "$model")
    src="$here/$name"
    [ -f "$model" ] && src=$(cd "$(dirname "$model")" && pwd)/$name
    args=$(sed -n 's/^ \* run: spin //p' "$src" | head -n 1)
    if [ -z "$args" ]; then
        echo "FAIL  $name: no ' * run: spin ...' line"
        status=1
        continue
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/kpark-spin.XXXXXX")
    cp "$here"/*.pmh "$here"/*.pml "$work"/
    start=$(date +%s)
    # shellcheck disable=SC2086  # the run line is a word list on purpose
    (cd "$work" && spin $args) >"$work/log" 2>&1
    secs=$(( $(date +%s) - start ))
    errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$work/log" | tail -n 1)
    states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$work/log" | tail -n 1)
    what=$(grep -m1 -E '^pan:[0-9]+: ' "$work/log" | sed 's/^pan:[0-9]*: //; s/ (at depth.*//')
    truncated=$(grep -c -E 'max search depth too small|Search not completed' "$work/log")
    case "$name" in
        *mutant*) expect=fail ;;
        *) expect=pass ;;
    esac
    if [ -z "$errors" ]; then
        outcome="did not run"
        ok=no
    elif [ "$expect" = fail ]; then
        if [ "$errors" -gt 0 ]; then outcome="fails as it must: $what"; ok=yes
        else outcome="PASSES but is a mutant: the models no longer catch this bug"; ok=no; fi
    else
        if [ "$errors" -eq 0 ] && [ "$truncated" -eq 0 ]; then outcome="passes"; ok=yes
        elif [ "$errors" -eq 0 ]; then outcome="search incomplete (depth too small)"; ok=no
        else outcome="FAILS: $what"; ok=no; fi
    fi
    if [ "$ok" = yes ]; then
        printf 'ok    %-44s %4ss  %12s states  %s\n' "$name" "$secs" "${states:-?}" "$outcome"
        rm -rf "$work"
    else
        printf 'FAIL  %-44s %4ss  %12s states  %s\n' "$name" "$secs" "${states:-?}" "$outcome"
        echo "      log and trail kept in $work; replay: (cd $work && spin -t -p -g -l $name)"
        echo "      or readable: python3 $here/show_trail.py $work/$name"
        status=1
    fi
done
echo "run_spin.sh: $(( $(date +%s) - total_start ))s in all"
exit $status
