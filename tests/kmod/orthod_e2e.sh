#!/bin/sh
# SPDX-License-Identifier: MIT
#
# orthod_e2e.sh [--list]: orthod, the library and orthoctl with the kernel
# module loaded, end to end, inside the qemu of tests/kmod/run.sh (busybox
# sh, as root, the module loaded). The model, its key file, the tokenizer
# and a text were packed on the host into /data (run.sh); the real orthod,
# orthoctl and ortho-run (dynamically linked, with their libraries) are in
# /bin. Prints "PASS: <case>" or "FAIL: <case>: why" per case; the cases
# build on each other, so one that fails stops the rest ("not run").
#
#   orthod-import      orthod takes up /dev/ortho; imported keys go into the
#                      kernel with their policy: uid 1000 fetches them, uid
#                      2000 gets -EACCES from the kernel, and orthod itself
#                      answers -EREMOTE (fetch it from /dev/ortho)
#   orthod-client      an unprivileged ortho-run gets its keys from the
#                      kernel: /proc/<pid>/fdinfo shows its ortho- keys;
#                      a polled-mode client (kpolled) holds them too
#   orthod-restart     orthod restarts; the keys stay in the kernel and a
#                      client that lost orthod keeps running
#   orthod-revoke-one  one shard revoked: every client acknowledges in the
#                      kernel (two of them reachable only through it, one
#                      of those in polled mode: its event fd fires for the
#                      kernel); the next rounds use four shards
#   orthod-reload      module reloaded: orthod puts the four live keys back
#                      from its keystore (rewritten while the kernel held
#                      them); a new client gets the same perplexity
#   orthod-revoke      the label revoked: the client acknowledges in the
#                      kernel and its next rounds are Base-only; a stopped
#                      client is killed by the kernel after its grace
#                      period, and orthoctl and the audit log say so
set -u

cases="orthod-import orthod-client orthod-restart orthod-revoke-one orthod-reload orthod-revoke"
if [ "${1:-}" = --list ]; then
	for c in $cases; do echo "root $c"; done
	exit 0
fi

D=/data
W=/tmp/orthod-e2e
sock=$W/sock
state=$W/state
grace=/sys/module/ortho/parameters/grace_ms
# Long enough for a client under TCG; the kill case waits for all of it.
GRACE_MS=2000
dpid=
why=

# Keeps the first reason; "|| bad ... || return 1" ends the case there.
bad() {
	[ -n "$why" ] || why=$*
	return 1
}

ctl() {
	orthoctl --socket "$sock" "$@"
}

# wait_for CONDITION SECONDS
wait_for() {
	i=0
	while ! eval "$1"; do
		i=$((i + 1))
		[ $i -ge $(($2 * 10)) ] && return 1
		sleep 0.1
	done
	return 0
}

rounds() {
	n=$(grep -c '^ppl ' "$1" 2>/dev/null)
	echo "${n:-0}"
}

start_orthod() {
	orthod --state-dir "$state" --socket "$sock" --foreground \
		2>>"$W/orthod.log" &
	dpid=$!
	wait_for "ctl status >/dev/null 2>&1" 60 ||
		bad "orthod did not start: $(tail -n 3 "$W/orthod.log")" || return 1
}

stop_orthod() {
	[ -n "$dpid" ] || return 0
	kill "$dpid"
	wait "$dpid"
	dpid=
}

# ppl DIR ARGS...: one round's perplexity and shards, "P K"
ppl() {
	dir=$1
	shift
	ortho-run ppl "$dir" --tokenizer "$W/tok.bin" --text "$W/text.txt" \
		--repeat 1 "$@" 2>/dev/null | awk '/^ppl /{ print $2, $6 }'
}

# start_client NAME: ortho-run as uid 1000, round after round
start_client() {
	runas 1000 1000 /bin/ortho-run ppl "$W/model" --tokenizer "$W/tok.bin" \
		--text "$W/text.txt" --authority "unix:$sock" --repeat 100000 \
		--interval-ms 100 >"$W/$1.out" 2>"$W/$1.err" &
	eval "pid_$1=\$!"
}

