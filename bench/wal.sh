#!/bin/bash
# WAL archiving benchmark: pgfrost against pgBackRest on the same real WAL segments.
#
#   bash bench/wal.sh            (as root; see bench/README.md, "WAL archiving")
#
# Environment: NSEG (64), REPS (3), SCALE (pgbench scale, 30), RSS_SEGS (16),
# KEEP=1 keeps the scratch directory, PGBIN (/usr/lib/postgresql/15/bin).
#
# pgBackRest is the baseline: every figure that matters is a ratio against it, measured in the
# same run, with the two tools' calls interleaved so that machine noise hits both.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=$ROOT/bench/wal/push-loop.sh
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
NSEG=${NSEG:-64}
REPS=${REPS:-3}
SCALE=${SCALE:-30}
RSS_SEGS=${RSS_SEGS:-16}
KEEP=${KEEP:-0}
TARGET_SEQ_RATIO=0.80     # pgfrost per-segment wall time / pgBackRest's, at most
TARGET_BATCH_MBS=150      # pgfrost batch throughput, MB/s (10^6 bytes) of WAL, at least

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL and both tools run as postgres through runuser)"
[[ -x $PGBIN/initdb ]] || die "PostgreSQL binaries not found in $PGBIN"
id postgres >/dev/null 2>&1 || die "no postgres user"
if ! command -v pgbackrest >/dev/null; then
  log "installing pgbackrest (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y pgbackrest >/dev/null
fi
if [[ ! -x /usr/bin/time ]]; then
  log "installing time (for peak RSS)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null
fi

