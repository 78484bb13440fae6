#!/bin/bash
# Base backup and restore benchmark: pgfrost against pgBackRest on one Mastodon-shaped cluster.
#
#   bash bench/backup.sh            (as root; see bench/README.md, "Base backups and restores")
#
# Environment: STATUSES (2400000: cluster of about 1.5 GB), FULL_ROUNDS (4), INCR_ROUNDS (2),
# RESTORE_ROUNDS (4; even counts put each tool first equally often), KEEP=1 keeps the scratch
# directory, PGBIN (/usr/lib/postgresql/15/bin).
#
# pgBackRest is the baseline: every figure that matters is a ratio against it, measured in the
# same run on the same cluster state, with the order of the two tools alternating between rounds
# so that machine noise hits both. Exits 0 whether or not the targets are met; non-zero when a
# tool fails, and 2 when a restored cluster does not hold the data that was backed up.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/backup
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
STATUSES=${STATUSES:-2400000}
FULL_ROUNDS=${FULL_ROUNDS:-4}
INCR_ROUNDS=${INCR_ROUNDS:-2}
RESTORE_ROUNDS=${RESTORE_ROUNDS:-4}
KEEP=${KEEP:-0}
TARGET_FULL=0.80      # pgfrost full backup wall time / pgBackRest's, at most
TARGET_INCR=0.35      # pgfrost repository growth of an incremental / pgBackRest's, at most
TARGET_RESTORE=0.80   # pgfrost restore wall time / pgBackRest's, at most

# The instance: STATUSES posts over a year by STATUSES/30 accounts, two favourites per post,
# ten follows per account. One day of activity: 2.5% more posts and favourites, a few thousand
# counter updates on recent posts, a few hundred edits and deletions, then VACUUM (ANALYZE).
ACCOUNTS=$((STATUSES / 30))
FAVOURITES=$((STATUSES * 2))
FOLLOWS=$((STATUSES / 3))
DAY_VARS=(-v new_statuses=$((STATUSES * 25 / 1000)) -v new_favourites=$((FAVOURITES * 25 / 1000))
  -v new_follows=$((FOLLOWS * 4 / 1000 + 6)) -v new_accounts=$((ACCOUNTS / 1000 + 1))
  -v counter_updates=$((STATUSES / 480 + 1)) -v edits=$((STATUSES / 8000 + 3))
  -v deletes=$((STATUSES / 8000 + 3)))

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL and both tools run as postgres)"
[[ -x $PGBIN/initdb ]] || die "PostgreSQL binaries not found in $PGBIN"
id postgres >/dev/null 2>&1 || die "no postgres user"
((FULL_ROUNDS >= 1 && INCR_ROUNDS >= 1 && RESTORE_ROUNDS >= 1)) || die "rounds must be at least 1"
for p in pgbackrest:pgbackrest jq:jq python3:python3; do
  if ! command -v "${p%%:*}" >/dev/null; then
    log "installing ${p#*:}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${p#*:}" >/dev/null
  fi
done
# Settings from the caller's environment would override the config files.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^PGFROST_' || true)

WORK=$(mktemp -d /tmp/pgfrost-backupbench.XXXXXX)
chmod 755 "$WORK"
cd "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
VSOCK=$WORK/vsock
OUT=$WORK/out
PORT=$((50000 + RANDOM % 5000))   # no TCP listeners: the ports only name the socket files
VPORT=$((PORT + 5000))

