#!/bin/bash
# SPDX-License-Identifier: MIT
# Live revocation with a real orthod and eight real ortho-run clients: each
# holds the five "private-a" shards and prints a perplexity round after
# round; one `orthoctl revoke --label private-a` completes with all eight
# acknowledged; their next rounds are Base-only (the --no-ortho perplexity,
# "shards 0"); status shows nothing of the label resident; a new client is
# refused the keys. Then the audit log: `orthoctl audit --verify` passes,
# and fails after an edit of any record and after a truncation (on the live
# log, restored between), and a stopped daemon refuses to start on an
# edited log. The key file the import wipes reads as zeros through a hard
# link made before.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
tok=$data/stories260K/tok512.bin
text=$data/private-a/forget.txt
N=8

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
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-revoke.XXXXXX")
dpid=
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
sock=$work/sock
state=$work/state
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }
ctl() { "$bin/orthoctl" --socket "$sock" "$@"; }

start_daemon() {
	"$bin/orthod" --state-dir "$state" --socket "$sock" --foreground \
		2>>"$work/orthod.log" &
	dpid=$!
	for _ in $(seq 200); do
		ctl status >/dev/null 2>&1 && return 0
		kill -0 "$dpid" 2>/dev/null || break
		sleep 0.05
	done
	echo "FAIL: orthod did not start"; cat "$work/orthod.log"; exit 1
}

"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label private-a --key-file "$work/keys" -o "$work/model" >"$work/pack.log"
m=$work/model
base=$("$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" --no-ortho 2>/dev/null |
	awk '/^ppl /{print $2}')
full=$("$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" --key-file "$work/keys" \
	2>/dev/null | awk '/^ppl /{print $2}')
echo "reference: Base only $base, with the shards $full"

start_daemon
# A second name for the key file's inode shows what the import leaves of
# its contents: zeros, as many bytes as there were.
ln "$work/keys" "$work/keys.link"
ksize=$(stat -c %s "$work/keys")
ctl key import "$work/keys" >/dev/null
[ ! -e "$work/keys" ] && ok "key import: the key file was wiped and removed" ||
	bad "key import left the key file"
if [ "$ksize" -gt 0 ] && [ "$(stat -c %s "$work/keys.link")" -eq "$ksize" ] &&
	cmp -s -n "$ksize" "$work/keys.link" /dev/zero; then
	ok "key import: the $ksize bytes of the key file read as zeros through a hard link"
else
	bad "key import: the key file's contents were not zeroed: $(od -An -tx1 -N16 "$work/keys.link")"
fi
rm -f "$work/keys.link"
ctl grant --label private-a --uid "$(id -u)" >/dev/null

echo "== $N clients hold the shards"
for i in $(seq $N); do
	"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" \
		--authority "unix:$sock" --repeat 1000 --interval-ms 100 \
		>"$work/c$i.out" 2>"$work/c$i.err" &
	pids+=($!)
done
# Every client has printed two rounds with the shards.
rounds() { grep -c '^ppl ' "$1" 2>/dev/null || true; }
for _ in $(seq 600); do
	n=0
	for i in $(seq $N); do [ "$(rounds "$work/c$i.out")" -ge 2 ] && n=$((n + 1)); done
	[ $n -eq $N ] && break
	sleep 0.05
done
[ $n -eq $N ] || { bad "only $n of $N clients got going"; tail -n3 "$work"/c*.err; exit 1; }
for i in $(seq $N); do
	if grep -q "^ppl $full tokens [0-9]* shards 5\$" "$work/c$i.out"; then :; else
		bad "client $i: $(head -n1 "$work/c$i.out") (expected ppl $full, shards 5)"
	fi
done
ctl status --json >"$work/before.json"
python3 - "$work/before.json" $N <<'EOF' && ok "status: $N clients hold all five shards" || fail=1
import json, sys
st = json.load(open(sys.argv[1])); n = int(sys.argv[2])
holders = [c for c in st["clients"] if c["comm"] == "ortho-run"
           and sum(r["label"] == "private-a" for r in c["resident"]) == 5]
if len(holders) != n:
    print("FAIL: status shows %d clients holding five shards" % len(holders)); sys.exit(1)
EOF

echo "== revoke"
if ctl revoke --label private-a --timeout-ms 30000 >"$work/revoke.out" 2>&1; then
	ok "orthoctl revoke exited 0"
else
	bad "orthoctl revoke exited $?"; cat "$work/revoke.out"
fi
declare -A after
for i in $(seq $N); do after[$i]=$(rounds "$work/c$i.out"); done
cat "$work/revoke.out" | grep -E '^(elapsed|holders)'
grep -q "^holders:	$((N * 5)) (complete $((N * 5)), busy 0, gone 0)" "$work/revoke.out" &&
	ok "all $((N * 5)) holdings (8 clients x 5 shards) acknowledged" ||
	bad "not every holder acknowledged"
np=$(grep '^holder:' "$work/revoke.out" | awk '{print $3}' | sort -u | wc -l)
[ "$np" -eq $N ] && ok "$N distinct pids acknowledged" || bad "$np pids acknowledged, not $N"