WORK=$(mktemp -d /tmp/pgfrost-walbench.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
SOCK=$WORK/sock
ARCH=$WORK/walarch
PORT=$((50000 + RANDOM % 10000))   # no TCP listener; only names the socket file

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [[ -f $PGDATA/postmaster.pid ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" stop -m immediate >/dev/null 2>&1
  fi
  # pgBackRest's async archive-push processes detach from us; end the ones of this run (their
  # command lines name the scratch directory), each by its pid.
  local pid
  for pid in $(pgrep -f -- "$WORK/" 2>/dev/null); do kill "$pid" 2>/dev/null; done
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
PGFROST=$WORK/bin/pgfrost
PGBR_VERSION=$(pgbackrest version | awk '{print $2}')

# ---------------------------------------------------------------------------------------------
log "creating a scratch cluster and generating real WAL (pgbench, scale $SCALE)"
install -d -o postgres -g postgres -m 700 "$PGDATA"
install -d -o postgres -g postgres -m 755 "$SOCK" "$ARCH" "$WORK/pgfrost" "$WORK/pgbackrest" "$WORK/batch" "$WORK/out"
as_pg "$PGBIN/initdb" -D "$PGDATA" --data-checksums -U postgres -A trust >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $ARCH/%f'
shared_buffers = 256MB
max_wal_size = 1GB
# Checkpoints as often as allowed: the full-page images that follow each one are a large share of
# a busy server's WAL, and they make the OLTP phase produce WAL quickly.
checkpoint_timeout = 30s
# Only speeds up generating the WAL; the records written are the same.
fsync = off
synchronous_commit = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/out/postgres.log" -w start >/dev/null
PSQL=("$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -X -q -At -v ON_ERROR_STOP=1 -d postgres)
PGBENCH=("$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U postgres)

archived() { find "$ARCH" -maxdepth 1 -name '[0-9A-F]*' -printf . | wc -c; }
drain_archiver() {
  local i
  for i in $(seq 300); do
    [[ -z $(find "$PGDATA/pg_wal/archive_status" -name '*.ready' -print -quit) ]] && return 0
    sleep 0.2
  done
  die "the archiver did not catch up (see $WORK/out/postgres.log)"
}

as_pg "${PGBENCH[@]}" -i -q -s "$SCALE" postgres >"$WORK/out/pgbench-init.log" 2>&1 \
  || { cat "$WORK/out/pgbench-init.log" >&2; die "pgbench -i failed"; }
drain_archiver
N_INIT=$(archived)
# OLTP (random updates of a table larger than shared_buffers: many full-page images, as on a
# busy server) until there are NSEG segments, at least half of them from this phase.
rounds=0
while (( $(archived) < NSEG || $(archived) - N_INIT < NSEG / 2 )); do
  (( ++rounds <= 20 )) || die "workload produced only $(archived) segments"
  as_pg "${PGBENCH[@]}" -n -c 2 -j 2 -T 10 postgres >>"$WORK/out/pgbench-run.log" 2>&1 \
    || { tail "$WORK/out/pgbench-run.log" >&2; die "pgbench failed"; }
  drain_archiver
done
mapfile -t SEGS < <(find "$ARCH" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' | sort | tail -n "$NSEG")
(( ${#SEGS[@]} == NSEG )) || die "only ${#SEGS[@]} segments archived"
SEG_PATHS=("${SEGS[@]/#/$ARCH/}")
WAL_BYTES=$(cat "${SEG_PATHS[@]}" | wc -c)   # also warms the page cache for both tools
TPS=$(grep -ho "tps = [0-9.]*" "$WORK/out/pgbench-run.log" | awk '{s += $3; n++} END {printf "%.0f", n ? s / n : 0}')
log "WAL: ${#SEGS[@]} segments ${SEGS[0]}..${SEGS[-1]} ($((WAL_BYTES / 1048576)) MiB; $N_INIT archived after pgbench -i, $(archived) in all; pgbench ~$TPS tps)"

# ---------------------------------------------------------------------------------------------
# One fresh, empty repository per measured run and tool, each with its stanza created against
# the running cluster (both tools check every segment's system identifier against it).
RUNS=()
for r in $(seq "$REPS"); do RUNS+=("seq$r" "batch$r"); done
RUNS+=(rss rssbatch)
log "creating ${#RUNS[@]} repositories per tool (${RUNS[*]})"

pf_conf() { echo "$WORK/pgfrost/$1/pgfrost.toml"; }
br_conf() { echo "$WORK/pgbackrest/$1/pgbackrest.conf"; }
for run in "${RUNS[@]}"; do
  async=n
  [[ $run == *batch* ]] && async=y
  # pgfrost
  d=$WORK/pgfrost/$run
  install -d -o postgres -g postgres -m 700 "$d" "$d/spool"
  head -c 24 /dev/urandom | base64 >"$d/passphrase"
  chown postgres:postgres "$d/passphrase"
  chmod 600 "$d/passphrase"
  cat >"$(pf_conf "$run")" <<EOF
repo = '$d/repo'
stanza = 'bench'
spool-path = '$d/spool'
key-file = '$d/key/key.json'
compress-level = 3
process-max = 2
log-level = 'warn'
archive-async = '$async'
pg-path = '$PGDATA'
pg-socket-path = '$SOCK'
pg-port = $PORT
pg-user = 'postgres'
EOF
  chown postgres:postgres "$(pf_conf "$run")"
  {
    as_pg "$PGFROST" --config "$(pf_conf "$run")" --passphrase-file "$d/passphrase" repo-create &&
      as_pg "$PGFROST" --config "$(pf_conf "$run")" --passphrase-file "$d/passphrase" key unlock &&
      as_pg "$PGFROST" --config "$(pf_conf "$run")" stanza-create
  } >"$d/setup.log" 2>&1 || { cat "$d/setup.log" >&2; die "pgfrost set-up of $run failed"; }
  [[ $run == rssbatch ]] && continue # pgfrost only (see the RSS pass)
  # pgBackRest
  d=$WORK/pgbackrest/$run
  install -d -o postgres -g postgres -m 700 "$d" "$d/repo" "$d/spool" "$d/lock"
  cat >"$(br_conf "$run")" <<EOF
[global]
repo1-path=$d/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(head -c 48 /dev/urandom | base64 -w0)
compress-type=zst
compress-level=3
log-level-console=warn
log-level-stderr=warn
log-level-file=off
lock-path=$d/lock
spool-path=$d/spool
process-max=2
archive-async=$async

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SOCK
pg1-port=$PORT
pg1-user=postgres
EOF
  chown postgres:postgres "$(br_conf "$run")"
  chmod 600 "$(br_conf "$run")"
  as_pg pgbackrest --config="$(br_conf "$run")" --stanza=bench stanza-create >"$d/setup.log" 2>&1 \
    || { cat "$d/setup.log" >&2; die "pgBackRest stanza-create of $run failed"; }
done
# Both tools' stanzas are recorded; measure on a quiet machine.
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w stop -m fast >/dev/null

# The tools archive from data-directory-like copies, as PostgreSQL calls archive_command: cwd =
# data directory, %p = pg_wal/<name>. A copy holds PG_VERSION, global/pg_control (pgBackRest
# checks it) and pg_wal/ with hard links to the segments; with "ready", every segment is queued
# (archive_status/<name>.ready) as when archiving has fallen behind.
make_datadir() { # dir [ready]
  local d=$1 s
  install -d -o postgres -g postgres -m 700 "$d" "$d/global" "$d/pg_wal" "$d/pg_wal/archive_status"
  cp "$PGDATA/PG_VERSION" "$d/"
  cp "$PGDATA/global/pg_control" "$d/global/"
  for s in "${SEGS[@]}"; do
    ln "$ARCH/$s" "$d/pg_wal/$s"
    [[ ${2:-} == ready ]] && : >"$d/pg_wal/archive_status/$s.ready"
  done
  chown -R postgres:postgres "$d"
}
REL_SEGS=("${SEGS[@]/#/pg_wal/}")
make_datadir "$WORK/wal-src"
for run in "${RUNS[@]}"; do
  [[ $run == *batch* ]] && continue
  sed -i "s|^pg1-path=.*|pg1-path=$WORK/wal-src|" "$(br_conf "$run")"
done

# ---------------------------------------------------------------------------------------------
# Helpers for the measured runs.
wal_objects() { # tool run -> number of WAL segments stored in that run's repository
  local dir
  if [[ $1 == pgfrost ]]; then dir=$WORK/pgfrost/$2/repo; else dir=$WORK/pgbackrest/$2/repo/archive; fi
  find "$dir" -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}([-.].*)?' -printf . | wc -c
}
tool_arg() { if [[ $1 == pgfrost ]]; then echo "pgfrost:$PGFROST"; else echo pgbackrest; fi; }
conf_of() { if [[ $1 == pgfrost ]]; then pf_conf "$2"; else br_conf "$2"; fi; }
wait_pgbackrest_async() { # the async process may still be exiting after the last call returned
  local i
  for i in $(seq 300); do
    pgrep -f -- "$(br_conf "$1")" >/dev/null || return 0
    sleep 0.1
  done
  die "pgBackRest async process of $1 did not finish"
}
check_stored() { # tool run expected
  local n
  n=$(wal_objects "$1" "$2")
  [[ $n == "$3" ]] || die "$1 $2: $n segments in the repository, expected $3"
}
total_ms() { awk '$1 == "TOTAL" {print $2}' "$WORK/out/$1-$2.txt"; }
cpu_ms() { awk '$1 == "CPU" {print $2 + $3}' "$WORK/out/$1-$2.txt"; } # user + system
push_run() { # tool run datadir relative-segment-paths...  -> out/<tool>-<run>.txt
  local tool=$1 run=$2 dir=$3
  shift 3
  as_pg env PUSH_CWD="$dir" ${RSS_OUT:+RSS_OUT="$RSS_OUT"} "$HELPER" \
    "$WORK/out/$tool-$run.txt" "$(tool_arg "$tool")" "$(conf_of "$tool" "$run")" -- "$@" \
    || die "$tool $run failed"
  if [[ $tool == pgbackrest && $run == batch* ]]; then wait_pgbackrest_async "$run"; fi
  check_stored "$tool" "$run" $#
}
# Which tool goes first alternates between repetitions (and, within one, between segments).
order() { if (($1 % 2)); then echo pgfrost pgbackrest; else echo pgbackrest pgfrost; fi; }

# CPU pressure (share of time some task waited for a CPU, last 60 s): how noisy the machine is.
cpu_pressure() { awk -F'[ =]' '/^some/ {print $5}' /proc/pressure/cpu 2>/dev/null || echo null; }
PRESSURE_START=$(cpu_pressure)
declare -A SEQ_MS SEQ_CPU BATCH_MS
# (a) one process per segment, sequential, as PostgreSQL's archiver runs archive_command. The two
# tools' calls are interleaved segment by segment (pgfrost, pgBackRest, pgBackRest, pgfrost, ...),
# each into its own fresh repository; a tool's figure is the sum of its calls.
for r in $(seq "$REPS"); do
  args=()
  for tool in $(order "$r"); do
    args+=("$WORK/out/$tool-seq$r.txt" "$(tool_arg "$tool")" "$(conf_of "$tool" "seq$r")")
  done
  as_pg env PUSH_CWD="$WORK/wal-src" "$HELPER" "${args[@]}" -- "${REL_SEGS[@]}" || die "per-segment run $r failed"
  for tool in pgfrost pgbackrest; do
    check_stored "$tool" "seq$r" "$NSEG"
    SEQ_MS[$tool.$r]=$(total_ms "$tool" "seq$r")
    SEQ_CPU[$tool.$r]=$(cpu_ms "$tool" "seq$r")
  done
  log "per-segment run $r/$REPS: pgfrost ${SEQ_MS[pgfrost.$r]} ms, pgBackRest ${SEQ_MS[pgbackrest.$r]} ms for $NSEG segments"
done

# (b) batch/async: pg_wal/ with all NSEG segments queued (.ready), then the same NSEG calls in
# order; the first call (or its background process) ships the rest ahead.
for r in $(seq "$REPS"); do
  for tool in $(order "$r"); do
    d=$WORK/batch/$tool-$r
    make_datadir "$d" ready
    sed -i "s|^pg1-path=.*|pg1-path=$d|" "$(br_conf "batch$r")"
    push_run "$tool" "batch$r" "$d" "${REL_SEGS[@]}"
    BATCH_MS[$tool.$r]=$(total_ms "$tool" "batch$r")
    first=$(head -n 1 "$WORK/out/$tool-batch$r.txt" | awk '{print $2}')
    log "batch run $r/$REPS $tool: ${BATCH_MS[$tool.$r]} ms for $NSEG segments (first call ${first} ms)"
    rm -rf "$WORK/batch/$tool-$r"
  done
done

# Peak RSS of one archive-push process (separate pass: /usr/bin/time adds a process per call),
# and of pgfrost's first batch call, which ships the whole queue itself. (pgBackRest ships from a
# detached async process that /usr/bin/time cannot follow; its foreground RSS is not comparable.)
declare -A RSS_MAX RSS_MED
for tool in pgfrost pgbackrest; do
  RSS_OUT=$WORK/out/$tool-rss.kib push_run "$tool" rss "$WORK/wal-src" "${REL_SEGS[@]:0:RSS_SEGS}"
  RSS_MAX[$tool]=$(sort -n "$WORK/out/$tool-rss.kib" | tail -n 1)
  RSS_MED[$tool]=$(sort -n "$WORK/out/$tool-rss.kib" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
done
make_datadir "$WORK/batch/rssbatch" ready
RSS_OUT=$WORK/out/pgfrost-rssbatch.kib push_run pgfrost rssbatch "$WORK/batch/rssbatch" "${REL_SEGS[@]}"
RSS_BATCH_PF=$(head -n 1 "$WORK/out/pgfrost-rssbatch.kib")
PRESSURE_END=$(cpu_pressure)
log "done measuring"

# ---------------------------------------------------------------------------------------------
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }
vals() { local k t=$2 out=(); local -n arr=$1; for k in $(seq "$REPS"); do out+=("${arr[$t.$k]}"); done; echo "${out[*]}"; }
mib() { calc '%.1f' "$1 / 1048576"; }
json_list() { echo "$*" | sed 's/ /, /g'; }
json_bool() { [[ $1 == PASS ]] && echo true || echo false; }

declare -A SEQ_SEG_MS SEQ_SEG_CPU SEQ_CALL_MED BATCH_MBS BATCH_MS_MED BATCH_FIRST_MED BATCH_LATER_MED REPO_BYTES CRATIO
for tool in pgfrost pgbackrest; do
  SEQ_SEG_MS[$tool]=$(calc '%.1f' "$(vals SEQ_MS "$tool" | median) / $NSEG")
  SEQ_SEG_CPU[$tool]=$(calc '%.1f' "$(vals SEQ_CPU "$tool" | median) / $NSEG")
  SEQ_CALL_MED[$tool]=$(cat "$WORK"/out/"$tool"-seq[0-9]*.txt | awk '$1 != "TOTAL" && $1 != "CPU" {print $2}' | median)
  BATCH_MS_MED[$tool]=$(vals BATCH_MS "$tool" | median)
  BATCH_MBS[$tool]=$(calc '%.1f' "$WAL_BYTES / 1e6 / (${BATCH_MS_MED[$tool]} / 1000)")
  BATCH_FIRST_MED[$tool]=$(for f in "$WORK"/out/"$tool"-batch[0-9]*.txt; do head -n 1 "$f" | awk '{print $2}'; done | median)
  BATCH_LATER_MED[$tool]=$(cat "$WORK"/out/"$tool"-batch[0-9]*.txt | awk 'FNR > 1 && $1 != "TOTAL" && $1 != "CPU" {print $2}' | median)
  REPO_BYTES[$tool]=$(du -sb "$WORK/$tool/seq1/repo" | awk '{print $1}')
  CRATIO[$tool]=$(calc '%.2f' "$WAL_BYTES / ${REPO_BYTES[$tool]}")
done
# Paired ratios per repetition (the two runs of a repetition are adjacent in time), then the
# median of those: the figure the targets are checked against.
seq_ratios=() batch_ratios=()
for r in $(seq "$REPS"); do
  seq_ratios+=("$(calc '%.3f' "${SEQ_MS[pgfrost.$r]} / ${SEQ_MS[pgbackrest.$r]}")")
  batch_ratios+=("$(calc '%.3f' "${BATCH_MS[pgbackrest.$r]} / ${BATCH_MS[pgfrost.$r]}")") # throughput ratio
done
SEQ_RATIO=$(echo "${seq_ratios[*]}" | median)
BATCH_RATIO=$(echo "${batch_ratios[*]}" | median) # throughput, pgfrost / pgBackRest
CPU_RATIO=$(calc '%.3f' "${SEQ_SEG_CPU[pgfrost]} / ${SEQ_SEG_CPU[pgbackrest]}")
REPO_RATIO=$(calc '%.3f' "${REPO_BYTES[pgfrost]} / ${REPO_BYTES[pgbackrest]}")
RSS_RATIO=$(calc '%.2f' "${RSS_MAX[pgfrost]} / ${RSS_MAX[pgbackrest]}")
SEQ_PASS=$(awk "BEGIN {print ($SEQ_RATIO <= $TARGET_SEQ_RATIO) ? \"PASS\" : \"FAIL\"}")
BATCH_PASS=$(awk "BEGIN {print (${BATCH_MBS[pgfrost]} >= $TARGET_BATCH_MBS) ? \"PASS\" : \"FAIL\"}")

row() { printf '%-38s %10s %12s %10s   %s\n' "$@"; }
echo
echo "WAL archiving: pgfrost vs pgBackRest $PGBR_VERSION (baseline), zstd level 3, encryption on"
echo "$NSEG real segments ($(mib "$WAL_BYTES") MiB; pgbench scale $SCALE, data checksums), $REPS interleaved repetitions,"
echo "fresh repositories per run, $(nproc) cores, CPU pressure (some, avg60) $PRESSURE_START% before / $PRESSURE_END% after"
echo
row "" pgfrost pgBackRest "pf/br" target
row "per segment, 1 process each (ms)" "${SEQ_SEG_MS[pgfrost]}" "${SEQ_SEG_MS[pgbackrest]}" "$SEQ_RATIO" "<= $TARGET_SEQ_RATIO  $SEQ_PASS"
row "  median single call (ms)" "$(calc '%.1f' "${SEQ_CALL_MED[pgfrost]}")" "$(calc '%.1f' "${SEQ_CALL_MED[pgbackrest]}")" "" ""
row "  CPU per segment (ms, user+sys)" "${SEQ_SEG_CPU[pgfrost]}" "${SEQ_SEG_CPU[pgbackrest]}" "$CPU_RATIO" ""
row "batch/async (MB/s of WAL)" "${BATCH_MBS[pgfrost]}" "${BATCH_MBS[pgbackrest]}" "$BATCH_RATIO" "pgfrost >= $TARGET_BATCH_MBS  $BATCH_PASS"
row "  first call (ms)" "$(calc '%.0f' "${BATCH_FIRST_MED[pgfrost]}")" "$(calc '%.0f' "${BATCH_FIRST_MED[pgbackrest]}")" "" ""
row "  median later call (ms)" "$(calc '%.1f' "${BATCH_LATER_MED[pgfrost]}")" "$(calc '%.1f' "${BATCH_LATER_MED[pgbackrest]}")" "" ""
row "repository after $NSEG segments (MiB)" "$(mib "${REPO_BYTES[pgfrost]}")" "$(mib "${REPO_BYTES[pgbackrest]}")" "$REPO_RATIO" ""
row "  compression ratio (WAL/repository)" "${CRATIO[pgfrost]}" "${CRATIO[pgbackrest]}" "" ""
row "peak RSS, one archive-push (MiB)" "$(mib $((RSS_MAX[pgfrost] * 1024)))" "$(mib $((RSS_MAX[pgbackrest] * 1024)))" "$RSS_RATIO" ""
row "  median of $RSS_SEGS calls (MiB)" "$(mib $((RSS_MED[pgfrost] * 1024)))" "$(mib $((RSS_MED[pgbackrest] * 1024)))" "" ""
row "peak RSS, batch first call (MiB)" "$(mib $((RSS_BATCH_PF * 1024)))" "n/a" "" "(pgBackRest: detached process)"
echo
echo "repetitions (ms for $NSEG segments, sum of the calls)"
for r in $(seq "$REPS"); do
  printf '  rep %d  per-segment  pgfrost %9s  pgBackRest %9s  time ratio pf/br %s\n' "$r" "${SEQ_MS[pgfrost.$r]}" "${SEQ_MS[pgbackrest.$r]}" "${seq_ratios[r - 1]}"
  printf '  rep %d  batch        pgfrost %9s  pgBackRest %9s  throughput ratio pf/br %s\n' "$r" "${BATCH_MS[pgfrost.$r]}" "${BATCH_MS[pgbackrest.$r]}" "${batch_ratios[r - 1]}"
done
echo
echo "target: per-segment wall time <= ${TARGET_SEQ_RATIO}x pgBackRest's: $SEQ_PASS (${SEQ_RATIO}x)"
echo "target: batch mode >= $TARGET_BATCH_MBS MB/s of WAL on $(nproc) cores: $BATCH_PASS (${BATCH_MBS[pgfrost]} MB/s = $(calc '%.1f' "${BATCH_MBS[pgfrost]} * 1e6 / 1048576") MiB/s; ${BATCH_RATIO}x pgBackRest)"

printf 'BENCH_JSON {"bench":"wal","baseline":"pgbackrest %s","segments":%d,"wal_bytes":%d,"reps":%d,"cores":%d,"cpu_pressure_avg60":[%s, %s],' \
  "$PGBR_VERSION" "$NSEG" "$WAL_BYTES" "$REPS" "$(nproc)" "$PRESSURE_START" "$PRESSURE_END"
printf '"seq":{"pgfrost_ms_per_segment":%s,"pgbackrest_ms_per_segment":%s,"pgfrost_median_call_ms":%s,"pgbackrest_median_call_ms":%s,"pgfrost_cpu_ms_per_segment":%s,"pgbackrest_cpu_ms_per_segment":%s,"cpu_ratio":%s,"pgfrost_total_ms":[%s],"pgbackrest_total_ms":[%s],"ratios":[%s],"ratio":%s,"target_ratio_max":%s,"pass":%s},' \
  "${SEQ_SEG_MS[pgfrost]}" "${SEQ_SEG_MS[pgbackrest]}" "${SEQ_CALL_MED[pgfrost]}" "${SEQ_CALL_MED[pgbackrest]}" \
  "${SEQ_SEG_CPU[pgfrost]}" "${SEQ_SEG_CPU[pgbackrest]}" "$CPU_RATIO" \
  "$(json_list "$(vals SEQ_MS pgfrost)")" "$(json_list "$(vals SEQ_MS pgbackrest)")" "$(json_list "${seq_ratios[*]}")" \
  "$SEQ_RATIO" "$TARGET_SEQ_RATIO" "$(json_bool "$SEQ_PASS")"
printf '"batch":{"pgfrost_mb_s":%s,"pgbackrest_mb_s":%s,"pgfrost_total_ms":[%s],"pgbackrest_total_ms":[%s],"pgfrost_first_call_ms":%s,"pgbackrest_first_call_ms":%s,"pgfrost_later_call_ms":%s,"pgbackrest_later_call_ms":%s,"throughput_ratios":[%s],"throughput_ratio":%s,"target_mb_s_min":%s,"pass":%s},' \
  "${BATCH_MBS[pgfrost]}" "${BATCH_MBS[pgbackrest]}" "$(json_list "$(vals BATCH_MS pgfrost)")" "$(json_list "$(vals BATCH_MS pgbackrest)")" \
  "${BATCH_FIRST_MED[pgfrost]}" "${BATCH_FIRST_MED[pgbackrest]}" "${BATCH_LATER_MED[pgfrost]}" "${BATCH_LATER_MED[pgbackrest]}" \
  "$(json_list "${batch_ratios[*]}")" "$BATCH_RATIO" "$TARGET_BATCH_MBS" "$(json_bool "$BATCH_PASS")"
printf '"repo_bytes":{"pgfrost":%d,"pgbackrest":%d,"ratio":%s},"compression_ratio":{"pgfrost":%s,"pgbackrest":%s},' \
  "${REPO_BYTES[pgfrost]}" "${REPO_BYTES[pgbackrest]}" "$REPO_RATIO" "${CRATIO[pgfrost]}" "${CRATIO[pgbackrest]}"
printf '"peak_rss_kib":{"pgfrost":%d,"pgbackrest":%d,"ratio":%s},"median_rss_kib":{"pgfrost":%d,"pgbackrest":%d},"pgfrost_batch_first_call_rss_kib":%d}\n' \
  "${RSS_MAX[pgfrost]}" "${RSS_MAX[pgbackrest]}" "$RSS_RATIO" "${RSS_MED[pgfrost]}" "${RSS_MED[pgbackrest]}" "$RSS_BATCH_PF"
