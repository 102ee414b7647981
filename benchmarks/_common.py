"""Helpers shared by the benchmark scripts: the venv, processes, statistics, output.

The benchmarks are standalone scripts (not tests): they start real programs
on 127.0.0.1 only, measure, print a markdown table with ratios against a
baseline measured in the same run, and optionally write JSON to
``benchmarks/results/`` (gitignored).
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
RESULTS = REPO / "benchmarks" / "results"


def ensure_venv() -> None:
    """Re-run this script with the project's venv python if started with another one.

    ``tests/hubutil.py`` finds ``uws-hub``, ``jupyter-lab`` and friends next to
    ``sys.executable``, so the benchmarks must run in ``.venv``.
    """
    venv_python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() != VENV.resolve() and venv_python.exists():
        if os.environ.get("UWS_BENCH_REEXEC"):
            sys.exit(f"{venv_python} did not activate {VENV}")
        os.environ["UWS_BENCH_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- statistics
def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    xs = sorted(values)
    if not xs:
        return math.nan
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    xs = list(values)
    if not xs:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "mean": math.nan, "min": math.nan, "max": math.nan}
    return {
        "n": len(xs),
        "p50": percentile(xs, 50),
        "p99": percentile(xs, 99),
        "mean": sum(xs) / len(xs),
        "min": min(xs),
        "max": max(xs),
    }


def ratio(a: float, b: float) -> float:
    if not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


# ---------------------------------------------------------------- output
def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan,) * 3
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load],
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_line() -> str:
    info = machine_info()
    return (
        f"{info['cpus']} CPUs, load average {info['loadavg'][0]:.2f} {info['loadavg'][1]:.2f}"
        f" {info['loadavg'][2]:.2f} (other work on the machine shows up in these numbers)"
    )


def write_json(name: str, data: dict[str, Any], path: str | None) -> Path | None:
    """Write results to ``path`` or ``benchmarks/results/<name>-<time>.json``."""
    if path == "":
        return None
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"{name}-{stamp}.json"
    else:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes
class Proc:
    """A child process in its own session, output to a file, stopped by its own pid."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15, sig: int = signal.SIGTERM, group: bool = True) -> int | None:
        """Signal (SIGTERM) the process group this process leads (or, ``group=False``, the
        process alone, as JupyterHub's local spawner does), then SIGKILL the group if needed."""
        if self.popen.poll() is None:
            try:
                if group:
                    os.killpg(self.popen.pid, sig)
                else:
                    os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait()
        return self.popen.returncode

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def jupyter_server_argv(port: int, token: str, root_dir: str | Path, base_url: str = "/") -> list[str]:
    """A JupyterLab server started by hand, as the baseline: the same venv, the
    same server the hub's ``jupyterlab`` job type runs (jupyterhub-singleuser
    runs jupyter_server with the JupyterLab extension)."""
    argv = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.base_url={base_url}",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    return argv


def profiler(pid: int) -> subprocess.Popen | None:
    """``py-spy record`` of process ``pid`` into ``$UWS_BENCH_PYSPY``, if set (its collapsed
    stacks, ``--format raw``; ``$UWS_BENCH_PYSPY_RATE``: samples a second, 200 unless set;
    ``$UWS_BENCH_PYSPY_ARGS``: more of its options); stop it with :func:`stop_profiler`."""
    out = os.environ.get("UWS_BENCH_PYSPY")
    if not out:
        return None
    py_spy = Path(sys.executable).parent / "py-spy"
    proc = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            os.environ.get("UWS_BENCH_PYSPY_RATE", "200"),
            "--nonblocking",
            "-o",
            out,
            *os.environ.get("UWS_BENCH_PYSPY_ARGS", "").split(),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1)  # it attaches
    return proc


def stop_profiler(proc: subprocess.Popen | None) -> None:
    """End a :func:`profiler` run: py-spy writes its file when interrupted."""
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
