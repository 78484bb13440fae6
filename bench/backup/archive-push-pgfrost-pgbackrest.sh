#!/bin/bash
# archive_command of bench/backup.sh's cluster:
#
#   archive_command = '<this file> <scratch dir> %p'
#
# Pushes %p into every repository named in <scratch dir>/archive-targets, one "pgfrost CONFIG" or
# "pgbackrest CONFIG" per line, in that order, and fails (PostgreSQL retries) unless all succeed.
# The bench rewrites that file (atomically) to put the repository of the tool about to be timed
# first, so that neither tool's backup waits for the other tool's archive-push of its last
# segment. (pgBackRest's backup insists that archive_command contains "pgbackrest": hence the
# name of this file.)
set -u
work=$1
wal=$2
while read -r tool conf; do
  case $tool in
    pgfrost) "$work/bin/pgfrost" --config "$conf" archive-push "$wal" || exit 1 ;;
    pgbackrest) pgbackrest --config="$conf" --stanza=bench archive-push "$wal" || exit 1 ;;
    *) echo "archive-targets: unknown tool '$tool'" >&2; exit 1 ;;
  esac
done <"$work/archive-targets"