# wait_rounds NAME N: the client has printed N rounds
wait_rounds() {
	wait_for "[ \$(rounds $W/$1.out) -ge $2 ]" 180 ||
		bad "client $1: $(rounds "$W/$1.out") rounds, not $2: $(tail -n 3 "$W/$1.err")" || return 1
}

# last_round NAME: "P K" of its last round
last_round() {
	grep '^ppl ' "$W/$1.out" | tail -n 1 | awk '{ print $2, $6 }'
}

# kfd PID: its file descriptor of /dev/ortho
kfd() {
	for f in /proc/"$1"/fd/*; do
		if [ "$(readlink "$f")" = /dev/ortho ]; then
			echo "${f##*/}"
			return 0
		fi
	done
	return 1
}

# fdinfo PID KEY: the value of an ortho- key of its /dev/ortho file
fdinfo() {
	fd=$(kfd "$1") || return 1
	sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/fdinfo/$fd"
}

# after_revoke NAME ROUNDS_AT_REVOKE "P K": every round after the one in
# flight at the revoke is P with K shards ("-": all alike); sets $after
after_revoke() {
	wait_rounds "$1" $(($2 + 3)) || return 1
	tail -n +$(($2 + 2)) "$W/$1.out" | grep '^ppl ' | awk '{ print $2, $6 }' |
		sort -u >"$W/$1.after"
	after=$(cat "$W/$1.after")
	[ "$3" = - ] && [ "$(wc -l <"$W/$1.after")" -eq 1 ] && return 0
	[ "$after" = "$3" ] ||
		bad "client $1 after the revoke (round $2): $(tr '\n' ' ' <"$W/$1.after") (want $3); its rounds: $(awk '{ printf "%d:%s/%s ", NR, $2, $6 }' "$W/$1.out")" || return 1
}

