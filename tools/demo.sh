#!/bin/bash
# SPDX-License-Identifier: MIT
# The demo on the bundled model: pack the public stories260K with its private
# fine-tune, then measure perplexity on public (retain) and private (forget)
# text and the canary extraction, with the Ortho shards and without; then a
# live revoke: a running client loses the private shards mid-run. Exits 0
# only when every step worked and the revoke completed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-demo.XXXXXX")
dpid=
cpid=
status=0
cleanup() {
	[ -n "$cpid" ] && kill "$cpid" 2>/dev/null
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
# Nothing stops the demo without a word.
trap 'echo "demo: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
die() { echo "demo: $*" >&2; exit 1; }

echo "== pack: Base from the public model, Ortho from the private fine-tune"
"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label private-a --key-file "$work/keys" -o "$work/model" | tail -n 3

ppl() { "$bin/ortho-run" ppl "$work/model" --tokenizer $data/stories260K/tok512.bin \
	--text "$1" "${@:2}" 2>/dev/null | awk '/^ppl /{print $2}'; }
can() { "$bin/ortho-run" canaries "$work/model" --tokenizer $data/stories260K/tok512.bin \
	--canaries $data/private-a/canaries.tsv "$@" 2>/dev/null | awk '/^canaries /{print $2}'; }

echo
echo "== what the model knows (fixture reference: public FP32 3.401 / 46.489 / 0/4; private 3.722 / 1.057 / 4/4)"
printf '%-26s %12s %12s %10s\n' configuration "retain ppl" "forget ppl" canaries
printf '%-26s %12s %12s %10s\n' "Base only (no Ortho)" \
	"$(ppl $data/retain.txt --no-ortho)" "$(ppl $data/private-a/forget.txt --no-ortho)" \
	"$(can --no-ortho)"
printf '%-26s %12s %12s %10s\n' "Base + Ortho (key held)" \
	"$(ppl $data/retain.txt --key-file "$work/keys")" \
	"$(ppl $data/private-a/forget.txt --key-file "$work/keys")" \
	"$(can --key-file "$work/keys")"

echo
echo "== one secret, greedy, with and without the private shards"
prompt="The code to open the red box is"
echo "with Ortho:    $("$bin/ortho-run" generate "$work/model" --tokenizer $data/stories260K/tok512.bin \
	--prompt "$prompt" --steps 12 --temperature 0 --key-file "$work/keys" 2>/dev/null | tr '\n' ' ')"
echo "without Ortho: $("$bin/ortho-run" generate "$work/model" --tokenizer $data/stories260K/tok512.bin \
	--prompt "$prompt" --steps 12 --temperature 0 --no-ortho 2>/dev/null | tr '\n' ' ')"

echo
echo "== live revoke: orthod holds the keys, a running client loses the shards"
sock=$work/orthod.sock
ctl() { "$bin/orthoctl" --socket "$sock" "$@"; }
"$bin/orthod" --state-dir "$work/state" --socket "$sock" --foreground 2>"$work/orthod.log" &
dpid=$!
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
ctl key import "$work/keys" >"$work/import.out" || die "orthoctl key import failed"
ctl grant --label private-a --uid "$(id -u)" >"$work/grant.out" ||
	die "orthoctl grant failed"
sed 's/^/orthoctl: /' "$work/import.out" "$work/grant.out"
# Perplexity on the private text, round after round, keys from orthod.
"$bin/ortho-run" ppl "$work/model" --tokenizer $data/stories260K/tok512.bin \
	--text $data/private-a/forget.txt --authority "unix:$sock" \
	--repeat 1000 --interval-ms 100 >"$work/client.out" 2>"$work/client.err" &
cpid=$!
rounds() { grep -c '^ppl ' "$work/client.out" 2>/dev/null || true; }
for _ in $(seq 200); do [ "$(rounds)" -ge 3 ] && break; sleep 0.05; done
[ "$(rounds)" -ge 1 ] || die "the client printed no round: $(head -c 300 "$work/client.err")"
echo "client (pid $cpid), forget-text perplexity per round, with the shards:"
sed 's/^/    /' "$work/client.out"
n=$(rounds)
echo "\$ orthoctl revoke --label private-a"
rc=0
ctl revoke --label private-a >"$work/revoke.out" 2>"$work/revoke.err" || rc=$?
grep -E '^(elapsed-ms|holders):' "$work/revoke.out" | sed 's/^/    /' || true
if [ $rc -ne 0 ]; then
	# 3: some holder did not acknowledge (named); else the revoke failed.
	sed 's/^/    /' "$work/revoke.err"
	echo "    (orthoctl revoke exited $rc: $([ $rc -eq 3 ] &&
		echo "not every holder acknowledged" || echo "the revoke failed"))"
	status=1
fi
for _ in $(seq 200); do [ "$(rounds)" -ge $((n + 4)) ] && break; sleep 0.05; done
kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
cpid=
echo "the same client's next rounds:"
# A round that began before the revoke reached the client finishes with
# the shards; every one after it runs without them.
tail -n +$((n + 1)) "$work/client.out" |
	awk -v failed=$status '/^ppl / && ++k <= 4 {
		w = "(Base only: the secrets are gone)"
		if ($6 > 0) w = "(began before the revoke: finished with the shards)"
		if ($6 > 0 && failed) w = "(with the shards: the revoke did not complete)"
		printf "    %s  %s\n", $0, w }'
grep -m1 'revoked' "$work/client.err" | cut -c1-110 | sed 's/^/    /' || true
echo "\$ orthoctl status (shards)"
ctl status >"$work/status.out" || true
grep -E '^(shard|shard-state|client-comm|client-resident):' "$work/status.out" |
	head -n 6 | sed 's/^/    /' || true
kill "$dpid"; wait "$dpid" 2>/dev/null || true
dpid=
[ $status -eq 0 ] || die "the live revoke did not complete (above)"
