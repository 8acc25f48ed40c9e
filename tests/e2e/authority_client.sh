#!/bin/bash
# SPDX-License-Identifier: MIT
# The library as a client of the key authority, end to end: a real orthod,
# ortho-pack handing the shard keys straight to it (no key file), a grant,
# then ortho-run computing perplexity in rounds with keys from the daemon
# while the label is revoked. The revoke must complete with ortho-run
# acknowledged; the rounds after it must use no shard and give the
# Base-only perplexity (as ortho-run --no-ortho computes it); the daemon
# must show nothing of the label resident. Before that, the authority given
# by ORTHO_AUTHORITY=unix:PATH alone (no --authority) must serve the keys.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
tok=$data/stories260K/tok512.bin
text=$data/private-a/forget.txt
label=tenant-e2e
rounds=30

for t in orthod ortho-pack ortho-run orthoctl; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: importing keys into orthod needs root (its admin)"
	exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-authority-client.XXXXXX")
sock=$work/sock
dpid=
rpid=
cleanup() {
	[ -n "$rpid" ] && kill "$rpid" 2>/dev/null
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
fail=0
check() {	# what condition...
	local what=$1
	shift
	if "$@"; then
		echo "ok:   $what"
	else
		echo "FAIL: $what"
		fail=1
	fi
}
export ORTHO_SOCKET=$sock

"$bin/orthod" --state-dir "$work/state" --socket "$sock" --foreground \
	2>"$work/orthod.log" &
dpid=$!
for _ in $(seq 100); do
	[ -S "$sock" ] && break
	sleep 0.05
done
[ -S "$sock" ] || { echo "FAIL: orthod did not come up"; exit 1; }

"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label $label --authority "unix:$sock" -o "$work/model" -q \
	>"$work/pack.log"
check "ortho-pack --authority wrote no key file" \
	test -z "$(find "$work" -maxdepth 1 -type f -name '*key*')"
nshards=$(ls "$work/model/ortho" | wc -l)
check "the daemon holds the $nshards keys" \
	test "$("$bin/orthoctl" status | grep -c "^shard-label:.*$label")" \
	-eq "$nshards"
"$bin/orthoctl" grant --label $label --uid "$(id -u)" >/dev/null

run() {		# [ortho-run options]
	"$bin/ortho-run" ppl "$work/model" --tokenizer $tok --text $text "$@"
}
base=$(run --no-ortho 2>/dev/null | awk '/^ppl /{print $2}')
private=$(run --authority "unix:$sock" 2>/dev/null | awk '/^ppl /{print $2}')
echo "Base-only ppl $base, with the shards $private"
check "the shards change the perplexity" test "$base" != "$private"
# The same through the environment only.
viaenv=$(ORTHO_AUTHORITY="unix:$sock" run 2>"$work/env.err" | awk '/^ppl /{print $2}')
check "ORTHO_AUTHORITY=unix:$sock alone, no --authority: ppl $viaenv, with the shards" \
	test "$viaenv" = "$private"
none=$(ORTHO_AUTHORITY=none run 2>/dev/null | awk '/^ppl /{print $2}')
check "ORTHO_AUTHORITY=none: ppl $none, Base only" test "$none" = "$base"

# Not through run(): $! must be ortho-run itself, the holder the daemon names.
"$bin/ortho-run" ppl "$work/model" --tokenizer $tok --text $text \
	--authority "unix:$sock" --repeat $rounds --interval-ms 100 \
	>"$work/rounds" 2>"$work/run.log" &
rpid=$!
for _ in $(seq 200); do
	[ "$(wc -l <"$work/rounds")" -ge 3 ] && break
	sleep 0.05
done
check "rounds with every shard before the revoke" \
	grep -qx "ppl $private tokens [0-9]* shards $nshards" "$work/rounds"

rc=0
"$bin/orthoctl" revoke --label $label --timeout-ms 30000 >"$work/revoke" ||
	rc=$?
cat "$work/revoke"
check "revoke exits 0" test $rc -eq 0
check "ortho-run acknowledged every shard" test \
	"$(grep -c "pid $rpid .*complete" "$work/revoke")" -eq "$nshards"
check "nothing of $label resident after the revoke" \
	test "$("$bin/orthoctl" status | grep -c "^client-resident:.* $label ")" \
	-eq 0

rc=0
wait "$rpid" || rc=$?
rpid=
check "ortho-run exits 0" test $rc -eq 0
cat "$work/rounds"
check "$rounds rounds" test "$(wc -l <"$work/rounds")" -eq $rounds
check "every line is 'ppl P tokens T shards K'" test \
	"$(grep -cE '^ppl [0-9.]+ tokens [0-9]+ shards [0-9]+$' "$work/rounds")" \
	-eq $rounds
# After the first Base-only round, every round is Base-only.
after=$(awk '$6 == 0 {seen = 1} seen' "$work/rounds")
check "later rounds use no shard" test -n "$after"
check "later rounds stay at shards 0" test \
	"$(echo "$after" | awk '$6 != 0' | wc -l)" -eq 0
check "later rounds give the Base-only perplexity $base" test \
	"$(echo "$after" | awk -v b="$base" '$2 != b' | wc -l)" -eq 0
check "ortho-run said the shards were revoked" \
	grep -q "revoked by unix:$sock" "$work/run.log"
exit $fail