case_import() {
	mkdir -p "$W" && chmod 755 "$W" || return 1
	cp -R "$D/model" "$W/model" && cp "$D/tok.bin" "$D/text.txt" "$W/" &&
		cp "$D/keys" "$W/keys" && chmod 600 "$W/keys" &&
		chmod -R a+rX "$W/model" "$W/tok.bin" "$W/text.txt" ||
		bad "cannot copy /data" || return 1
	ids=$(ls "$W/model/ortho" | sed 's/\.osh$//')
	id1=$(echo "$ids" | head -n 1)
	[ "$(echo "$ids" | wc -l)" -eq 5 ] || bad "the model has not five shards" || return 1
	base=$(ppl "$W/model" --no-ortho)
	full=$(ppl "$W/model" --key-file "$W/keys")
	echo "# reference: Base only $base, with the five shards $full"
	[ "${base#* }" = 0 ] && [ "${full#* }" = 5 ] ||
		bad "reference rounds: '$base' and '$full'" || return 1
	echo "$GRACE_MS" >"$grace"
	start_orthod || return 1
	grep -q "the kernel module holds 0 keys" "$W/orthod.log" ||
		bad "orthod did not take up /dev/ortho: $(cat "$W/orthod.log")" || return 1
	ctl key import "$W/keys" >/dev/null || bad "orthoctl key import failed" || return 1
	ctl grant --label private-a --uid 1000 >/dev/null || bad "grant failed" || return 1
	n=$(ctl audit | grep -c ' import .*held_by=kernel')
	[ "$n" -eq 5 ] || bad "$n of 5 imported keys went to the kernel" || return 1
	ctl status >"$W/status.txt" || bad "orthoctl status failed" || return 1
	for id in $ids; do
		grep -q "^  shard $id private-a: live, 0 holders" "$W/status.txt" ||
			bad "orthoctl status: shard $id is not live in the module's view" || return 1
	done
	ctl status --json | grep -q '"module":{"loaded":true,"grace_ms":'"$GRACE_MS" ||
		bad "orthoctl status --json has no module object" || return 1
	# The kernel checks the policy orthod gave it.
	n=$(runas 1000 1000 /bin/kget $ids | grep -c ' ok$')
	[ "$n" -eq 5 ] || bad "uid 1000 fetched $n of 5 keys from /dev/ortho" || return 1
	n=$(runas 2000 2000 /bin/kget $ids | grep -c " -13\$")
	[ "$n" -eq 5 ] || bad "uid 2000 was refused (-EACCES) $n of 5 keys" || return 1
	# A denied uid's client: the kernel refuses, Base only.
	runas 2000 2000 /bin/ortho-run ppl "$W/model" --tokenizer "$W/tok.bin" \
		--text "$W/text.txt" --authority "unix:$sock" --repeat 1 \
		>"$W/denied.out" 2>"$W/denied.err"
	grep -q "not granted (uid 2000) by /dev/ortho" "$W/denied.err" &&
		[ "$(last_round denied)" = "$base" ] ||
		bad "uid 2000's client: $(cat "$W/denied.out" "$W/denied.err")" || return 1
	# orthod no longer has the keys: asked itself, it redirects.
	runas 1000 1000 /bin/env ORTHO_KDEV=none /bin/ortho-run ppl "$W/model" \
		--tokenizer "$W/tok.bin" --text "$W/text.txt" \
		--authority "unix:$sock" --repeat 1 \
		>"$W/remote.out" 2>"$W/remote.err"
	grep -q "5 shards in the kernel module (no /dev/ortho here), not handed out by unix:$sock" "$W/remote.err" &&
		[ "$(last_round remote)" = "$base" ] ||
		bad "a client without /dev/ortho: $(cat "$W/remote.out" "$W/remote.err")" || return 1
	ctl audit | grep -q ' key-denied .*reason=held_by_the_kernel_module' ||
		bad "no key-denied record for the redirected request" || return 1
}

case_client() {
	start_client A
	wait_rounds A 2 || return 1
	[ "$(last_round A)" = "$full" ] || bad "client A: $(last_round A), want $full" || return 1
	kfd "$pid_A" >/dev/null || bad "client A has no /dev/ortho open" || return 1
	[ "$(fdinfo "$pid_A" ortho-uid)" = 1000 ] &&
		[ "$(fdinfo "$pid_A" ortho-shards)" = 5 ] &&
		[ "$(fdinfo "$pid_A" ortho-pid)" = "$pid_A" ] ||
		bad "client A's fdinfo: $(cat /proc/"$pid_A"/fdinfo/"$(kfd "$pid_A")")" || return 1
	for id in $ids; do
		[ "$(fdinfo "$pid_A" "ortho-state-$id")" = held ] &&
			[ "$(fdinfo "$pid_A" "ortho-holder-uid-$id")" = 1000 ] &&
			[ "$(fdinfo "$pid_A" "ortho-resident-$id")" -gt 0 ] ||
			bad "client A's fdinfo for $id: $(grep "$id" /proc/"$pid_A"/fdinfo/*)" || return 1
	done
	echo "# client A (pid $pid_A): $(grep -c '^ortho-' /proc/"$pid_A"/fdinfo/"$(kfd "$pid_A")") ortho- keys in fdinfo, 5 shards held and resident"
	runas 1000 1000 /bin/kpolled "$W/model" "unix:$sock" >"$W/P.out" \
		2>"$W/P.err" &
	pid_P=$!
	wait_for "grep -q '^ready' $W/P.out" 120 ||
		bad "kpolled did not get going: $(cat "$W/P.err")" || return 1
	grep -q '^ready 5$' "$W/P.out" &&
		[ "$(fdinfo "$pid_P" ortho-shards)" = 5 ] ||
		bad "kpolled: $(cat "$W/P.out" "$W/P.err")" || return 1
}

