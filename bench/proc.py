"""Process plumbing for the bench: start and stop servers in their own process groups, wait for
readiness, and read CPU time and memory of a process tree from /proc."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile() -> int:
    """Lift RLIMIT_NOFILE to the hard limit (thousands of held streams need thousands of fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """pid and all its live descendants (gateways may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the given processes, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy, all cores (the first line of /proc/stat, less idle and
    iowait): over a measurement, minus the bench's own processes, what other processes took."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def status_kb(pids: list[int], key: str) -> int:
    """Sum of one /proc/<pid>/status field (VmRSS, VmHWM) in kB over the processes."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def reset_peak(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, `echo 5 > clear_refs`) so a peak is per scenario."""
    ok = True
    for p in pids:
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


class Server:
    """A child process in its own session, logging to a file; stop() kills its whole group."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: str | None = None):
        self.name, self.argv, self.log = name, argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._logf, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, port: int, path: str | None, timeout: float = 30.0) -> None:
        """Ready when GET path answers 200 (or, with path None, when a TCP connect succeeds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if path is None:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    return
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready on port {port} after {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._logf.close()
