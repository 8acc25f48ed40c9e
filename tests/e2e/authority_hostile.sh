#!/bin/bash
# SPDX-License-Identifier: MIT
# A hostile peer against a real orthod: garbage, headers that lie (magic,
# version, flags, type, oversized and undersized lengths), truncated and
# stalled messages, malformed payloads of every request type, admin
# requests from a non-admin, and hundreds of connections held open past
# the connection limit. Throughout, the daemon must answer (an ERROR, then
# a hang-up) or hang up; afterwards it must still run, answer
# `orthoctl status` quickly, and hold an intact audit log.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
bin=$BUILD/bin

for t in orthod orthoctl; do
	if [ ! -x "$bin/$t" ]; then
		echo "SKIP: $bin/$t is not built"
		exit 77
	fi
done
if ! command -v python3 >/dev/null; then
	echo "SKIP: python3 is not installed (the hostile peer is a python script)"
	exit 77
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ortho-e2e-hostile.XXXXXX")
dpid=
cleanup() {
	[ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
sock=$work/sock
fail=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# A small connection limit, so that the flood goes past it.
"$bin/orthod" --state-dir "$work/state" --socket "$sock" --foreground \
	--max-clients 128 2>"$work/orthod.log" &
dpid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/orthod.log"; echo "FAIL: orthod did not start"; exit 1; }

ctl() { ORTHO_SOCKET=$sock "$bin/orthoctl" "$@"; }

# status answers within @1 seconds
quick_status() {
	local t0 t1
	t0=$(date +%s%N)
	if ! timeout "$1" "$bin/orthoctl" --socket "$sock" status >"$work/status.out" 2>&1; then
		bad "orthoctl status did not answer within $1 s ($2)"
		return
	fi
	t1=$(date +%s%N)
	ok "orthoctl status answered in $(( (t1 - t0) / 1000000 )) ms ($2)"
}

cat >"$work/hostile.py" <<'EOF'
import os, random, socket, struct, sys, time

sock_path, phase = sys.argv[1], sys.argv[2]
MAGIC, VERSION = 0x5054524f, 1
HELLO, GET_KEY, HOLD, RELEASE, ACK = 1, 2, 3, 4, 5
IMPORT, GRANT, DENY, REVOKE, STATUS, AUDIT_READ, AUDIT_VERIFY = range(16, 23)
ERROR = 129
failures = 0

def hdr(typ, length, version=VERSION, magic=MAGIC, flags=0, req=7):
    return struct.pack('<IHHIIQ', magic, version, typ, flags, length, req)

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sock_path)
    return s

def read_reply(s):
    """The daemon's reply: (type, payload) or None at a hang-up."""
    buf = b''
    try:
        while len(buf) < 24:
            d = s.recv(24 - len(buf))
            if not d:
                return None
            buf += d
        magic, ver, typ, flags, length, req = struct.unpack('<IHHIIQ', buf)
        if magic != MAGIC or length > (1 << 20) + 24:
            raise AssertionError('the daemon sent a bad header')
        pay = b''
        while len(pay) < length:
            d = s.recv(length - len(pay))
            if not d:
                return None
            pay += d
        return typ, pay
    except (ConnectionResetError, BrokenPipeError):
        return None

def expect_error_then_close(name, data, errno_=None):
    """Send @data; the daemon answers ERROR (errno_ if given) and hangs up."""
    global failures
    s = conn()
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = read_reply(s)
    if r is None:
        ok_ = errno_ is None
    else:
        typ, pay = r
        err = struct.unpack('<i', pay[:4])[0] if len(pay) >= 4 else 0
        ok_ = typ == ERROR and (errno_ is None or err == -errno_)
        if ok_:
            ok_ = read_reply(s) is None
    s.close()
    print(('ok:   ' if ok_ else 'FAIL: ') + name)
    if not ok_:
        failures += 1

def run_bad_headers():
    import errno
    expect_error_then_close('garbage bytes', os.urandom(4096))
    expect_error_then_close('wrong magic', hdr(HELLO, 4, magic=0xdeadbeef) + b'\0' * 4, errno.EPROTO)
    expect_error_then_close('another protocol version', hdr(HELLO, 4, version=99) + b'\0' * 4, errno.EPROTONOSUPPORT)
    expect_error_then_close('reserved flags set', hdr(HELLO, 4, flags=1) + b'\0' * 4, errno.EBADMSG)
    expect_error_then_close('unknown type', hdr(77, 0), errno.EBADRQC)
    expect_error_then_close('a reply type sent as a request', hdr(ERROR, 8) + b'\0' * 8, errno.EBADRQC)
    expect_error_then_close('oversized length (4 GiB)', hdr(GET_KEY, 0xffffffff), errno.EMSGSIZE)
    expect_error_then_close('oversized length for the type', hdr(HELLO, 1 << 20), errno.EMSGSIZE)
    expect_error_then_close('undersized length', hdr(GET_KEY, 3) + b'abc', errno.EBADMSG)
    expect_error_then_close('HELLO with flags in the payload', hdr(HELLO, 4) + b'\1\0\0\0', errno.EBADMSG)
    expect_error_then_close('trailing bytes', hdr(GET_KEY, 20) + b'\0' * 20)
    expect_error_then_close('label with a control byte',
        hdr(REVOKE, 1 + 2 + 3 + 4) + b'\2' + struct.pack('<H', 3) + b'a\nb' + struct.pack('<I', 100))
    expect_error_then_close('IMPORT count past the payload',
        hdr(IMPORT, 4) + struct.pack('<I', 1000000), errno.EBADMSG)

def run_truncated():
    # Cut off mid-header and mid-payload: the daemon just drops them.
    for cut in (1, 10, 23, 24 + 2):
        s = conn()
        s.sendall((hdr(GET_KEY, 16) + b'\0' * 16)[:cut])
        s.close()
    print('ok:   truncated messages sent')

def run_fuzz(n):
    # Well-framed messages with random payloads of every request type: an
    # answer or a hang-up, never silence.
    global failures
    rnd = random.Random(1234)
    types = [HELLO, GET_KEY, HOLD, RELEASE, IMPORT, GRANT, DENY, REVOKE,
             STATUS, AUDIT_READ, AUDIT_VERIFY]
    silent = 0
    for i in range(n):
        t = rnd.choice(types)
        pay = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 100)))
        s = conn()
        s.settimeout(3)
        try:
            s.sendall(hdr(t, len(pay)) + pay)
            r = read_reply(s)
        except socket.timeout:
            silent += 1
        except OSError:
            pass
        s.close()
    if silent:
        print('FAIL: %d of %d fuzzed requests got no answer' % (silent, n))
        failures += 1
    else:
        print('ok:   %d fuzzed requests answered or hung up' % n)