cleanup() {
  local rc=$? d pid
  set +e
  trap - EXIT INT TERM
  for d in "$PGDATA" "$WORK"/restore/*; do
    if [[ -f $d/postmaster.pid ]]; then
      as_pg "$PGBIN/pg_ctl" -D "$d" stop -m immediate >/dev/null 2>&1
    fi
  done
  # Anything of this run still alive (an archive-push started by the archiver, say): each by pid.
  for pid in $(pgrep -u postgres -f -- "$WORK/" 2>/dev/null); do kill "$pid" 2>/dev/null; done
  sleep 0.2
  if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
log "building pgfrost (cargo build --release)"
(cd "$ROOT" && cargo build --release --quiet)
install -d -m 755 "$WORK/bin"
install -m 755 "${CARGO_TARGET_DIR:-$ROOT/target}/release/pgfrost" "$WORK/bin/pgfrost"
install -m 755 "$HERE/archive-push-pgfrost-pgbackrest.sh" "$WORK/bin/"
install -d -m 755 "$WORK/sql"
install -m 644 "$HERE"/*.sql "$WORK/sql/"   # psql runs as postgres, which may not read $ROOT
PGFROST=$WORK/bin/pgfrost
PGBR_VERSION=$(pgbackrest version | awk '{print $2}')
install -d -o postgres -g postgres -m 755 "$SOCK" "$VSOCK" "$OUT" "$WORK/restore"
install -d -o postgres -g postgres -m 700 "$PGDATA"
: >"$WORK/archive-targets"

# ---------------------------------------------------------------------------------------------
log "creating the cluster (data checksums on) and loading $STATUSES statuses"
as_pg "$PGBIN/initdb" -D "$PGDATA" --data-checksums -U postgres -A trust >"$OUT/initdb.log" 2>&1 \
  || { cat "$OUT/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
shared_buffers = 256MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
# The only checkpoints are the backups' (immediate) ones and the bench's own before each backup.
checkpoint_timeout = 1h
# The workload vacuums at the end of each day; no background change may slip in between the two
# tools' backups of the same state.
autovacuum = off
synchronous_commit = off
wal_level = replica
archive_mode = on
archive_command = '$WORK/bin/archive-push-pgfrost-pgbackrest.sh $WORK %p'
EOF
PSQL=("$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1)
pg_start() { # extra server options for this start
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$OUT/postgres.log" -w -t 600 ${1:+-o "$1"} start >/dev/null \
    || { tail -n 20 "$OUT/postgres.log" >&2; die "PostgreSQL did not start"; }
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -t 600 stop -m fast >/dev/null; }
sql() { as_pg "${PSQL[@]}" -d "${DB:-mastodon}" "$@"; }

# The initial load writes no WAL (wal_level minimal, tables created in the load's transaction
# are not logged) and is not archived: the backups start from the loaded cluster.
pg_start "-c wal_level=minimal -c max_wal_senders=0 -c archive_mode=off -c fsync=off -c full_page_writes=off"
DB=postgres sql -c "CREATE DATABASE mastodon"
t0=$SECONDS
sql -f "$WORK/sql/schema.sql" >"$OUT/load.log" 2>&1 || { cat "$OUT/load.log" >&2; die "schema failed"; }
sql -v accounts="$ACCOUNTS" -v statuses="$STATUSES" -v favourites="$FAVOURITES" -v follows="$FOLLOWS" \
  -f "$WORK/sql/load.sql" >>"$OUT/load.log" 2>&1 || { cat "$OUT/load.log" >&2; die "load failed"; }
pg_stop
sync
pg_start
LOAD_S=$((SECONDS - t0))
DB_BYTES=$(sql -c "SELECT pg_database_size('mastodon')")
log "loaded in ${LOAD_S}s: database $((DB_BYTES >> 20)) MiB"

# ---------------------------------------------------------------------------------------------
# Repository sets: one pgfrost and one pgBackRest repository each. Full round r < FULL_ROUNDS
# backs up into its own fresh set "full<r>" (a second full into the same pgfrost repository
# would find every block already stored); the last full round, the incrementals and the
# restores use the set "main".
SETS=()
for r in $(seq $((FULL_ROUNDS - 1))); do SETS+=("full$r"); done
SETS+=(main)
pf_conf() { echo "$WORK/pf-$1/pgfrost.toml"; }
br_conf() { echo "$WORK/br-$1/pgbackrest.conf"; }
pf_repo() { echo "$WORK/pf-$1/repo"; }
br_repo() { echo "$WORK/br-$1/repo"; }
ACTIVE=("${SETS[@]}")
write_targets() { # tool to list first
  local s first=$1 second
  if [[ $first == pgfrost ]]; then second=pgbackrest; else second=pgfrost; fi
  {
    for s in "${ACTIVE[@]}"; do [[ $first == pgfrost ]] && echo "pgfrost $(pf_conf "$s")" || echo "pgbackrest $(br_conf "$s")"; done
    for s in "${ACTIVE[@]}"; do [[ $second == pgfrost ]] && echo "pgfrost $(pf_conf "$s")" || echo "pgbackrest $(br_conf "$s")"; done
  } >"$WORK/archive-targets.new"
  chmod 644 "$WORK/archive-targets.new"
  mv "$WORK/archive-targets.new" "$WORK/archive-targets"
}
log "creating ${#SETS[@]} repository set(s): ${SETS[*]}"
for s in "${SETS[@]}"; do
  d=$WORK/pf-$s
  install -d -o postgres -g postgres -m 700 "$d" "$d/spool" "$d/key"
  head -c 24 /dev/urandom | base64 >"$d/passphrase"
  chown postgres:postgres "$d/passphrase"
  chmod 600 "$d/passphrase"
  cat >"$(pf_conf "$s")" <<EOF
repo = '$(pf_repo "$s")'
stanza = 'bench'
spool-path = '$d/spool'
key-file = '$d/key/key.json'
compress-level = 3
process-max = 2
log-level = 'warn'
pg-path = '$PGDATA'
pg-socket-path = '$SOCK'
pg-port = $PORT
pg-user = 'postgres'
EOF
  chown postgres:postgres "$(pf_conf "$s")"
  {
    as_pg "$PGFROST" --config "$(pf_conf "$s")" --passphrase-file "$d/passphrase" repo-create &&
      as_pg "$PGFROST" --config "$(pf_conf "$s")" --passphrase-file "$d/passphrase" key unlock &&
      as_pg "$PGFROST" --config "$(pf_conf "$s")" stanza-create
  } >"$d/setup.log" 2>&1 || { cat "$d/setup.log" >&2; die "pgfrost set-up of $s failed"; }
  d=$WORK/br-$s
  install -d -o postgres -g postgres -m 700 "$d" "$d/repo" "$d/spool" "$d/lock"
  cat >"$(br_conf "$s")" <<EOF
[global]
repo1-path=$(br_repo "$s")
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(head -c 48 /dev/urandom | base64 -w0)
repo1-retention-full=10
compress-type=zst
compress-level=3
process-max=2
start-fast=y
log-level-console=warn
log-level-stderr=warn
log-level-file=off
lock-path=$d/lock
spool-path=$d/spool

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PORT
pg1-user=postgres
EOF
  chown postgres:postgres "$(br_conf "$s")"
  chmod 600 "$(br_conf "$s")"
  as_pg pgbackrest --config="$(br_conf "$s")" --stanza=bench stanza-create >"$d/setup.log" 2>&1 \
    || { cat "$d/setup.log" >&2; die "pgBackRest stanza-create of $s failed"; }
done
write_targets pgfrost

# ---------------------------------------------------------------------------------------------
drain_archiver() {
  local i failed0 failed
  failed0=$(DB=postgres sql -c "SELECT failed_count FROM pg_stat_archiver")
  for i in $(seq 3000); do
    [[ -z $(find "$PGDATA/pg_wal/archive_status" -name '*.ready' -print -quit) ]] && return 0
    failed=$(DB=postgres sql -c "SELECT failed_count FROM pg_stat_archiver")
    ((failed - failed0 < 3)) || { tail -n 20 "$OUT/postgres.log" >&2; die "archive_command keeps failing"; }
    sleep 0.2
  done
  die "the archiver did not catch up in 10 minutes (see $OUT/postgres.log)"
}
# Size of what a tool keeps for its backups (the WAL archive left out: both archive the same WAL,
# and how much of it arrives during a backup depends on timing).
backup_bytes() { # tool set
  if [[ $1 == pgfrost ]]; then
    find "$(pf_repo "$2")" -type f -not -path '*/bench/wal/*' -printf '%s\n' | awk '{s += $1} END {print s + 0}'
  else
    find "$(br_repo "$2")/backup" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
  fi
}
all_bytes() { du -sb "$1" | awk '{print $1}'; }
wal_bytes() { # tool set
  if [[ $1 == pgfrost ]]; then all_bytes "$(pf_repo "$2")/bench/wal"; else all_bytes "$(br_repo "$2")/archive"; fi
}
field() { awk -v k="$2" '$1 == k {print $2}' "$1"; }

declare -A WALL CPU RSS TREE GROWTH LABEL READ
# One measured run of a tool: key (e.g. full1, incr2, restore1) -> WALL[tool.key] and friends.
measure() { # tool key command...
  local tool=$1 key=$2
  shift 2
  python3 "$HERE/measure.py" "$OUT/$tool-$key.m" "$OUT/$tool-$key.out" "$OUT/$tool-$key.err" postgres -- "$@" \
    || { cat "$OUT/$tool-$key.err" >&2; die "$tool $key failed (exit $(field "$OUT/$tool-$key.m" exit))"; }
  WALL[$tool.$key]=$(field "$OUT/$tool-$key.m" wall_ms)
  CPU[$tool.$key]=$(field "$OUT/$tool-$key.m" cpu_ms)
  RSS[$tool.$key]=$(field "$OUT/$tool-$key.m" maxrss_kib)
  TREE[$tool.$key]=$(field "$OUT/$tool-$key.m" tree_kib)
}
backup() { # tool set type key
  local tool=$1 set=$2 type=$3 key=$4 before after
  write_targets "$tool"
  DB=postgres sql -c CHECKPOINT
  drain_archiver
  sync
  before=$(backup_bytes "$tool" "$set")
  if [[ $tool == pgfrost ]]; then
    measure "$tool" "$key" "$PGFROST" --config "$(pf_conf "$set")" --log-level info backup --type "$type" \
      --start-fast y --output json
    LABEL[$tool.$key]=$(jq -r .label "$OUT/$tool-$key.out")
    READ[$tool.$key]=$(jq -r .stats.read_bytes "$OUT/$tool-$key.out")
  else
    measure "$tool" "$key" pgbackrest --config="$(br_conf "$set")" --stanza=bench --type="$type" backup
    as_pg pgbackrest --config="$(br_conf "$set")" --stanza=bench info --output=json >"$OUT/$tool-$key.info"
    LABEL[$tool.$key]=$(jq -r '.[0].backup[-1].label' "$OUT/$tool-$key.info")
    READ[$tool.$key]=$(jq -r '.[0].backup[-1].info.delta' "$OUT/$tool-$key.info")
  fi
  after=$(backup_bytes "$tool" "$set")
  GROWTH[$tool.$key]=$((after - before))
  log "  $tool $type ${LABEL[$tool.$key]}: $(ms_s "${WALL[$tool.$key]}") s, +$(mib "${GROWTH[$tool.$key]}") MiB, read $(mib "${READ[$tool.$key]}") MiB, peak RSS $(mib $((TREE[$tool.$key] * 1024))) MiB"
}
PAIR=0
ORDER=()
declare -A FIRST
next_order() { # alternates which tool goes first, pair after pair (pgBackRest first in odd pairs)
  PAIR=$((PAIR + 1))
  if ((PAIR % 2)); then ORDER=(pgbackrest pgfrost); else ORDER=(pgfrost pgbackrest); fi
}
calc() { awk "BEGIN {printf \"$1\", $2}"; }
mib() { calc '%.1f' "$1 / 1048576"; }
ms_s() { calc '%.1f' "$1 / 1000"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
cpu_pressure() { awk -F'[ =]' '/^some/ {print $5}' /proc/pressure/cpu 2>/dev/null || echo null; }
VERIFY_SQL="SELECT (SELECT count(*) || ' ' || sum(favourites_count) || ' ' || sum(hashtext(text)::bigint) FROM statuses)
  || ' ' || (SELECT count(*) FROM favourites) || ' ' || (SELECT count(*) FROM follows) || ' ' || (SELECT count(*) FROM accounts)"

PRESSURE_START=$(cpu_pressure)
# ---------------------------------------------------------------------------------------------
log "full backups: $FULL_ROUNDS round(s)"
for r in $(seq "$FULL_ROUNDS"); do
  set_r=${SETS[r - 1]}
  next_order
  FIRST[full$r]=${ORDER[0]}
  for tool in "${ORDER[@]}"; do backup "$tool" "$set_r" full "full$r"; done
done
SIZE_FULL=$(jq -r .stats.logical_bytes "$OUT/pgfrost-full$FULL_ROUNDS.out")
# The scratch sets are done with: archive into "main" only, and free their disk space.
ACTIVE=(main)
write_targets pgfrost
for s in "${SETS[@]}"; do [[ $s == main ]] || rm -rf "$WORK/pf-$s" "$WORK/br-$s"; done

DAY_S=()
for r in $(seq "$INCR_ROUNDS"); do
  log "day $r of activity"
  t0=$SECONDS
  sql "${DAY_VARS[@]}" -f "$WORK/sql/day.sql" >"$OUT/day$r.log" 2>&1 || { cat "$OUT/day$r.log" >&2; die "workload failed"; }
  DAY_S+=($((SECONDS - t0)))
  # What the restores must find: nothing writes between here and the backups below.
  EXPECT=$(sql -c "$VERIFY_SQL")
  log "incremental backups, round $r"
  next_order
  FIRST[incr$r]=${ORDER[0]}
  for tool in "${ORDER[@]}"; do backup "$tool" main incr "incr$r"; done
done
DB_BYTES_END=$(sql -c "SELECT pg_database_size('mastodon')")
pg_stop
declare -A REPO_TOTAL REPO_WAL
for tool in pgfrost pgbackrest; do
  if [[ $tool == pgfrost ]]; then REPO_TOTAL[$tool]=$(all_bytes "$(pf_repo main)"); else REPO_TOTAL[$tool]=$(all_bytes "$(br_repo main)"); fi
  REPO_WAL[$tool]=$(wal_bytes "$tool" main)
done

# ---------------------------------------------------------------------------------------------
# Restores of the last incremental into fresh empty directories, the source cluster stopped; each
# restored directory is started (recovery to the end of the backup) and queried.
VERIFY_OK=1
declare -A VERIFY
verify() { # tool key dir
  local tool=$1 key=$2 dir=$3 got i state=
  as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$OUT/verify-$tool-$key.log" -w -t 600 \
    -o "-c port=$VPORT -c unix_socket_directories='$VSOCK' -c listen_addresses='' -c archive_mode=off" start >/dev/null \
    || { tail -n 20 "$OUT/verify-$tool-$key.log" >&2; VERIFY[$tool.$key]="did not start"; VERIFY_OK=0; return; }
  local VQ=("$PGBIN/psql" -h "$VSOCK" -p "$VPORT" -U postgres -X -q -At -d mastodon)
  for i in $(seq 1500); do
    state=$(as_pg "${VQ[@]}" -c "SELECT CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'promoted' END" 2>/dev/null || true)
    [[ $state == paused || $state == promoted ]] && break
    sleep 0.2
  done
  got=$(as_pg "${VQ[@]}" -c "$VERIFY_SQL" 2>&1 || true)
  as_pg "$PGBIN/pg_ctl" -D "$dir" -w -t 600 stop -m fast >/dev/null
  if [[ $got == "$EXPECT" ]]; then
    VERIFY[$tool.$key]=ok
  else
    VERIFY[$tool.$key]="MISMATCH: got '$got' (recovery state '$state'), expected '$EXPECT'"
    VERIFY_OK=0
    log "  !!! $tool $key: restored cluster differs from the source: ${VERIFY[$tool.$key]}"
  fi
}
log "restores of the last incremental: $RESTORE_ROUNDS round(s)"
for r in $(seq "$RESTORE_ROUNDS"); do
  next_order
  FIRST[restore$r]=${ORDER[0]}
  for tool in "${ORDER[@]}"; do
    dir=$WORK/restore/$tool
    rm -rf "$dir"
    install -d -o postgres -g postgres -m 700 "$dir"
    sync
    label=${LABEL[$tool.incr$INCR_ROUNDS]}
    if [[ $tool == pgfrost ]]; then
      measure "$tool" "restore$r" "$PGFROST" --config "$(pf_conf main)" --log-level info restore --set "$label" \
        --pg-path "$dir" --type immediate --output json
    else
      measure "$tool" "restore$r" pgbackrest --config="$(br_conf main)" --stanza=bench --set="$label" \
        --pg1-path="$dir" --type=immediate restore
    fi
    verify "$tool" "restore$r" "$dir"
    log "  $tool restore $label: $(ms_s "${WALL[$tool.restore$r]}") s, peak RSS $(mib $((TREE[$tool.restore$r] * 1024))) MiB, check ${VERIFY[$tool.restore$r]}"
    rm -rf "$dir"
  done
done
PRESSURE_END=$(cpu_pressure)
log "done measuring"

# ---------------------------------------------------------------------------------------------
keys() { local p=$1 n=$2 k; for k in $(seq "$n"); do echo -n "$p$k "; done; }
ratio() { calc '%.3f' "$1 / $2"; }
declare -A RATIO
for k in $(keys full "$FULL_ROUNDS") $(keys incr "$INCR_ROUNDS") $(keys restore "$RESTORE_ROUNDS"); do
  RATIO[wall.$k]=$(ratio "${WALL[pgfrost.$k]}" "${WALL[pgbackrest.$k]}")
  RATIO[cpu.$k]=$(ratio "${CPU[pgfrost.$k]}" "${CPU[pgbackrest.$k]}")
done
for k in $(keys incr "$INCR_ROUNDS"); do RATIO[growth.$k]=$(ratio "${GROWTH[pgfrost.$k]}" "${GROWTH[pgbackrest.$k]}"); done
tlist() { local m=$1 t=$2 p=$3 n=$4 out=() k; local -n arr=$m; for k in $(keys "$p" "$n"); do out+=("${arr[$t.$k]}"); done; echo "${out[*]}"; }
rlist() { local w=$1 p=$2 n=$3 out=() k; for k in $(keys "$p" "$n"); do out+=("${RATIO[$w.$k]}"); done; echo "${out[*]}"; }
FULL_RATIO=$(rlist wall full "$FULL_ROUNDS" | median)
INCR_WALL_RATIO=$(rlist wall incr "$INCR_ROUNDS" | median)
INCR_GROWTH_MAX=$(rlist growth incr "$INCR_ROUNDS" | tr ' ' '\n' | sort -g | tail -n 1)
INCR_GROWTH_SUM_PF=$(tlist GROWTH pgfrost incr "$INCR_ROUNDS" | tr ' ' '\n' | awk '{s += $1} END {print s}')
INCR_GROWTH_SUM_BR=$(tlist GROWTH pgbackrest incr "$INCR_ROUNDS" | tr ' ' '\n' | awk '{s += $1} END {print s}')
INCR_GROWTH_RATIO=$(ratio "$INCR_GROWTH_SUM_PF" "$INCR_GROWTH_SUM_BR")
RESTORE_RATIO=$(rlist wall restore "$RESTORE_ROUNDS" | median)
# The same ratios split by which tool ran first in the pair: shows whether going second costs.
by_first() { # prefix n tool
  local k out=()
  for k in $(keys "$1" "$2"); do [[ ${FIRST[$k]} == "$3" ]] && out+=("${RATIO[wall.$k]}"); done
  if ((${#out[@]})); then echo "${out[*]}" | median; else echo "-"; fi
}
pass() { awk "BEGIN {print ($1 <= $2) ? \"PASS\" : \"FAIL\"}"; }
FULL_PASS=$(pass "$FULL_RATIO" "$TARGET_FULL")
INCR_PASS=$(pass "$INCR_GROWTH_MAX" "$TARGET_INCR")
RESTORE_PASS=$(pass "$RESTORE_RATIO" "$TARGET_RESTORE")
med_of() { tlist "$1" "$2" "$3" "$4" | median; }
maxof() { tlist "$1" "$2" "$3" "$4" | tr ' ' '\n' | sort -g | tail -n 1; }

row() { printf '%-44s %11s %11s %8s   %s\n' "$@"; }
mibk() { mib $(($1 * 1024)); }
echo
echo "Base backups and restores: pgfrost vs pgBackRest $PGBR_VERSION (baseline); zstd level 3, encryption on"
echo "(pgfrost XChaCha20-Poly1305, pgBackRest aes-256-cbc), process-max 2 for both, local repositories."
echo "Mastodon-shaped cluster: $STATUSES statuses, $FAVOURITES favourites, $FOLLOWS follows, $ACCOUNTS accounts;"
echo "data directory $(mib "$SIZE_FULL") MiB at the full backup, $(mib "$DB_BYTES_END") MiB database at the end; $INCR_ROUNDS day(s) of"
echo "activity (${DAY_S[*]} s each). $(nproc) cores; CPU pressure (some, avg60) $PRESSURE_START% before / $PRESSURE_END% after."
echo
row "" pgfrost pgBackRest "pf/br" target
for k in $(keys full "$FULL_ROUNDS"); do
  row "full backup, round ${k#full} (s)" "$(ms_s "${WALL[pgfrost.$k]}")" "$(ms_s "${WALL[pgbackrest.$k]}")" "${RATIO[wall.$k]}" "(${FIRST[$k]} first)"
done
row "full backup wall time, median ratio" "" "" "$FULL_RATIO" "<= $TARGET_FULL  $FULL_PASS"
row "  median ratio when pgfrost / pgBackRest first" "" "" "$(by_first full "$FULL_ROUNDS" pgfrost)" "/ $(by_first full "$FULL_ROUNDS" pgbackrest)"
row "  CPU s (user+sys, median)" "$(ms_s "$(med_of CPU pgfrost full "$FULL_ROUNDS")")" "$(ms_s "$(med_of CPU pgbackrest full "$FULL_ROUNDS")")" \
  "$(ratio "$(med_of CPU pgfrost full "$FULL_ROUNDS")" "$(med_of CPU pgbackrest full "$FULL_ROUNDS")")" ""
row "  repository growth (MiB, median)" "$(mib "$(med_of GROWTH pgfrost full "$FULL_ROUNDS")")" "$(mib "$(med_of GROWTH pgbackrest full "$FULL_ROUNDS")")" \
  "$(ratio "$(med_of GROWTH pgfrost full "$FULL_ROUNDS")" "$(med_of GROWTH pgbackrest full "$FULL_ROUNDS")")" ""
row "  peak RSS, process tree (MiB, max)" "$(mibk "$(maxof TREE pgfrost full "$FULL_ROUNDS")")" "$(mibk "$(maxof TREE pgbackrest full "$FULL_ROUNDS")")" \
  "$(ratio "$(maxof TREE pgfrost full "$FULL_ROUNDS")" "$(maxof TREE pgbackrest full "$FULL_ROUNDS")")" ""
row "  peak RSS, largest process (MiB, max)" "$(mibk "$(maxof RSS pgfrost full "$FULL_ROUNDS")")" "$(mibk "$(maxof RSS pgbackrest full "$FULL_ROUNDS")")" "" ""
for k in $(keys incr "$INCR_ROUNDS"); do
  row "incremental, day ${k#incr}: wall time (s)" "$(ms_s "${WALL[pgfrost.$k]}")" "$(ms_s "${WALL[pgbackrest.$k]}")" "${RATIO[wall.$k]}" "(${FIRST[$k]} first)"
  row "  repository growth (MiB)" "$(mib "${GROWTH[pgfrost.$k]}")" "$(mib "${GROWTH[pgbackrest.$k]}")" "${RATIO[growth.$k]}" \
    "<= $TARGET_INCR  $(pass "${RATIO[growth.$k]}" "$TARGET_INCR")"
  row "  read from the data directory (MiB)" "$(mib "${READ[pgfrost.$k]}")" "$(mib "${READ[pgbackrest.$k]}")" "" ""
  row "  CPU s (user+sys)" "$(ms_s "${CPU[pgfrost.$k]}")" "$(ms_s "${CPU[pgbackrest.$k]}")" "${RATIO[cpu.$k]}" ""
  row "  peak RSS, process tree (MiB)" "$(mibk "${TREE[pgfrost.$k]}")" "$(mibk "${TREE[pgbackrest.$k]}")" "" ""
done
row "incremental repository growth, all days" "$(mib "$INCR_GROWTH_SUM_PF")" "$(mib "$INCR_GROWTH_SUM_BR")" "$INCR_GROWTH_RATIO" \
  "worst day $INCR_GROWTH_MAX  $INCR_PASS"
row "incremental wall time, median ratio" "" "" "$INCR_WALL_RATIO" ""
for k in $(keys restore "$RESTORE_ROUNDS"); do
  row "restore of the last incr, round ${k#restore} (s)" "$(ms_s "${WALL[pgfrost.$k]}")" "$(ms_s "${WALL[pgbackrest.$k]}")" "${RATIO[wall.$k]}" "(${FIRST[$k]} first)"
done
row "restore wall time, median ratio" "" "" "$RESTORE_RATIO" "<= $TARGET_RESTORE  $RESTORE_PASS"
row "  median ratio when pgfrost / pgBackRest first" "" "" "$(by_first restore "$RESTORE_ROUNDS" pgfrost)" "/ $(by_first restore "$RESTORE_ROUNDS" pgbackrest)"
row "  CPU s (user+sys, median)" "$(ms_s "$(med_of CPU pgfrost restore "$RESTORE_ROUNDS")")" "$(ms_s "$(med_of CPU pgbackrest restore "$RESTORE_ROUNDS")")" \
  "$(ratio "$(med_of CPU pgfrost restore "$RESTORE_ROUNDS")" "$(med_of CPU pgbackrest restore "$RESTORE_ROUNDS")")" ""
row "  peak RSS, process tree (MiB, max)" "$(mibk "$(maxof TREE pgfrost restore "$RESTORE_ROUNDS")")" "$(mibk "$(maxof TREE pgbackrest restore "$RESTORE_ROUNDS")")" \
  "$(ratio "$(maxof TREE pgfrost restore "$RESTORE_ROUNDS")" "$(maxof TREE pgbackrest restore "$RESTORE_ROUNDS")")" ""
row "  peak RSS, largest process (MiB, max)" "$(mibk "$(maxof RSS pgfrost restore "$RESTORE_ROUNDS")")" "$(mibk "$(maxof RSS pgbackrest restore "$RESTORE_ROUNDS")")" "" ""
row "repository at the end (MiB, all)" "$(mib "${REPO_TOTAL[pgfrost]}")" "$(mib "${REPO_TOTAL[pgbackrest]}")" \
  "$(ratio "${REPO_TOTAL[pgfrost]}" "${REPO_TOTAL[pgbackrest]}")" "(set main: 1 full + $INCR_ROUNDS incr + WAL)"
row "  of which WAL archive (MiB)" "$(mib "${REPO_WAL[pgfrost]}")" "$(mib "${REPO_WAL[pgbackrest]}")" "" ""
echo
for k in $(keys restore "$RESTORE_ROUNDS"); do
  for tool in pgfrost pgbackrest; do
    [[ ${VERIFY[$tool.$k]} == ok ]] || echo "!!! RESTORE CHECK FAILED: $tool $k: ${VERIFY[$tool.$k]}"
  done
done
if ((VERIFY_OK)); then
  echo "restored clusters: all $((2 * RESTORE_ROUNDS)) started, recovered and hold the backed-up data (statuses count, sum(favourites_count), text hash; favourites, follows, accounts counts)"
fi
echo "target: full backup wall time <= ${TARGET_FULL}x pgBackRest's: $FULL_PASS (${FULL_RATIO}x)"
echo "target: repository growth of an incremental <= ${TARGET_INCR}x pgBackRest's: $INCR_PASS (worst ${INCR_GROWTH_MAX}x, all days ${INCR_GROWTH_RATIO}x)"
echo "target: restore wall time <= ${TARGET_RESTORE}x pgBackRest's: $RESTORE_PASS (${RESTORE_RATIO}x)"

json_list() { echo "$*" | sed 's/ /,/g'; }
json_bool() { [[ $1 == PASS || $1 == 1 ]] && echo true || echo false; }
tool_json() { # tool prefix n
  printf '{"wall_ms":[%s],"cpu_ms":[%s],"peak_rss_tree_kib":[%s],"peak_rss_max_kib":[%s]' \
    "$(json_list "$(tlist WALL "$1" "$2" "$3")")" "$(json_list "$(tlist CPU "$1" "$2" "$3")")" \
    "$(json_list "$(tlist TREE "$1" "$2" "$3")")" "$(json_list "$(tlist RSS "$1" "$2" "$3")")"
  [[ $2 == restore ]] || printf ',"growth_bytes":[%s],"read_bytes":[%s]' \
    "$(json_list "$(tlist GROWTH "$1" "$2" "$3")")" "$(json_list "$(tlist READ "$1" "$2" "$3")")"
  printf '}'
}
{
  printf 'BENCH_JSON {"bench":"backup","baseline":"pgbackrest %s","cores":%d,"cpu_pressure_avg60":[%s,%s],' \
    "$PGBR_VERSION" "$(nproc)" "$PRESSURE_START" "$PRESSURE_END"
  printf '"cluster":{"statuses":%d,"favourites":%d,"follows":%d,"accounts":%d,"data_bytes_at_full":%d,"db_bytes_end":%d,"load_s":%d,"day_s":[%s]},' \
    "$STATUSES" "$FAVOURITES" "$FOLLOWS" "$ACCOUNTS" "$SIZE_FULL" "$DB_BYTES_END" "$LOAD_S" "$(json_list "${DAY_S[*]}")"
  printf '"full":{"pgfrost":%s,"pgbackrest":%s,"wall_ratios":[%s],"wall_ratio":%s,"target_max":%s,"pass":%s},' \
    "$(tool_json pgfrost full "$FULL_ROUNDS")" "$(tool_json pgbackrest full "$FULL_ROUNDS")" \
    "$(json_list "$(rlist wall full "$FULL_ROUNDS")")" "$FULL_RATIO" "$TARGET_FULL" "$(json_bool "$FULL_PASS")"
  printf '"incr":{"pgfrost":%s,"pgbackrest":%s,"wall_ratios":[%s],"wall_ratio":%s,"growth_ratios":[%s],"growth_ratio_worst":%s,"growth_ratio_all":%s,"target_max":%s,"pass":%s},' \
    "$(tool_json pgfrost incr "$INCR_ROUNDS")" "$(tool_json pgbackrest incr "$INCR_ROUNDS")" \
    "$(json_list "$(rlist wall incr "$INCR_ROUNDS")")" "$INCR_WALL_RATIO" "$(json_list "$(rlist growth incr "$INCR_ROUNDS")")" \
    "$INCR_GROWTH_MAX" "$INCR_GROWTH_RATIO" "$TARGET_INCR" "$(json_bool "$INCR_PASS")"
  printf '"restore":{"pgfrost":%s,"pgbackrest":%s,"wall_ratios":[%s],"wall_ratio":%s,"target_max":%s,"pass":%s,"verified":%s},' \
    "$(tool_json pgfrost restore "$RESTORE_ROUNDS")" "$(tool_json pgbackrest restore "$RESTORE_ROUNDS")" \
    "$(json_list "$(rlist wall restore "$RESTORE_ROUNDS")")" "$RESTORE_RATIO" "$TARGET_RESTORE" "$(json_bool "$RESTORE_PASS")" \
    "$(json_bool "$VERIFY_OK")"
  printf '"repo_bytes":{"pgfrost":%d,"pgbackrest":%d},"repo_wal_bytes":{"pgfrost":%d,"pgbackrest":%d}}\n' \
    "${REPO_TOTAL[pgfrost]}" "${REPO_TOTAL[pgbackrest]}" "${REPO_WAL[pgfrost]}" "${REPO_WAL[pgbackrest]}"
}
((VERIFY_OK)) || exit 2
exit 0
