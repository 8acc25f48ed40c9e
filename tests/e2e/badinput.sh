#!/bin/bash
# SPDX-License-Identifier: MIT
# Bad input to the real tools: a truncated shard, a flipped byte in a chunk,
# a shard of another model, a wrong key, a key file others can read; for
# ortho-pack a corrupt checkpoint header, a public/private shape mismatch,
# a private model that differs outside the linear matrices, and a key file
# that exists. Each gets the right exit status, a clear message, and
# leaves no partial output; a shard that cannot be used is left out and the
# rest of the model runs as if it were not there.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin
data=tests/data
tok=$data/stories260K/tok512.bin
pub=$data/stories260K/stories260K.bin
priv=$data/private-a/stories260K-private-a.bin
forget=$data/private-a/forget.txt

for t in ortho-pack ortho-run; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
command -v python3 >/dev/null || { echo "SKIP: python3 is needed"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-badinput.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0
rc=0

ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }

run() {		# command...: sets rc, $work/out, $work/err
	"$@" >"$work/out" 2>"$work/err"
	rc=$?
}

expect() {	# what exit-status message-regex
	if [ "$rc" != "$2" ]; then
		bad "$1: exit $rc, want $2"
		sed 's/^/      /' "$work/err"
		return 1
	fi
	if ! grep -Eq -- "$3" "$work/err"; then
		bad "$1: no message matching '$3'"
		sed 's/^/      /' "$work/err"
		return 1
	fi
	ok "$1: exit $rc: $(grep -E -m1 -- "$3" "$work/err")"
}

same() {	# what got want
	if [ "$2" = "$3" ] && [ -n "$2" ]; then
		ok "$1: $2"
	else
		bad "$1: '$2', want '$3'"
	fi
}

ppl() {		# model [ortho-run options]: the ppl figure, or nothing
	local m=$1
	shift
	"$bin/ortho-run" ppl "$m" --tokenizer $tok --text $forget "$@" \
		2>/dev/null | awk '/^ppl /{print $2}'
}

shard_id() { basename "$1" .osh; }

flip_chunk() {	# shard-file: one byte of chunk 0 changes
	python3 - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(160)			# osh_header.data_offset
    off = struct.unpack('<Q', f.read(8))[0] + 100
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0x20]))
EOF
}

# ---- a good model, and the figures to compare with ----
"$bin/ortho-pack" --public $pub --private $priv --label private-a \
	--key-file "$work/keys" -o "$work/good" -q >/dev/null || {
	echo "FAIL: packing the fixture"; exit 1; }
keys=$work/keys
full=$(ppl "$work/good" --key-file "$keys")
base=$(ppl "$work/good" --no-ortho)
first=$(ls "$work/good/ortho/"*.osh | head -n 1)
fid=$(shard_id "$first")
cp -r "$work/good" "$work/less"
rm "$work/less/ortho/$fid.osh"
less=$(ppl "$work/less" --key-file "$keys")
echo "full Ortho ppl $full, Base only $base, without shard $fid $less"
[ "$less" != "$full" ] || bad "dropping shard $fid does not change ppl"

# ---- ortho-run ----
cp -r "$work/good" "$work/trunc"
truncate -s 8192 "$work/trunc/ortho/$fid.osh"
run "$bin/ortho-run" ppl "$work/trunc" --tokenizer $tok --text $forget \
	--key-file "$keys"
expect "truncated shard" 0 "error: .*$fid"
same "truncated shard: ppl without it" "$(awk '/^ppl /{print $2}' "$work/out")" "$less"
run "$bin/ortho-run" ppl "$work/trunc" --tokenizer $tok --text $forget \
	--key-file "$keys" --strict
expect "truncated shard, --strict" 1 "$fid"
same "truncated shard, --strict: output lines" "$(wc -l <"$work/out")" 0

cp -r "$work/good" "$work/flip"
flip_chunk "$work/flip/ortho/$fid.osh"
run "$bin/ortho-run" ppl "$work/flip" --tokenizer $tok --text $forget \
	--key-file "$keys"
expect "flipped byte in a chunk" 0 "shard $fid.*chunk 0"
same "flipped byte: ppl without the shard" "$(awk '/^ppl /{print $2}' "$work/out")" "$less"
run "$bin/ortho-run" canaries "$work/flip" --tokenizer $tok \
	--canaries $data/private-a/canaries.tsv --key-file "$keys" --strict
expect "flipped byte, canaries --strict" 1 "chunk 0"
same "flipped byte, --strict: output lines" "$(wc -l <"$work/out")" 0
for s in "$work/flip/ortho/"*.osh; do
	[ "$s" = "$work/flip/ortho/$fid.osh" ] || flip_chunk "$s"
done
same "every shard flipped: ppl is Base only" "$(ppl "$work/flip" --key-file "$keys")" "$base"

