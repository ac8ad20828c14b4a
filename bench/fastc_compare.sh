#!/bin/bash
# Both `protolab inspect` paths on captures and option sets: stdout, stderr and exit code must be
# the same byte for byte (PROTOLAB_INSPECT=compiled makes a decline an error, so a capture the
# compiled path declines shows as DIFF with "needs the Python path" in its reason).
#   bench/fastc_compare.sh FILE...        (run from the worktree, after build_ext --inplace)
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-/work/main/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for f in "$@"; do
    for o in "" "--json" "--flows" "--flows --json" "--wide" "--width 70" "--width 200" \
             "--limit 5" "--dns-port 9999"; do
        # shellcheck disable=SC2086
        PROTOLAB_INSPECT=python PYTHONPATH=$PWD $py -m protolab inspect "$f" $o \
            >"$tmp/a" 2>"$tmp/ae"; ra=$?
        # shellcheck disable=SC2086
        PROTOLAB_INSPECT=compiled PYTHONPATH=$PWD $py -m protolab inspect "$f" $o \
            >"$tmp/b" 2>"$tmp/be"; rb=$?
        if cmp -s "$tmp/a" "$tmp/b" && cmp -s "$tmp/ae" "$tmp/be" && [ $ra = $rb ]; then
            echo "SAME  $f $o"
        else
            echo "DIFF  $f $o (exit $ra/$rb) $(head -c 160 "$tmp/be")"
            status=1
        fi
    done
done
exit $status
