#!/bin/bash
# SPDX-License-Identifier: MIT
# Streaming under an Ortho budget, end to end on the bundled model pair:
# perplexity and canaries are the same with all shards resident and with a
# budget smaller than one layer's shard (paged in a tensor at a time, the
# next layers prefetched), on the io_uring path and on the pread path.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
tok=$data/stories260K/tok512.bin
retain=$data/retain.txt
forget=$data/private-a/forget.txt

for t in ortho-pack ortho-run; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-streaming.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0

"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label private-a --key-file "$work/keys" -o "$work/model" \
	>"$work/pack.log"
m=$work/model
k=$work/keys

ppl() {		# text [ortho-run options]
	local text=$1
	shift
	"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" \
		--key-file "$k" "$@" 2>>"$work/run.log" |
		awk '/^ppl /{v = $2} END {print v}'
}

canaries() {	# [ortho-run options]
	"$bin/ortho-run" canaries "$m" --tokenizer $tok --key-file "$k" \
		--canaries $data/private-a/canaries.tsv "$@" \
		2>>"$work/run.log" | awk '/^canaries /{v = $2} END {print v}'
}

same() {	# what value want
	if [ -n "$2" ] && [ "$2" = "$3" ]; then
		echo "ok:   $1 = $2"
	else
		echo "FAIL: $1 = '$2', want '$3'"
		fail=1
	fi
}

# Half the smallest shard file: less than any one layer's shard.
smallest=$(stat -c %s "$m"/ortho/*.osh | sort -n | head -n 1)
budget=$((smallest / 2))
echo "shards: $(ls "$m"/ortho | wc -l), smallest $smallest bytes; budget $budget"

for text in $retain $forget; do
	name=$(basename "$text")
	all=$(ppl "$text")
	same "$name ppl, budget $budget" "$(ppl "$text" --budget $budget)" "$all"
	same "$name ppl, budget $budget, pread" \
		"$(ORTHO_STREAM=pread ppl "$text" --budget $budget)" "$all"
	same "$name ppl, no budget, pread" "$(ORTHO_STREAM=pread ppl "$text")" \
		"$all"
done
same "canaries, budget $budget" "$(canaries --budget $budget)" \
	"$(canaries)"

# The budget held: no shard was refused for size, none failed.
if grep -E "more than the Ortho budget|does not fit|not used" \
	"$work/run.log"; then
	echo "FAIL: a shard was left out under the budget"
	fail=1
fi
# And it paged: every shard is in use, most of them paged out.
"$bin/ortho-run" ppl "$m" --tokenizer $tok --text $forget --key-file "$k" \
	--budget $budget --verbose 2>"$work/verbose.log" >/dev/null
same "shards in use under the budget" \
	"$(grep -c 'in use' "$work/verbose.log" || true)" \
	"$(( $(ls "$m"/ortho | wc -l) + 1 ))"
exit $fail
