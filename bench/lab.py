# Theory of operation: the bench's process lab. A Lab starts every process a
# run needs (redis-servers, nodes, twemproxy) in one work directory, records
# them for cleanup, reads their CPU time and peak RSS from /proc, and a
# CpuMeter measures what other processes used of the machine meanwhile, so a
# noisy run can be told from a clean one. Used by run.py and targets.py.
from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0  # seconds for a process to answer PING
BENCH_TIMEOUT = 300.0  # seconds for one redis-benchmark invocation
STOP_TIMEOUT = 5.0  # seconds between terminate and kill
FOREIGN_CPU = 0.10  # share of all CPUs used by others during the run that taints the figures
Row = dict[str, Any]  # one sample or summary cell, as written to --json
MODES = {"P1": 1, "P16": 16}
TESTS = ("SET", "GET")


def free_port() -> int:
    """A currently free loopback port (bind to :0, read it, close)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    watch_rss: bool
    target: str = ""  # the target it was started for


@dataclass
class Lab:
    """Owns a temp dir and every process started for the run."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    rss: dict[str, dict[str, int]] = field(default_factory=dict)
    target: str = ""  # the target being started; its processes are tagged with it
    #: The trinomite source tree nodes run from (a baseline worktree for "@base" targets).
    code: Path = REPO
    #: Added to every process and file name (keeps a baseline twin's apart).
    suffix: str = ""

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / (self.suffix + name)
        path.write_text(text)
        return path

    def spawn(self, name: str, argv: list[str], *, watch_rss: bool = False) -> Proc:
        name += self.suffix
        log = self.workdir / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(self.code)}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
            )
        proc = Proc(name, popen, log, watch_rss, self.target)
        self.procs.append(proc)
        return proc

    #: Whether a server answers on a port, and what that is called in errors
    #: (a memcached lab overrides both).
    ready_what = "answer PING"

    def is_ready(self, port: int) -> bool:
        return ping(port)

    def wait_ready(self, proc: Proc, port: int, timeout: float = READY_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}){tail(proc)}")
            if self.is_ready(port):
                return port
            time.sleep(0.1)
        raise RuntimeError(
            f"{proc.name} did not {self.ready_what} on :{port} in {timeout}s{tail(proc)}"
        )

    def start_server(
        self, name: str, argv_for: Callable[[int], list[str]], attempts: int = 3
    ) -> int:
        """Start ``argv_for(port)`` on a free port and wait until it is ready; retry on a
        lost port."""
        for attempt in range(1, attempts + 1):
            port = free_port()
            proc = self.spawn(name, argv_for(port))
            try:
                return self.wait_ready(proc, port)
            except RuntimeError:
                # An exit usually means another process took the port first: retry.
                if proc.popen.poll() is None or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def start_redis(self, name: str, attempts: int = 3) -> int:
        def argv(port: int) -> list[str]:
            return [
                "redis-server",
                *f"--port {port} --bind {HOST}".split(),
                *["--save", "", "--appendonly", "no", "--daemonize", "no"],
            ]

        return self.start_server(name, argv, attempts)

    def proxy_cpu(self, target: str) -> float | None:
        """CPU seconds used so far by the proxy processes of ``target`` (None: it has none)."""
        pids = [p.popen.pid for p in self.procs if p.target == target and p.watch_rss]
        if not pids:
            return None
        return sum(proc_cpu_seconds(pid) for pid in pids)

    def read_rss(self) -> None:
        for proc in self.procs:
            if proc.watch_rss and proc.popen.poll() is None:
                self.rss[proc.name] = proc_status_kb(proc.popen.pid)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(STOP_TIMEOUT)


def tail(proc: Proc, lines: int = 15) -> str:
    try:
        text = proc.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n  | " + "\n  | ".join(text) if text else ""


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS in kB from /proc/PID/status."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by processes outside this run, from /proc/stat minus our rusage.

    Our own CPU is this script plus every child it has reaped (servers, proxies,
    redis-benchmark), so foreign_share() must be called after all of them are waited for.
    """

    def __init__(self) -> None:
        self.start = (time.monotonic(), self.system_busy(), self.ours())
        self.steal_start = self.steal()

    @staticmethod
    def _cpu_fields() -> list[int]:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]

    @classmethod
    def system_busy(cls) -> float:
        # user + nice + system: process time only (irq, softirq, steal, guest left out).
        return sum(cls._cpu_fields()[:3]) / os.sysconf("SC_CLK_TCK")

    @classmethod
    def steal(cls) -> float:
        """CPU seconds the hypervisor gave to other guests (the 8th /proc/stat field)."""
        fields = cls._cpu_fields()
        return (fields[7] if len(fields) > 7 else 0) / os.sysconf("SC_CLK_TCK")

    def steal_share(self) -> float:
        """Stolen CPU / (wall seconds x CPU count) since construction."""
        wall = (time.monotonic() - self.start[0]) * (os.cpu_count() or 1)
        return max(0.0, self.steal() - self.steal_start) / wall

    @staticmethod
    def ours() -> float:
        usages = (
            resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        return sum(u.ru_utime + u.ru_stime for u in usages)

    def foreign_share(self) -> float:
        """Foreign CPU seconds / (wall seconds x CPU count) since construction."""
        wall0, busy0, ours0 = self.start
        foreign = (self.system_busy() - busy0) - (self.ours() - ours0)
        return max(0.0, foreign) / ((time.monotonic() - wall0) * (os.cpu_count() or 1))


def yaml_block(root: str, items: dict[str, str | int | list[str]]) -> str:
    """Tiny YAML emitter for flat configs (scalars and lists of scalars)."""
    lines = [f"{root}:"]
    for key, value in items.items():
        if isinstance(value, list):
            lines.append(f"  {key}:")
            lines.extend(f"  - {v}" for v in value)
        else:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


def summary_rows(
    cells: Mapping[tuple[str, str, str], list[float]],
    names: Sequence[str],
    tests: Sequence[str],
    modes: Sequence[str],
) -> list[Row]:
    """Per target x test x mode: median, min, max and ratios of medians to direct
    and twemproxy, from ``cells`` (req/s of each round, by (target, test, mode))."""
    summary: list[Row] = []
    for name in names:
        for test in tests:
            for mode in modes:
                rps = cells[(name, test, mode)]
                median = statistics.median(rps)
                row: Row = {
                    "target": name,
                    "test": test,
                    "mode": mode,
                    "median": median,
                    "min": min(rps),
                    "max": max(rps),
                    "n": len(rps),
                }
                for ref in ("direct", "twemproxy"):
                    if (ref, test, mode) in cells:
                        row[f"vs_{ref}"] = median / statistics.median(cells[(ref, test, mode)])
                summary.append(row)
    return summary


def report_machine(foreign: float, stolen: float) -> bool:
    """Print what other processes and the hypervisor took; True if the run is clean."""
    print(f"\nCPU used by other processes during the run: {foreign:.0%} of the machine")
    print(f"CPU stolen by the hypervisor during the run: {stolen:.0%} of the machine")
    clean = foreign <= FOREIGN_CPU
    if not clean:
        print(
            f"NOT CLEAN: other processes took {foreign:.0%} of the CPU (over "
            f"{FOREIGN_CPU:.0%}); these figures are not a measurement. Rerun on a quiet machine."
        )
    if stolen > FOREIGN_CPU:
        print("WARNING: the hypervisor took CPU from this machine; ratios hold, rates do not.")
    return clean
