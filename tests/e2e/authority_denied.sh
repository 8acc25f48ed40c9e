#!/bin/bash
# SPDX-License-Identifier: MIT
# A uid that is not granted is denied: the test creates a user, grants the
# label to root only, and runs ortho-run as that user against a real
# orthod. It must run Base only (the --no-ortho perplexity) with a clear
# "not granted" warning, the audit log must record the refusal, and the
# user may not grant itself the label (not an admin). A grant by uid then
# lets the same user have the shards; a deny by its gid overrides it.
# Needs root (useradd, setpriv).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data

for t in ortho-pack ortho-run orthod orthoctl; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: needs root to create a user (useradd) and run as it"
	exit 77
fi
for t in useradd userdel setpriv; do
	if ! command -v $t >/dev/null; then
		echo "SKIP: $t is not installed"
		exit 77
	fi
done
user=ortho-e2e-$$
work=$(mktemp -d /tmp/ortho-e2e-denied.XXXXXX)
dpid=
cleanup() {
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	userdel "$user" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
uid=$(id -u "$user")
gid=$(id -g "$user")
sock=$work/sock
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }
ctl() { "$bin/orthoctl" --socket "$sock" "$@"; }

# The user needs to read the model, the tokenizer, the text and the tools:
# copy what it reads into a world-readable directory.
chmod 755 "$work"
mkdir "$work/pub"
cp $data/stories260K/tok512.bin $data/private-a/forget.txt "$work/pub/"
"$bin/ortho-pack" --public $data/stories260K/stories260K.bin \
	--private $data/private-a/stories260K-private-a.bin \
	--label private-a --key-file "$work/keys" -o "$work/pub/model" >"$work/pack.log"
chmod -R a+rX "$work/pub"
run_as() {	# out-prefix
	setpriv --reuid="$uid" --regid="$gid" --init-groups \
		"$bin/ortho-run" ppl "$work/pub/model" --tokenizer "$work/pub/tok512.bin" \
		--text "$work/pub/forget.txt" --authority "unix:$sock" \
		>"$1.out" 2>"$1.err" || echo "exit $?" >>"$1.err"
}
if ! setpriv --reuid="$uid" --regid="$gid" --init-groups "$bin/ortho-run" --help \
	>/dev/null 2>&1; then
	echo "SKIP: $user cannot run $bin/ortho-run (the build tree is not readable to others)"
	exit 77
fi
base=$("$bin/ortho-run" ppl "$work/pub/model" --tokenizer "$work/pub/tok512.bin" \
	--text "$work/pub/forget.txt" --no-ortho 2>/dev/null | awk '/^ppl /{print $2}')
full=$("$bin/ortho-run" ppl "$work/pub/model" --tokenizer "$work/pub/tok512.bin" \
	--text "$work/pub/forget.txt" --key-file "$work/keys" 2>/dev/null |
	awk '/^ppl /{print $2}')

"$bin/orthod" --state-dir "$work/state" --socket "$sock" --foreground \
	2>"$work/orthod.log" &
dpid=$!
for _ in $(seq 200); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
ctl key import "$work/keys" >/dev/null
ctl grant --label private-a --uid 0 >/dev/null

echo "== uid $uid ($user), not granted"
run_as "$work/d1"
cat "$work/d1.out"
head -n2 "$work/d1.err"
grep -q "^ppl $base " "$work/d1.out" && ok "it runs Base only (ppl $base)" ||
	bad "not Base only: $(cat "$work/d1.out")"
grep -qi "not granted" "$work/d1.err" && ok "with a 'not granted' warning" ||
	bad "no 'not granted' warning: $(cat "$work/d1.err")"
ctl audit >"$work/audit.txt"
grep -q " key-denied .*uid=$uid .*reason=not_granted" "$work/audit.txt" &&
	ok "the log records the refusal for uid $uid" ||
	bad "no key-denied record for uid $uid: $(grep key-denied "$work/audit.txt" | head -n1)"
grep -q " key-out .*uid=$uid " "$work/audit.txt" && bad "a key was handed to uid $uid"
if setpriv --reuid="$uid" --regid="$gid" --init-groups "$bin/orthoctl" --socket "$sock" \
	grant --label private-a --uid "$uid" >"$work/g.out" 2>&1; then
	bad "uid $uid granted itself the label"
else
	ok "uid $uid may not grant itself: $(head -n1 "$work/g.out")"
fi

echo "== granted by uid, then denied by gid"
ctl grant --label private-a --uid "$uid" >/dev/null
run_as "$work/d2"
grep -q "^ppl $full " "$work/d2.out" && ok "granted: uid $uid has the shards (ppl $full)" ||
	bad "granted, yet: $(cat "$work/d2.out" "$work/d2.err")"
ctl deny --label private-a --gid "$gid" >/dev/null
run_as "$work/d3"
grep -q "^ppl $base " "$work/d3.out" && grep -qi "not granted" "$work/d3.err" &&
	ok "a deny of gid $gid overrides the grant: Base only, not granted" ||
	bad "denied by gid, yet: $(cat "$work/d3.out" "$work/d3.err")"
grep -q " deny gid=$gid " <(ctl audit) && ok "the policy changes are in the log" ||
	bad "no deny record in the log"
[ "$fail" -eq 0 ] && echo "authority_denied: all passed"
exit "$fail"