def run_stall():
    # Half a header, then nothing: cut off after the stall limit (10 s).
    global failures
    s = conn()
    s.sendall(hdr(STATUS, 0)[:12])
    s.settimeout(20)
    t0 = time.time()
    try:
        d = s.recv(100)
    except ConnectionResetError:
        d = b''
    except socket.timeout:
        d = None
    dt = time.time() - t0
    if d == b'' and 5 < dt < 16:
        print('ok:   a stalled peer was cut off after %.1f s' % dt)
    else:
        print('FAIL: a stalled peer: %r after %.1f s' % (d, dt))
        failures += 1

def run_flood(n, hold_file):
    # Open @n connections and sit on them, half of them mid-message, until
    # @hold_file disappears.
    socks = []
    refused = 0
    for i in range(n):
        try:
            s = conn()
            if i % 2:
                s.sendall(hdr(GET_KEY, 16)[:7])
            socks.append(s)
        except OSError:
            refused += 1
    print('ok:   flood: %d connections opened, %d refused at connect' % (len(socks), refused))
    sys.stdout.flush()
    open(hold_file + '.up', 'w').close()
    while os.path.exists(hold_file):
        time.sleep(0.05)
    for s in socks:
        s.close()

def run_nonadmin():
    import errno
    # An IMPORT header of 1 MiB from a non-admin is refused at the header,
    # before the daemon reserves anything for it.
    expect_error_then_close('non-admin IMPORT header (1 MiB)', hdr(IMPORT, 1 << 20), errno.EPERM)
    expect_error_then_close('non-admin REVOKE',
        hdr(REVOKE, 1 + 2 + 1 + 4) + b'\2' + struct.pack('<H', 1) + b'x' + struct.pack('<I', 100),
        errno.EPERM)

