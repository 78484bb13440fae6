#!/bin/bash
# Helper for bench/wal.sh; runs as the postgres user, like PostgreSQL's archiver.
#
#   push-loop.sh OUT TOOL CONF [OUT TOOL CONF]... -- SEGMENT...
#
# Runs one archive-push process per segment and per tool, in segment order, and writes to each
# OUT one line per call, "<segment> <milliseconds>", then "TOTAL <milliseconds>" (the sum of that
# tool's calls) and "CPU <user ms> <system ms>" (the CPU time of its calls and their waited-for
# children, from bash's time keyword: no extra process). TOOL is "pgfrost:<binary>" or
# "pgbackrest"; CONF is its config file.
#
# With two tools the calls are interleaved segment by segment (A B, B A, A B, ...): on a noisy
# machine each burst of noise then hits both tools instead of one whole run.
#
# With RSS_OUT set, each call runs under /usr/bin/time and its peak RSS (KiB) is appended to
# RSS_OUT. bench/wal.sh does that only in a separate pass, so the timed runs pay no wrapper cost.
# With PUSH_CWD set, the calls run there (PostgreSQL runs archive_command in the data directory
# with %p = pg_wal/<name>; pgBackRest's async mode insists on that layout).
set -u

outs=() cmds=()
while [[ $# -gt 0 && $1 != -- ]]; do
  [[ $# -ge 3 ]] || { echo "push-loop.sh: OUT TOOL CONF expected" >&2; exit 2; }
  out=$(realpath -m "$1") tool=$2 conf=$3
  shift 3
  case $tool in
    pgfrost:*) cmd="${tool#pgfrost:} --config $conf archive-push" ;;
    pgbackrest) cmd="pgbackrest --config=$conf --stanza=bench archive-push" ;;
    *) echo "push-loop.sh: unknown tool $tool" >&2; exit 2 ;;
  esac
  [[ -n ${RSS_OUT:-} ]] && cmd="/usr/bin/time -a -o $RSS_OUT -f %M $cmd"
  outs+=("$out")
  cmds+=("$cmd") # paths in bench/wal.sh's scratch directory contain no blanks
  : >"$out.err"
  : >"$out.cpu"
done
shift # --
[[ -n ${PUSH_CWD:-} ]] && { cd "$PUSH_CWD" || exit 1; }
n=${#cmds[@]}

# $EPOCHREALTIME needs no fork (date(1) would add a process to every call of both tools), and
# the arithmetic is done after the loop, so nothing but the archive-push processes is timed.
declare -a t0 t1 # index: segment * n + tool
TIMEFORMAT='%3U %3S'
i=0
for seg in "$@"; do
  for ((k = 0; k < n; k++)); do
    j=$k
    ((i % 2)) && j=$((n - 1 - k))
    t0[i * n + j]=$EPOCHREALTIME
    # shellcheck disable=SC2086 # cmds[] are word lists
    if ! { time ${cmds[j]} "$seg" 2>>"${outs[j]}.err"; } 2>>"${outs[j]}.cpu"; then
      echo "push-loop.sh: ${cmds[j]} $seg failed:" >&2
      tail -n 20 "${outs[j]}.err" >&2
      exit 1
    fi
    t1[i * n + j]=$EPOCHREALTIME
  done
  i=$((i + 1))
done

for ((j = 0; j < n; j++)); do
  total=0 i=0
  for seg in "$@"; do
    d=$(( ${t1[i * n + j]/./} - ${t0[i * n + j]/./} ))
    total=$((total + d))
    printf '%s %d.%03d\n' "${seg##*/}" $((d / 1000)) $((d % 1000))
    i=$((i + 1))
  done >"${outs[j]}"
  printf 'TOTAL %d.%03d\n' $((total / 1000)) $((total % 1000)) >>"${outs[j]}"
  awk '{u += $1; s += $2} END {printf "CPU %.1f %.1f\n", u * 1000, s * 1000}' "${outs[j]}.cpu" >>"${outs[j]}"
  if [[ -s ${outs[j]}.err ]]; then
    echo "push-loop.sh: ${cmds[j]} wrote to stderr:" >&2
    tail -n 20 "${outs[j]}.err" >&2
  fi
  rm -f "${outs[j]}.err" "${outs[j]}.cpu"
done
