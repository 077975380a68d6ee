#!/usr/bin/env bash
# The README's walk-through, run for real: two stores on one machine, paired,
# syncing over loopback TLS. Uses the default (strong) key derivation.
set -euo pipefail
cd "$(dirname "$0")/.."
FERRY=${FERRY:-bin/ferry}
T=$(mktemp -d)
serve_pid=
cleanup() { [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
laptop() { FERRY_PASSPHRASE="laptop secret" "$FERRY" --dir "$T/laptop" "$@"; }
phone()  { FERRY_PASSPHRASE="phone secret"  "$FERRY" --dir "$T/phone" "$@"; }

step "ferry --dir laptop init --name laptop   # and the same for the phone"
laptop init --name laptop
phone init --name phone
L=$(laptop id); P=$(phone id)

step "ferry trust <phone id> --collections notes   # pairing, on both devices"
laptop trust "$P" --collections notes
phone trust "$L" --collections notes

step "offline edits on both devices"
laptop put notes groceries '{"title":"Groceries","items":["milk","eggs"]}'
phone put notes todo '{"title":"Call Ann","done":false}'
laptop put diary today '{"text":"not shared: no grant for diary"}'
laptop list notes

# serve_phone starts `ferry serve` on the phone and sets $addr; stop_phone
# ends it (a store belongs to one process at a time).
serve_phone() {
  : > "$T/serve.log"
  FERRY_PASSPHRASE="phone secret" "$FERRY" --dir "$T/phone" serve --listen 127.0.0.1:0 > "$T/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 100); do grep -q '^serving' "$T/serve.log" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^serving .* on \([^ ]*\) .*/\1/p' "$T/serve.log")
  [ -n "$addr" ] || { cat "$T/serve.log"; exit 1; }
  echo "phone listening on $addr"
}
stop_phone() { kill -INT "$serve_pid"; wait "$serve_pid" || true; serve_pid=; }

step "ferry serve --listen 127.0.0.1:0   # on the phone, in the background"
serve_phone

step "ferry sync $addr   # on the laptop"
laptop sync "$addr"
laptop get notes todo

step "a conflict: both set the same field offline; the later write wins (timestamp policy)"
stop_phone
laptop put notes todo '{"done":true}'
phone put notes todo '{"title":"Call Ann today"}'
laptop put notes todo '{"title":"Call Ann tomorrow"}'
serve_phone
laptop sync "$addr"
stop_phone
laptop get notes todo
phone get notes todo
test "$(laptop get notes todo)" = "$(phone get notes todo)"
if phone get diary today 2>/dev/null; then echo "the diary reached the phone" >&2; exit 1; fi

step "ferry status"
laptop status

step "ferry export backup.age ; ferry import into a new store"
FERRY_BACKUP_PASSPHRASE="backup secret" laptop export "$T/backup.age"
FERRY_PASSPHRASE="tablet secret" "$FERRY" --dir "$T/tablet" init --name tablet
FERRY_BACKUP_PASSPHRASE="backup secret" FERRY_PASSPHRASE="tablet secret" "$FERRY" --dir "$T/tablet" import "$T/backup.age"
FERRY_PASSPHRASE="tablet secret" "$FERRY" --dir "$T/tablet" list notes

step "a wrong passphrase is refused with exit code 3"
set +e
FERRY_PASSPHRASE="not it" "$FERRY" --dir "$T/laptop" list notes
code=$?
set -e
test "$code" = 3

step "ferry relay --listen 127.0.0.1:0 --dir relay   # a zero-knowledge relay, in the background"
"$FERRY" relay --listen 127.0.0.1:0 --dir "$T/relay" > "$T/relay.log" 2>/dev/null &
relay_pid=$!
for _ in $(seq 100); do grep -q '^relay on' "$T/relay.log" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^relay on \([^ ]*\) .*/\1/p' "$T/relay.log")
[ -n "$url" ] || { cat "$T/relay.log"; exit 1; }
echo "relay at $url"

step "devices that are never online together share a space on the relay"
space=$(laptop space create "$url" --collections notes | sed -n 's/^created space \([^ ]*\) .*/\1/p')
code=$(phone space code)
laptop space invite "$space" "$code" --out "$T/invite.age"
phone space join "$T/invite.age" --collections notes
laptop put notes relay-note '{"title":"sent through a relay that cannot read it"}'
laptop sync "$url"
phone sync "$url"
phone get notes relay-note
kill -INT "$relay_pid"; wait "$relay_pid" || true
if grep -rq "relay-note" "$T/relay"; then echo "the relay can read a record id" >&2; exit 1; fi
echo "the relay's files hold no record id, field or value"

step "ferry consent log   # every grant and every share, append-only"
laptop consent log
echo
echo "CLI tour: every command did what it said."
