#!/bin/bash
# SPDX-License-Identifier: MIT
# A revoked key is never handed out again:
#  1. revoke, stop and restart orthod: the shards are still revoked, a
#     client runs Base-only, the same keys cannot be imported again, and the
#     keystore on disk no longer holds the key (a fresh KEK; the old one is
#     gone);
#  2. a revoke kept waiting by a SIGSTOPped holder, then orthod killed with
#     SIGKILL: while it waits nothing is granted, after the restart the
#     revocation is completed (state revoked, "revoke-recovered" in the
#     log), a client runs Base-only, and no key-out for those shards follows
#     the request in the audit log.
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
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-restart.XXXXXX")
dpid=
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null || true; done
	[ -n "$dpid" ] && kill -9 "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
sock=$work/sock
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }
ctl() { "$bin/orthoctl" --socket "$sock" "$@"; }

start_daemon() {	# state-dir
	"$bin/orthod" --state-dir "$1" --socket "$sock" --foreground \
		2>>"$work/orthod.log" &
	dpid=$!
	for _ in $(seq 200); do
		ctl status >/dev/null 2>&1 && return 0
		kill -0 "$dpid" 2>/dev/null || break
		sleep 0.05
	done
	echo "FAIL: orthod did not start"; cat "$work/orthod.log"; exit 1
}
stop_daemon() { kill "$dpid"; wait "$dpid" || bad "orthod exited with $?"; dpid=; }
states() {
	ctl status --json | python3 -c 'import json, sys
print(" ".join(sorted({s["state"] for s in json.load(sys.stdin)["shards"] if s["label"] == "private-a"})))'
}
run_once() {	# out-prefix: one perplexity with the authority
	"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" \
		--authority "unix:$sock" >"$1.out" 2>"$1.err" || true
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

echo "== 1. revoke, then restart"
s1=$work/state1
start_daemon "$s1"
ctl key import --keep "$work/keys" >/dev/null
ctl grant --label private-a --uid "$(id -u)" >/dev/null
run_once "$work/r0"
grep -q "^ppl $full " "$work/r0.out" && ok "granted: ppl $full with the shards" ||
	bad "granted client: $(cat "$work/r0.out" "$work/r0.err")"
kek_before=$(cd "$s1" && ls kek-*)
cp "$s1/keystore" "$work/keystore.before"
ctl revoke --label private-a >/dev/null || bad "revoke (no holders) exited $?"
kek_after=$(cd "$s1" && ls kek-*)
[ "$kek_before" != "$kek_after" ] && [ ! -e "$s1/$kek_before" ] &&
	ok "a fresh KEK ($kek_after); the old one is gone" || bad "the KEK was not replaced"
cmp -s "$work/keystore.before" "$s1/keystore" && bad "the keystore was not rewritten"
stop_daemon
start_daemon "$s1"
[ "$(states)" = revoked ] && ok "after a restart: revoked" || bad "after a restart: $(states)"
run_once "$work/r1"
grep -q "^ppl $base " "$work/r1.out" && grep -q revoked "$work/r1.err" &&
	ok "after a restart a client runs Base only (ppl $base) and is told: revoked" ||
	bad "after a restart: $(cat "$work/r1.out" "$work/r1.err")"
if ctl key import --keep "$work/keys" >"$work/imp.out" 2>&1; then
	bad "the revoked keys were imported again"
else
	ok "importing the revoked keys again is refused: $(head -n1 "$work/imp.out")"
fi
stop_daemon

echo "== 2. SIGKILL in the middle of a revoke"
s2=$work/state2
start_daemon "$s2"
ctl key import --keep "$work/keys" >/dev/null
ctl grant --label private-a --uid "$(id -u)" >/dev/null
"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" --authority "unix:$sock" \
	--repeat 1000 --interval-ms 200 >"$work/h.out" 2>"$work/h.err" &
hpid=$!
pids+=($hpid)
for _ in $(seq 400); do
	[ "$(grep -c '^ppl ' "$work/h.out" || true)" -ge 1 ] && break
	sleep 0.05
done
grep -q "^ppl $full .* shards 5" "$work/h.out" || bad "the holder did not start: $(cat "$work/h.err")"
kill -STOP "$hpid"
ctl revoke --label private-a --timeout-ms 60000 >"$work/rv.out" 2>&1 &
rpid=$!
for _ in $(seq 200); do [ "$(states)" = revoking ] && break; sleep 0.05; done
[ "$(states)" = revoking ] && ok "the revoke waits for the stopped holder (revoking)" ||
	bad "state while waiting: $(states)"
run_once "$work/r2"
grep -q "^ppl $base " "$work/r2.out" &&
	ok "while it waits, a new client gets no key: ppl $base" ||
	bad "while revoking: $(cat "$work/r2.out" "$work/r2.err")"
kill -9 "$dpid"
wait "$dpid" 2>/dev/null || true
dpid=
if wait "$rpid"; then bad "orthoctl revoke exited 0 after the daemon was killed"; else
	ok "orthoctl revoke reports the lost daemon: $(head -n1 "$work/rv.out")"
fi
start_daemon "$s2"
[ "$(states)" = revoked ] && ok "after SIGKILL and a restart: revoked" ||
	bad "after SIGKILL and a restart: $(states)"
run_once "$work/r3"
grep -q "^ppl $base " "$work/r3.out" && ok "after the restart a client runs Base only" ||
	bad "after the restart: $(cat "$work/r3.out" "$work/r3.err")"
ctl audit >"$work/audit.txt"
grep -q ' revoke-recovered ' "$work/audit.txt" && ok "the log records the recovery" ||
	bad "no revoke-recovered record"
ids=$(ctl status --json | python3 -c 'import json, sys
print(" ".join(s["id"] for s in json.load(sys.stdin)["shards"]))')
req=$(grep -n ' revoke-requested ' "$work/audit.txt" | head -n1 | cut -d: -f1)
leak=0
for id in $ids; do
	tail -n +"$req" "$work/audit.txt" | grep -q " key-out shard=$id" && leak=1
done
[ $leak -eq 0 ] && ok "no key-out of a revoked shard after the request" ||
	bad "a key was handed out after the revoke request"
ctl audit --verify >/dev/null && ok "the log verifies across the crash" ||
	bad "audit --verify failed after the crash"
# The stopped holder resumes: it had the notice before the crash and
# evicts. (Its very next round is checked strictly in authority_busy.sh;
# here the crash is the point: from the second round on, Base only.)
n0=$(grep -c '^ppl ' "$work/h.out" || true)
kill -CONT "$hpid"
for _ in $(seq 200); do
	[ "$(grep -c '^ppl ' "$work/h.out" || true)" -ge $((n0 + 3)) ] && break
	sleep 0.05
done
later=$(tail -n +$((n0 + 2)) "$work/h.out" | grep '^ppl ' || true)
if [ -n "$later" ] && ! echo "$later" | grep -qv "^ppl $base tokens [0-9]* shards 0\$"; then
	ok "the resumed holder runs Base only: $(echo "$later" | tail -n1)"
else
	bad "the resumed holder after the crash: $(tail -n +$((n0 + 1)) "$work/h.out" | head -n3 | tr '\n' '|')"
fi
kill "$hpid" 2>/dev/null || true
wait "$hpid" 2>/dev/null || true
pids=()
stop_daemon
[ "$fail" -eq 0 ] && echo "authority_restart: all passed"
exit "$fail"