case_restart() {
	stop_orthod
	start_orthod || return 1
	tail -n 3 "$W/orthod.log" | grep -q "holds 5 keys (0 put in, 5 already there)" ||
		bad "restarted orthod: $(tail -n 3 "$W/orthod.log")" || return 1
	n=$(rounds "$W/A.out")
	wait_rounds A $((n + 2)) || return 1
	[ "$(last_round A)" = "$full" ] || bad "client A after the restart: $(last_round A)" || return 1
	grep -q "lost the key authority" "$W/A.err" ||
		bad "client A did not notice orthod going: $(cat "$W/A.err")" || return 1
	start_client B
	wait_rounds B 2 || return 1
	[ "$(last_round B)" = "$full" ] || bad "client B: $(last_round B), want $full" || return 1
}

case_revoke_one() {
	ctl revoke "$id1" --timeout-ms 10000 >"$W/rv1.out" 2>&1 ||
		bad "orthoctl revoke $id1 exited $?: $(cat "$W/rv1.out")" || return 1
	na=$(rounds "$W/A.out")
	nb=$(rounds "$W/B.out")
	grep -E '^(elapsed|holders)' "$W/rv1.out" | sed 's/^/# revoke one: /'
	# A and P through the kernel only; B through the kernel and orthod.
	grep -q "^holders:	4 (complete 4, busy 0, gone 0)" "$W/rv1.out" ||
		bad "revoke: $(cat "$W/rv1.out")" || return 1
	grep -q "^holder:	pid $pid_A uid 1000 comm ortho-run shard $id1: complete" "$W/rv1.out" ||
		bad "client A is not listed complete: $(cat "$W/rv1.out")" || return 1
	[ "$(grep -c "^holder:	pid $pid_B .*: complete" "$W/rv1.out")" -eq 2 ] ||
		bad "client B is not listed complete twice: $(cat "$W/rv1.out")" || return 1
	grep -q "^holder:	pid $pid_P uid 1000 comm kpolled shard $id1: complete" "$W/rv1.out" ||
		bad "kpolled is not listed complete: $(cat "$W/rv1.out")" || return 1
	wait_for "grep -q '^revoked $id1\$' $W/P.out" 30 &&
		[ "$(fdinfo "$pid_P" "ortho-state-$id1")" = acked ] &&
		! grep -q 'still readable' "$W/P.out" ||
		bad "kpolled: $(tr '\n' ' ' <"$W/P.out")" || return 1
	[ "$(fdinfo "$pid_A" "ortho-state-$id1")" = acked ] &&
		[ "$(fdinfo "$pid_A" "ortho-resident-$id1")" = 0 ] ||
		bad "client A's fdinfo: $id1 is $(fdinfo "$pid_A" "ortho-state-$id1")" || return 1
	after_revoke A "$na" - || return 1
	mid=$after
	[ "${mid#* }" = 4 ] && [ "$mid" != "$full" ] ||
		bad "client A after revoking one shard: $mid" || return 1
	after_revoke B "$nb" "$mid" || return 1
	ctl status | grep -q "^  shard $id1 private-a: revoked (generation [0-9]*) in [0-9.]* ms: 3 holders, 3 acked, 0 killed, 0 closed" ||
		bad "the module's view: $(ctl status | grep "$id1")" || return 1
	echo "# after revoking one shard: $mid"
}

case_reload() {
	kill "$pid_A" "$pid_B" "$pid_P"
	wait "$pid_A" "$pid_B" "$pid_P" 2>/dev/null
	stop_orthod
	rmmod ortho || bad "rmmod ortho failed" || return 1
	insmod /lib/modules/ortho.ko grace_ms=300 || bad "insmod failed" || return 1
	echo "$GRACE_MS" >"$grace"
	start_orthod || return 1
	tail -n 3 "$W/orthod.log" | grep -q "holds 4 keys (4 put in, 0 already there)" ||
		bad "orthod after the reload: $(tail -n 3 "$W/orthod.log")" || return 1
	start_client C
	wait_rounds C 2 || return 1
	[ "$(last_round C)" = "$mid" ] ||
		bad "client C after the reload: $(last_round C), want $mid" || return 1
}

