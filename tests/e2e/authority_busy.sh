#!/bin/bash
# SPDX-License-Identifier: MIT
# A stopped holder does not block the others: three ortho-run clients hold
# the "private-a" shards, one is stopped (SIGSTOP) between two rounds; the
# revoke completes for the other two within its deadline, reports the
# stopped one busy by pid, uid and command, and exits non-zero. Resumed
# (SIGCONT), the stopped client evicts before its next round, which is
# Base-only; status then shows nothing of the label resident.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
tok=$data/stories260K/tok512.bin
text=$data/private-a/forget.txt

for t in ortho-pack ortho-run orthod orthoctl; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
if ! "$bin/ortho-run" --help 2>&1 | grep -q -- --repeat; then
	echo "SKIP: ortho-run has no --repeat"
	exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-busy.XXXXXX")
dpid=
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null || true; done
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
sock=$work/sock
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }
ctl() { "$bin/orthoctl" --socket "$sock" "$@"; }
rounds() { grep -c '^ppl ' "$1" 2>/dev/null || true; }

"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label private-a --key-file "$work/keys" -o "$work/model" >"$work/pack.log"
m=$work/model
base=$("$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" --no-ortho 2>/dev/null |
	awk '/^ppl /{print $2}')

"$bin/orthod" --state-dir "$work/state" --socket "$sock" --foreground \
	2>"$work/orthod.log" &
dpid=$!
for _ in $(seq 200); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
ctl key import "$work/keys" >/dev/null
ctl grant --label private-a --uid "$(id -u)" >/dev/null

# Clients 1 and 2 run back to back; client 3 pauses a second between
# rounds, so that it can be stopped between two rounds.
for i in 1 2 3; do
	iv=50
	[ $i -eq 3 ] && iv=1000
	"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" \
		--authority "unix:$sock" --repeat 1000 --interval-ms $iv \
		>"$work/c$i.out" 2>"$work/c$i.err" &
	pids+=($!)
done
stopped=${pids[2]}
for _ in $(seq 600); do
	[ "$(rounds "$work/c1.out")" -ge 1 ] && [ "$(rounds "$work/c2.out")" -ge 1 ] &&
		[ "$(rounds "$work/c3.out")" -ge 1 ] && break
	sleep 0.02
done
# Right after client 3 prints a round, it sleeps: stop it there.
n3=$(rounds "$work/c3.out")
for _ in $(seq 300); do
	[ "$(rounds "$work/c3.out")" -gt "$n3" ] && break
	sleep 0.01
done
kill -STOP "$stopped"
n3=$(rounds "$work/c3.out")
grep -q 'shards 5$' "$work/c3.out" || bad "client 3 never held the shards"

echo "== revoke with one holder stopped (deadline 3 s)"
t0=$(date +%s%N)
set +e
ctl revoke --label private-a --timeout-ms 3000 >"$work/revoke.out" 2>"$work/revoke.err"
rc=$?
set -e
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
[ $rc -ne 0 ] && ok "orthoctl revoke exited $rc (not 0) after $ms ms" ||
	bad "orthoctl revoke exited 0 with a stopped holder"
[ $ms -lt 30000 ] || bad "the revoke took $ms ms with a 3000 ms deadline (it should end near the deadline)"
grep -E '^holders:' "$work/revoke.out"
cat "$work/revoke.err"
grep -q "^holders:	15 (complete 10, busy 5, gone 0)" "$work/revoke.out" &&
	ok "the two running clients acknowledged; the stopped one is busy" ||
	bad "unexpected outcome: $(grep '^holders' "$work/revoke.out")"
grep -q "busy: pid $stopped uid $(id -u) comm ortho-run shard" "$work/revoke.err" &&
	ok "the busy holder is named: pid $stopped, uid $(id -u), comm ortho-run" ||
	bad "the busy holder is not named on stderr"
for i in 1 2; do
	grep "^holder:.*pid ${pids[$((i - 1))]} " "$work/revoke.out" | grep -qv complete &&
		bad "client $i did not acknowledge every shard"
done
# The running clients went on without waiting for the stopped one.
a1=$(rounds "$work/c1.out")
for _ in $(seq 300); do [ "$(rounds "$work/c1.out")" -ge $((a1 + 2)) ] && break; sleep 0.02; done
tail -n1 "$work/c1.out" | grep -q "^ppl $base .*shards 0$" &&
	ok "client 1 runs on, Base only: $(tail -n1 "$work/c1.out")" ||
	bad "client 1 after the revoke: $(tail -n1 "$work/c1.out")"
ctl status --json >"$work/mid.json"
python3 - "$work/mid.json" "$stopped" <<'EOF' && ok "status: only the stopped client still holds private-a" || fail=1
import json, sys
st = json.load(open(sys.argv[1])); pid = int(sys.argv[2])
who = {c["pid"] for c in st["clients"] for r in c["resident"] if r["label"] == "private-a"}
if who != {pid}:
    print("FAIL: holders of private-a in status: %r (expected only %d)" % (who, pid)); sys.exit(1)
EOF

echo "== resume the stopped client"
kill -CONT "$stopped"
for _ in $(seq 300); do [ "$(rounds "$work/c3.out")" -ge $((n3 + 2)) ] && break; sleep 0.02; done
next=$(tail -n +$((n3 + 1)) "$work/c3.out" | grep -m1 '^ppl ' || true)
case "$next" in
"ppl $base "*" shards 0") ok "its next round is Base only: $next" ;;
*) bad "its next round after SIGCONT: '$next' (expected ppl $base ... shards 0)" ;;
esac
for _ in $(seq 100); do
	ctl status --json >"$work/end.json"
	python3 -c 'import json, sys
st = json.load(open(sys.argv[1]))
sys.exit(any(r["label"] == "private-a" for c in st["clients"] for r in c["resident"]))' \
		"$work/end.json" && break
	sleep 0.05
done
python3 -c 'import json, sys
st = json.load(open(sys.argv[1]))
sys.exit(any(r["label"] == "private-a" for c in st["clients"] for r in c["resident"]))' \
	"$work/end.json" && ok "status: nothing of private-a resident any more" ||
	bad "status still shows private-a resident"
ctl audit >"$work/audit.txt"
grep -q " revoke-busy .*busy=$stopped/" "$work/audit.txt" &&
	ok "the log names the busy holder: $(grep -o 'revoke-busy.*' "$work/audit.txt" | cut -c1-100)" ||
	bad "no revoke-busy record naming pid $stopped"
grep -q " revoke-late-complete " "$work/audit.txt" &&
	ok "the log records its late acknowledgement" ||
	bad "no revoke-late-complete record"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=()
[ "$fail" -eq 0 ] && echo "authority_busy: all passed"
exit "$fail"