"$bin/ortho-pack" --public $priv --private $pub --label other \
	--key-file "$work/other-keys" -o "$work/other" -q >/dev/null ||
	bad "packing another model"
cp -r "$work/good" "$work/xdev"
oshard=$(ls "$work/other/ortho/"*.osh | head -n 1)
cp "$oshard" "$work/xdev/ortho/"
run "$bin/ortho-run" ppl "$work/xdev" --tokenizer $tok --text $forget \
	--key-file "$keys"
expect "shard of another model" 0 "shard $(shard_id "$oshard"): belongs to model [0-9a-f]{8} not [0-9a-f]{8}"
same "shard of another model: ppl unchanged" "$(awk '/^ppl /{print $2}' "$work/out")" "$full"
run "$bin/ortho-run" ppl "$work/xdev" --tokenizer $tok --text $forget \
	--key-file "$keys" --strict
expect "shard of another model, --strict" 1 "belongs to model"

# The key of the first shard changed in one hex digit (mode stays 0600).
cp -p "$keys" "$work/wrong-keys"
python3 - "$work/wrong-keys" "$fid" <<'EOF'
import sys
path, sid = sys.argv[1], sys.argv[2]
lines = open(path).read().split('\n')
for i, l in enumerate(lines):
    f = l.split(' ')
    if f[0] == sid:
        f[1] = ('0' if f[1][0] != '0' else '1') + f[1][1:]
        lines[i] = ' '.join(f)
with open(path, 'r+') as out:
    out.write('\n'.join(lines))
EOF
run "$bin/ortho-run" ppl "$work/good" --tokenizer $tok --text $forget \
	--key-file "$work/wrong-keys"
expect "wrong key" 0 "shard $fid.*wrong key"
same "wrong key: ppl without the shard" "$(awk '/^ppl /{print $2}' "$work/out")" "$less"
run "$bin/ortho-run" ppl "$work/good" --tokenizer $tok --text $forget \
	--key-file "$work/wrong-keys" --strict
expect "wrong key, --strict" 1 "wrong key"

cp "$keys" "$work/open-keys"
chmod 0644 "$work/open-keys"
run "$bin/ortho-run" ppl "$work/good" --tokenizer $tok --text $forget \
	--key-file "$work/open-keys"
expect "key file others can read" 1 "open-keys"
same "key file others can read: output lines" "$(wc -l <"$work/out")" 0

# ---- ortho-pack: nothing may be left behind ----
python3 - "$pub" "$priv" "$work" <<'EOF'
import struct, sys
pub, priv, w = sys.argv[1], sys.argv[2], sys.argv[3]
src = open(pub, 'rb').read()
b = bytearray(src)
b[0:4] = struct.pack('<i', -5)			# dim
open(w + '/bad-header.bin', 'wb').write(b)
d, h, l, nh, kv, v, s = struct.unpack('<7i', src[:28])
l, hs = 4, d // nh				# one layer less
n = (v * d + l * d + l * d * d + 2 * l * kv * hs * d + l * d * d + l * d +
     3 * l * h * d + d + s * hs)
open(w + '/four-layers.bin', 'wb').write(struct.pack('<7i', d, h, l, nh, kv, v, s) +
                                        bytes(4 * n))
p = bytearray(open(priv, 'rb').read())
p[28 + 400] ^= 0x10				# token_embedding[1][36]
open(w + '/emb-differs.bin', 'wb').write(p)
EOF
mkdir "$work/p"

pack_fails() {	# what message-regex ortho-pack options...
	local what=$1 re=$2
	shift 2
	run "$bin/ortho-pack" "$@"
	expect "$what" 1 "$re" || return
	if [ -e "$work/p/out" ] || [ -e "$work/p/keys" ] ||
	   [ -n "$(ls -A "$work/p")" ]; then
		bad "$what: left $(ls -A "$work/p" | tr '\n' ' ')"
	else
		ok "$what: nothing left behind"
	fi
}

pack_fails "corrupt checkpoint header" "corrupt header" \
	--public "$work/bad-header.bin" -o "$work/p/out"
pack_fails "public/private shape mismatch" "n_layers is 4" \
	--public $pub --private "$work/four-layers.bin" --label x \
	--key-file "$work/p/keys" -o "$work/p/out"
pack_fails "private differs outside the linear matrices" \
	"tok_embeddings differs" --public $pub --private "$work/emb-differs.bin" \
	--label x --key-file "$work/p/keys" -o "$work/p/out"

cp -p "$keys" "$work/p/keys"
before=$(sha256sum <"$work/p/keys")
run "$bin/ortho-pack" --public $pub --private $priv --label x \
	--key-file "$work/p/keys" -o "$work/p/out"
expect "key file exists, no --force" 1 "exists"
same "key file exists: key file unchanged" "$(sha256sum <"$work/p/keys")" "$before"
same "key file exists: directory holds" "$(ls -A "$work/p" | tr '\n' ' ')" "keys "

exit $fail
