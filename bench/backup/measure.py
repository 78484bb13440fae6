#!/usr/bin/env python3
"""Run one command as another user and measure it, for bench/backup.sh.

    measure.py RESULT STDOUT STDERR USER -- COMMAND [ARG...]

Writes RESULT as "key value" lines:

    exit       the command's exit status (or 128 + signal)
    wall_ms    wall time from fork to exit
    cpu_ms     user + system CPU of the command and every descendant it waited for
    maxrss_kib largest peak RSS of any single process of the tree (getrusage ru_maxrss, what
               /usr/bin/time's %M reports)
    tree_kib   peak of the summed RSS of the whole process tree, sampled every 100 ms: a tool
               that works in several processes (pgBackRest's process-max local workers) is
               charged for all of them at once, a threaded one (pgfrost) for its one process

Each tick scans /proc/*/stat for the parent links (a few hundred small reads, a few ms) and reads
statm of the tree's processes: about 2% of one core, the same for both tools.
"""
import os
import pwd
import sys
import time

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_rss_kib(root):
    kids = children_map()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(kids.get(pid, ()))
    return total


def main():
    if len(sys.argv) < 7 or sys.argv[5] != "--":
        sys.exit(__doc__)
    result, out, err, user = sys.argv[1:5]
    cmd = sys.argv[6:]
    pw = pwd.getpwnam(user)
    env = dict(os.environ, HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            os.execvpe(cmd[0], cmd, env)
        except Exception as e:  # noqa: BLE001 - report anything, then fail
            os.write(2, f"measure.py: cannot run {cmd[0]}: {e}\n".encode())
        os._exit(127)
    os.close(fd_out)
    os.close(fd_err)
    peak = 0
    while True:
        wpid, status, ru = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            break
        peak = max(peak, tree_rss_kib(pid))
        time.sleep(0.1)
    wall = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code
    with open(result, "w") as f:
        f.write(f"exit {code}\n")
        f.write(f"wall_ms {round(wall * 1000)}\n")
        f.write(f"cpu_ms {round((ru.ru_utime + ru.ru_stime) * 1000)}\n")
        f.write(f"maxrss_kib {ru.ru_maxrss}\n")
        f.write(f"tree_kib {max(peak, ru.ru_maxrss)}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
