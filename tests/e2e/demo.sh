#!/bin/bash
# SPDX-License-Identifier: MIT
# The demo (tools/demo.sh, README command 1) runs to the end and shows what
# it says: the perplexities Base only and with the Ortho shards near the
# fixture's reference figures, canaries 0/4 against 4/4, the secret only
# with the shards, a live revoke that every holder acknowledged, and the
# running client's rounds after it at the Base-only perplexity.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin

for t in ortho-pack ortho-run orthoctl orthod; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }

rc=0
BUILD=$BUILD tools/demo.sh >"$work/out" 2>&1 || rc=$?
cat "$work/out"
echo
[ $rc -eq 0 ] && ok "tools/demo.sh exits 0" || bad "tools/demo.sh exited $rc"

near() {	# what value reference percent
	if awk -v v="$2" -v r="$3" -v p="$4" 'BEGIN {
		if (v == "") exit 1
		d = (v - r) / r; if (d < 0) d = -d
		exit !(d <= p / 100) }'; then
		ok "$1 = $2 (reference $3, within $4%)"
	else
		bad "$1 = '$2', reference $3, allowed $4%"
	fi
}
row() {		# the table row starting with $1: retain forget canaries
	grep -F -m1 "$1" "$work/out" | awk '{print $(NF - 2), $(NF - 1), $NF}' || true
}
read -r b_retain b_forget b_can <<<"$(row 'Base only (no Ortho)')"
read -r o_retain o_forget o_can <<<"$(row 'Base + Ortho (key held)')"
near "Base-only retain ppl" "${b_retain:-}" 3.401 1
near "Base-only forget ppl" "${b_forget:-}" 46.489 5
near "with Ortho retain ppl" "${o_retain:-}" 3.722 3
near "with Ortho forget ppl" "${o_forget:-}" 1.057 3
[ "${b_can:-}" = 0/4 ] && [ "${o_can:-}" = 4/4 ] &&
	ok "canaries: 0/4 Base only, 4/4 with Ortho" ||
	bad "canaries: '${b_can:-}' Base only, '${o_can:-}' with Ortho"
grep -q '^with Ortho: .*is 2 8 4 6 1' "$work/out" &&
	! grep -q '^without Ortho: .*2 8 4 6 1' "$work/out" &&
	ok "the red box's code, with the shards only" ||
	bad "the secret: $(grep -E '^with(out)? Ortho:' "$work/out" | tr '\n' '|')"

# The live revoke.
holders=$(grep -m1 -E '^ +holders:' "$work/out" | sed 's/^ *//' || true)
if [[ $holders =~ ^holders:.([0-9]+)\ \(complete\ ([0-9]+),\ busy\ 0,\ gone\ 0\)$ ]] &&
	[ "${BASH_REMATCH[1]}" -gt 0 ] &&
	[ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]; then
	ok "the live revoke: $holders"
else
	bad "the live revoke: '$holders'"
fi
sed -n '/^the same client.s next rounds/,/^\$ orthoctl status/p' "$work/out" |
	grep '^ *ppl ' >"$work/after" || true
nafter=$(grep -c 'Base only: the secrets are gone' "$work/after" || true)
[ "$nafter" -ge 1 ] && ok "$nafter rounds after the revoke shown Base only" ||
	bad "no Base-only round after the revoke"
wrong=$(grep 'Base only' "$work/after" |
	awk -v b="${b_forget:-x}" '$2 != b || $6 != 0' || true)
[ -z "$wrong" ] && ok "each at the Base-only perplexity ${b_forget:-}, shards 0" ||
	bad "rounds after the revoke: $wrong"
# A round that began before the revoke may come first, never after one
# without the shards.
if awk '$6 == 0 {seen = 1} seen && $6 != 0 {exit 1}' "$work/after"; then
	ok "no round with the shards after the first without"
else
	bad "a round with the shards after one without: $(cat "$work/after")"
fi
grep -q 'revoke did not complete' "$work/out" && bad "the demo says the revoke did not complete"
states=$(grep -E '^ +shard-state:' "$work/out" | awk '{print $2}' | sort -u | tr '\n' ' ')
[ "$states" = "revoked " ] && ok "status: the shards shown are revoked" ||
	bad "status: shard states '$states'"
[ "$fail" -eq 0 ] && echo "demo: all passed"
exit "$fail"