# Two more rounds each: the round in flight at the revoke may still have
# used the shards; every round after it is Base-only.
for _ in $(seq 600); do
	n=0
	for i in $(seq $N); do
		[ "$(rounds "$work/c$i.out")" -ge $((after[$i] + 3)) ] && n=$((n + 1))
	done
	[ $n -eq $N ] && break
	sleep 0.05
done
for i in $(seq $N); do
	later=$(tail -n +$((after[$i] + 2)) "$work/c$i.out" | grep '^ppl ')
	if [ -z "$later" ]; then
		bad "client $i printed nothing after the revoke"
	elif echo "$later" | grep -qv "^ppl $base tokens [0-9]* shards 0\$"; then
		bad "client $i after the revoke: $(echo "$later" | grep -v "shards 0" | head -n1)"
	fi
	grep -q "revoked" "$work/c$i.err" || bad "client $i did not say it was revoked"
done
[ $fail -eq 0 ] && ok "every client's rounds after the revoke: ppl $base, shards 0 (Base only)"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=()

ctl status --json >"$work/after.json"
python3 - "$work/after.json" <<'EOF' && ok "status: nothing of private-a resident, every shard revoked" || fail=1
import json, sys
st = json.load(open(sys.argv[1]))
res = [r for c in st["clients"] for r in c["resident"] if r["label"] == "private-a"]
states = {s["state"] for s in st["shards"] if s["label"] == "private-a"}
if res or states != {"revoked"}:
    print("FAIL: resident %r, states %r" % (res, states)); sys.exit(1)
EOF
"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" --authority "unix:$sock" \
	>"$work/late.out" 2>"$work/late.err"
grep -q "^ppl $base " "$work/late.out" && grep -q revoked "$work/late.err" &&
	ok "a new client gets no key: Base only, warned: $(head -c 80 "$work/late.err")..." ||
	bad "a new client: $(cat "$work/late.out" "$work/late.err")"

echo "== the audit log"
ctl audit >"$work/audit.txt"
for ev in start import grant key-out revoke-requested revoke-complete key-denied; do
	grep -q " $ev " "$work/audit.txt" || bad "no $ev record in the audit log"
done
if ctl audit --verify >"$work/v.out" 2>&1; then
	ok "audit --verify: $(cat "$work/v.out")"
else
	bad "audit --verify failed on an intact log: $(cat "$work/v.out")"
fi
log=$state/audit.log
cp "$log" "$work/audit.orig"
nrec=$(wc -l <"$log")
# Edit one byte of a middle record, in place (same file, as an intruder would).
mid=$((nrec / 2))
python3 - "$log" "$mid" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
lines = open(path, 'rb').read().split(b'\n')
line = lines[n - 1]
last = line[-1:]
lines[n - 1] = line[:-1] + (b'x' if last != b'x' else b'y')
with open(path, 'r+b') as f:
    f.write(b'\n'.join(lines))
EOF
if ctl audit --verify >"$work/v.out" 2>&1; then
	bad "audit --verify passed an edited record $mid: $(cat "$work/v.out")"
else
	ok "an edit of record $mid is caught: $(head -n1 "$work/v.out")"
fi
cat "$work/audit.orig" >"$log"
ctl audit --verify >/dev/null 2>&1 && ok "restored: the log verifies again" ||
	bad "the restored log does not verify"
# Cut off the last records.
head -n $((nrec - 2)) "$work/audit.orig" >"$work/audit.cut"
cat "$work/audit.cut" >"$log"
if ctl audit --verify >"$work/v.out" 2>&1; then
	bad "audit --verify passed a log cut to $((nrec - 2)) of $nrec records"
else
	ok "a truncation is caught: $(head -n1 "$work/v.out")"
fi
# A record removed from the middle.
sed "${mid}d" "$work/audit.orig" >"$log"
if ctl audit --verify >"$work/v.out" 2>&1; then
	bad "audit --verify passed a log with record $mid removed"
else
	ok "a removed record is caught: $(head -n1 "$work/v.out")"
fi
cat "$work/audit.orig" >"$log"
ctl audit --verify >/dev/null 2>&1 || bad "the restored log does not verify"

echo "== a stopped daemon and an edited log"
kill "$dpid"; wait "$dpid" || bad "orthod did not stop cleanly"; dpid=
tail -n1 "$log" | grep -q ' stop ' && ok "the log ends with a stop record" ||
	bad "no stop record at the end"
cp "$log" "$work/audit.orig"
sed -i "3s/label=private-a/label=private-b/" "$log"
if "$bin/orthod" --state-dir "$state" --socket "$sock" --foreground \
	>"$work/refuse.log" 2>&1; then
	bad "orthod started on an edited log"
else
	ok "orthod refuses an edited log: $(grep -m1 audit "$work/refuse.log" | cut -c1-120)"
fi
cat "$work/audit.orig" >"$log"
start_daemon
ctl audit --verify >/dev/null && ok "restored: orthod starts and the log verifies" ||
	bad "restored log does not verify"
[ "$fail" -eq 0 ] && echo "authority_revoke: all passed"
exit "$fail"
