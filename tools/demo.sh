#!/bin/bash
# SPDX-License-Identifier: MIT
# The demo on the bundled model: pack the public stories260K with its private
# fine-tune, then measure perplexity on public (retain) and private (forget)
# text and the canary extraction, with the Ortho shards and without.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

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