case_revoke() {
	start_client S
	wait_rounds S 2 || return 1
	kill -STOP "$pid_S"
	ctl revoke --label private-a --timeout-ms 10000 --json \
		>"$W/rv.json" 2>"$W/rv.err"
	rc=$?
	nc=$(rounds "$W/C.out")
	[ $rc -eq 3 ] || bad "orthoctl revoke exited $rc, not 3: $(cat "$W/rv.json" "$W/rv.err")" || return 1
	grep -o '"elapsed_us":[0-9]*' "$W/rv.json" | sed 's/^/# revoke label: /'
	# C: four kernel holds and four of orthod's, all complete.
	grep -o "{\"pid\":$pid_C,[^}]*}" "$W/rv.json" >"$W/rv.C"
	[ "$(wc -l <"$W/rv.C")" -eq 8 ] && ! grep -qv '"outcome":"complete"' "$W/rv.C" ||
		bad "client C's records: $(cat "$W/rv.C")" || return 1
	# S: killed by the kernel after the grace period (-ETIMEDOUT).
	grep -o "{\"pid\":$pid_S,[^}]*}" "$W/rv.json" >"$W/rv.S"
	[ "$(grep -c '"outcome":"gone","error":-110' "$W/rv.S")" -eq 4 ] ||
		bad "the stopped client's records: $(cat "$W/rv.S")" || return 1
	grep -q "gone (killed): pid $pid_S uid 1000" "$W/rv.err" ||
		bad "orthoctl did not name the killed client: $(cat "$W/rv.err")" || return 1
	wait "$pid_S"
	rc=$?
	[ $rc -eq 137 ] || bad "the stopped client ended with $rc, not SIGKILL" || return 1
	for id in $ids; do
		[ "$id" = "$id1" ] && continue
		[ "$(fdinfo "$pid_C" "ortho-state-$id")" = acked ] ||
			bad "client C's fdinfo: $id is $(fdinfo "$pid_C" "ortho-state-$id")" || return 1
		ctl status | grep -q "^  shard $id private-a: revoked .*: 2 holders, 1 acked, 1 killed, 0 closed" ||
			bad "the module's view of $id: $(ctl status | grep "$id")" || return 1
	done
	after_revoke C "$nc" "$base" || return 1
	grep -q "revoked by" "$W/C.err" || bad "client C did not say it was revoked" || return 1
	ctl audit | grep -q " revoke-complete .*kernel_killed=4 .* killed=$pid_S/1000/" ||
		bad "the audit log: $(ctl audit | grep ' revoke-' | tail -n 1)" || return 1
	ctl audit --verify >/dev/null || bad "orthoctl audit --verify failed" || return 1
}

cleanup() {
	for p in ${pid_A:-} ${pid_B:-} ${pid_P:-} ${pid_C:-} ${pid_S:-}; do
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	# The module must be free to unload after this.
	stop_orthod
	echo 300 >"$grace" 2>/dev/null
}

failed=
for c in $cases; do
	echo "ORTHO-KMOD-CASE $c (root)"
	if [ -n "$failed" ]; then
		echo "FAIL: $c: not run ($failed failed)"
		continue
	fi
	why=
	fn=case_$(echo "${c#orthod-}" | tr - _)
	t0=$(date +%s)
	if $fn && [ -z "$why" ]; then
		echo "# $c: $(($(date +%s) - t0)) s"
		echo "PASS: $c"
	else
		echo "FAIL: $c: ${why:-failed}"
		for f in "$W"/*.err "$W"/orthod.log; do
			[ -s "$f" ] && tail -n 5 "$f" | sed "s|^|# ${f##*/}: |"
		done
		failed=$c
	fi
done
cleanup
