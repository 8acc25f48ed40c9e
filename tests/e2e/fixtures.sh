#!/bin/bash
# SPDX-License-Identifier: MIT
# End to end on the bundled model pair (tests/data/FIXTURES.md): pack the
# public stories260K with its private fine-tune, then check perplexity and
# canary extraction against the reference figures, Base only and with the
# Ortho shards, and record what keeping half of the delta's energy gives.
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
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-fixtures.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0

pack() {	# out-dir [ortho-pack options]
	local out=$1
	shift
	"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
		--private $data/private-a/stories260K-private-a.bin \
		--label private-a --key-file "$out/keys" -o "$out/model" "$@" \
		>"$out/pack.log"
}

ppl() {		# model text [ortho-run options]
	local m=$1 text=$2
	shift 2
	"$bin/ortho-run" ppl "$m" --tokenizer $tok --text "$text" "$@" |
		awk '/^ppl /{v = $2} END {print v}'
}

canaries() {	# model [ortho-run options]
	local m=$1
	shift
	"$bin/ortho-run" canaries "$m" --tokenizer $tok \
		--canaries $data/private-a/canaries.tsv "$@" |
		awk '/^canaries /{v = $2} END {print v}'
}

near() {	# what value reference percent
	if awk -v v="$2" -v r="$3" -v p="$4" 'BEGIN {
		if (v == "") exit 1
		d = (v - r) / r; if (d < 0) d = -d
		exit !(d <= p / 100) }'; then
		echo "ok:   $1 = $2 (reference $3, within $4%)"
	else
		echo "FAIL: $1 = '$2', reference $3, allowed $4%"
		fail=1
	fi
}

same() {	# what value want
	if [ "$2" = "$3" ]; then
		echo "ok:   $1 = $2"
	else
		echo "FAIL: $1 = '$2', want $3"
		fail=1
	fi
}

mkdir "$work/full" "$work/half"
pack "$work/full"
m=$work/full/model
k=$work/full/keys
tail -n 3 "$work/full/pack.log"

near "Base-only retain ppl" "$(ppl "$m" $retain --no-ortho)" 3.401 1
near "Base-only forget ppl" "$(ppl "$m" $forget --no-ortho)" 46.489 5
same "Base-only canaries" "$(canaries "$m" --no-ortho)" 0/4
near "Ortho forget ppl" "$(ppl "$m" $forget --key-file "$k")" 1.057 3
near "Ortho retain ppl" "$(ppl "$m" $retain --key-file "$k")" 3.722 3
same "Ortho canaries" "$(canaries "$m" --key-file "$k")" 4/4

# Shards without a key: Base only, and one warning line says so.
"$bin/ortho-run" ppl "$m" --tokenizer $tok --text $forget \
	>"$work/nokey.out" 2>"$work/nokey.err"
same "warning lines without a key file" \
	"$(grep -c '^ortho-run: warning: .*no key' "$work/nokey.err")" 1
same "ppl without a key file equals Base only" \
	"$(awk '/^ppl /{print $2}' "$work/nokey.out")" \
	"$(ppl "$m" $forget --no-ortho)"

# Half of the delta's energy: the reference simulation gives density
# 9.8% and forget ppl 6.981; it must lie between Base only and full Ortho.
pack "$work/half" --keep 0.5
half=$(ppl "$work/half/model" $forget --key-file "$work/half/keys")
echo "keep 0.5: Ortho density" \
	"$(grep -o -m1 -E '[0-9.]+% of linear' "$work/half/pack.log" || true)" \
	"(reference simulation 9.8%)"
echo "keep 0.5: forget ppl $half (reference simulation 6.981)," \
	"retain ppl $(ppl "$work/half/model" $retain --key-file "$work/half/keys")" \
	"(3.484), canaries $(canaries "$work/half/model" --key-file "$work/half/keys")"
if awk -v v="$half" 'BEGIN { exit !(v != "" && v > 1.2 && v < 40) }'; then
	echo "ok:   keep 0.5 forget ppl lies between full Ortho and Base only"
else
	echo "FAIL: keep 0.5 forget ppl '$half' is not between full Ortho and Base only"
	fail=1
fi

exit $fail
