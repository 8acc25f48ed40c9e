#!/bin/bash
# SPDX-License-Identifier: MIT
# A uid that is not granted is denied: the test creates a user, grants the
# label to root only, and runs ortho-run as that user against a real
# orthod. It must run Base only (the --no-ortho perplexity) with a clear
# "not granted" warning, the audit log must record the refusal, and the
# user may not grant itself the label (not an admin). A grant by uid then
# lets the same user have the shards; a deny by its gid overrides it.
# `orthoctl list` shows the shards and exactly those rules. Then orthod
# restarted with --admin-group: the user may grant as a member of that
# group (supplementary or primary), and not without it.
# Needs root (useradd, groupadd, setpriv).
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
for t in useradd userdel groupadd groupdel getent setpriv python3; do
	if ! command -v $t >/dev/null; then
		echo "SKIP: $t is not installed"
		exit 77
	fi
done
user=ortho-e2e-$$
group=ortho-e2e-adm-$$
work=$(mktemp -d /tmp/ortho-e2e-denied.XXXXXX)
dpid=
cleanup() {
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	userdel "$user" 2>/dev/null || true
	groupdel "$group" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
groupadd --system "$group"
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

echo "== orthoctl list"
nshards=$(ls "$work/pub/model/ortho" | wc -l)
ctl list >"$work/list.txt"
cat "$work/list.txt"
# Blanks squeezed: the text pads its columns.
list=$(awk '{$1 = $1; print}' "$work/list.txt")
echo "$list" | grep -qx "shards: $nshards" && ok "list: $nshards shards" ||
	bad "list: no 'shards: $nshards' line"
n=$(echo "$list" | grep -cE "^[0-9a-f]{32} active layer [0-9]+ holders [0-9]+ private-a\$" || true)
[ "$n" -eq "$nshards" ] && ok "list: each shard active, label private-a" ||
	bad "list: $n of $nshards shard lines"
want=$(printf 'rules: 3\nallow uid 0 label private-a\nallow uid %s label private-a\ndeny gid %s label private-a' \
	"$uid" "$gid")
got=$(echo "$list" | sed -n '/^rules:/,$p' | { read -r h; echo "$h"; sort; })
[ "$got" = "$(echo "$want" | { read -r h; echo "$h"; sort; })" ] &&
	ok "list: the three rules granted and denied" ||
	bad "list: rules are '$got', want '$want'"
ctl list --json >"$work/list.json"
python3 - "$work/list.json" "$nshards" "$uid" "$gid" <<'PY' && ok "list --json: the same" || fail=1
import json, sys
l = json.load(open(sys.argv[1]))
n, uid, gid = (int(x) for x in sys.argv[2:5])
rules = sorted((r.get("uid", r.get("gid")), "uid" in r, r["allow"], r["label"])
               for r in l["rules"])
want = sorted([(0, True, True, "private-a"), (uid, True, True, "private-a"),
               (gid, False, False, "private-a")])
ok = (l["schema"] == "ortho-list/1" and len(l["shards"]) == n and
      all(s["state"] == "active" and s["label"] == "private-a" for s in l["shards"])
      and rules == want)
if not ok:
    print("FAIL: list --json: %r" % l); sys.exit(1)
PY

echo "== --admin-group $group"
agid=$(getent group "$group" | cut -d: -f3)
kill "$dpid"; wait "$dpid" || bad "orthod did not stop cleanly"; dpid=
"$bin/orthod" --state-dir "$work/state" --socket "$sock" --foreground \
	--admin-group "$group" 2>>"$work/orthod.log" &
dpid=$!
for _ in $(seq 200); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
as_user() {	# setpriv group options, then orthoctl arguments
	local groups=$1 regid=$2
	shift 2
	setpriv --reuid="$uid" --regid="$regid" $groups \
		"$bin/orthoctl" --socket "$sock" "$@"
}
if as_user "--groups=$agid" "$gid" grant --label private-a --uid 4001 \
	>"$work/a1.out" 2>&1; then
	ok "uid $uid, $group a supplementary group, may grant"
else
	bad "uid $uid with supplementary group $group may not grant: $(cat "$work/a1.out")"
fi
if as_user --clear-groups "$agid" grant --label private-a --uid 4002 \
	>"$work/a2.out" 2>&1; then
	ok "uid $uid, $group its primary group, may grant"
else
	bad "uid $uid with primary group $group may not grant: $(cat "$work/a2.out")"
fi
if as_user --init-groups "$gid" grant --label private-a --uid 4003 \
	>"$work/a3.out" 2>&1; then
	bad "uid $uid, not in $group, granted"
else
	ok "uid $uid, not in $group, may not grant: $(head -n1 "$work/a3.out")"
fi
rules=$(ctl list | awk '$1 == "allow" || $1 == "deny" {print $1, $2, $3}')
echo "$rules" | grep -qx "allow uid 4001" && echo "$rules" | grep -qx "allow uid 4002" &&
	ok "the members' grants are in the policy" || bad "members' grants missing: $rules"
echo "$rules" | grep -qx "allow uid 4003" && bad "the non-member's grant is in the policy"
grep -q " grant uid=4001 .* by_uid=$uid " <(ctl audit) &&
	ok "the log names uid $uid as the granting admin" ||
	bad "no grant record by uid $uid"
[ "$fail" -eq 0 ] && echo "authority_denied: all passed"
exit "$fail"