if phase == 'headers':
    run_bad_headers(); run_truncated(); run_fuzz(300)
elif phase == 'stall':
    run_stall()
elif phase == 'flood':
    run_flood(int(sys.argv[3]), sys.argv[4])
elif phase == 'nonadmin':
    run_nonadmin()
sys.exit(1 if failures else 0)
EOF

echo "== bad headers, truncated messages, fuzzed payloads"
python3 "$work/hostile.py" "$sock" headers || fail=1
quick_status 2 "after the bad messages"

echo "== a peer that stalls mid-message does not hold anyone up"
python3 "$work/hostile.py" "$sock" stall >"$work/stall.out" 2>&1 &
spid=$!
sleep 0.5
quick_status 2 "while a peer stalls mid-message"
# The flood below would push the stalled peer out as idle: wait for it.
wait "$spid" || true
cat "$work/stall.out"
grep -q '^ok:' "$work/stall.out" || fail=1

echo "== 600 connections held open (the limit is 128)"
touch "$work/hold"
python3 "$work/hostile.py" "$sock" flood 600 "$work/hold" &
fpid=$!
for _ in $(seq 400); do [ -e "$work/hold.up" ] && break; sleep 0.05; done
[ -e "$work/hold.up" ] || bad "the flood did not get its connections up"
quick_status 2 "with 600 idle connections pushing at the limit"
conns=$(ctl status --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["clients"]))')
if [ "$conns" -le 129 ]; then
	ok "the daemon holds $conns connections (limit 128, plus the one asking)"
else
	bad "the daemon holds $conns connections, past its limit of 128"
fi
rm -f "$work/hold"
wait "$fpid" || bad "the flood script failed"

if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	echo "== a non-admin peer (uid 65534)"
	# A python3 that uid 65534 can run (not one under root's home).
	py=
	for p in /usr/bin/python3 /usr/local/bin/python3; do
		if setpriv --reuid=65534 --regid=65534 --clear-groups "$p" -c '' 2>/dev/null; then
			py=$p
			break
		fi
	done
	if [ -n "$py" ]; then
		setpriv --reuid=65534 --regid=65534 --clear-groups \
			"$py" "$work/hostile.py" "$sock" nonadmin || fail=1
	else
		echo "note: no python3 that uid 65534 may run: its raw requests are left out"
	fi
	if setpriv --reuid=65534 --regid=65534 --clear-groups \
		"$bin/orthoctl" --socket "$sock" status >"$work/na.out" 2>&1; then
		bad "orthoctl status as uid 65534 succeeded"
	else
		ok "orthoctl status as uid 65534 refused: $(head -n1 "$work/na.out")"
	fi
else
	echo "note: not root: the non-admin checks are left out"
fi

echo "== the daemon afterwards"
if kill -0 "$dpid" 2>/dev/null; then ok "orthod is still running"; else bad "orthod died"; fi
quick_status 2 "at the end"
if ctl audit --verify >"$work/verify.out" 2>&1; then
	ok "audit --verify: $(tail -n1 "$work/verify.out")"
else
	bad "audit --verify failed: $(cat "$work/verify.out")"
fi
kill "$dpid"
if wait "$dpid"; then ok "orthod stopped cleanly"; else bad "orthod exited with $?"; fi
dpid=
if grep -qiE 'sanitizer|segv|abort' "$work/orthod.log"; then
	bad "orthod's log shows a crash"; cat "$work/orthod.log"
fi
[ "$fail" -eq 0 ] && echo "authority_hostile: all passed"
exit "$fail"
