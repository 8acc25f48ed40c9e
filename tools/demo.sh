#!/bin/bash
# SPDX-License-Identifier: MIT
# The demo on the bundled model: pack the public stories260K with its private
# fine-tune, then measure perplexity on public (retain) and private (forget)
# text and the canary extraction, with the Ortho shards and without; then a
# live revoke: a running client loses the private shards mid-run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-demo.XXXXXX")
dpid=
cpid=
cleanup() {
	[ -n "$cpid" ] && kill "$cpid" 2>/dev/null
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

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
ctl key import "$work/keys" | sed 's/^/orthoctl: /'
ctl grant --label private-a --uid "$(id -u)" | sed 's/^/orthoctl: /'
# Perplexity on the private text, round after round, keys from orthod.
"$bin/ortho-run" ppl "$work/model" --tokenizer $data/stories260K/tok512.bin \
	--text $data/private-a/forget.txt --authority "unix:$sock" \
	--repeat 1000 --interval-ms 100 >"$work/client.out" 2>"$work/client.err" &
cpid=$!
rounds() { grep -c '^ppl ' "$work/client.out" 2>/dev/null || true; }
for _ in $(seq 200); do [ "$(rounds)" -ge 3 ] && break; sleep 0.05; done
echo "client (pid $cpid), forget-text perplexity per round, with the shards:"
sed 's/^/    /' "$work/client.out"
n=$(rounds)
echo "\$ orthoctl revoke --label private-a"
ctl revoke --label private-a | grep -E '^(elapsed-ms|holders):' | sed 's/^/    /'
for _ in $(seq 200); do [ "$(rounds)" -ge $((n + 4)) ] && break; sleep 0.05; done
kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
cpid=
echo "the same client's next rounds (Base only: the secrets are gone):"
tail -n +$((n + 1)) "$work/client.out" | head -n 4 | sed 's/^/    /'
grep -m1 'revoked' "$work/client.err" | cut -c1-110 | sed 's/^/    /'
echo "\$ orthoctl status (shards)"
ctl status | grep -E '^(shard|shard-state|client-comm|client-resident):' | head -n 6 | sed 's/^/    /'
kill "$dpid"; wait "$dpid" 2>/dev/null || true
dpid=
