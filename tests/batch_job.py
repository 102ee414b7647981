"""The command of the tests' batch job types: ``batch_job.py <what> [args...]``.

- ``report ARGS...``: writes what it received (argv, the UWS_* environment, its
  account, directory and CPUs) as JSON to ``$UWS_RESULTS_DIR/report.json``;
- ``exit N``: prints a line, exits with status N;
- ``signal N``: kills itself with signal N;
- ``sleep S``: sleeps S seconds, then exits 0;
- ``alloc MB``: allocates MB megabytes (and touches them);
- ``lines N SECONDS``: prints N numbered lines, SECONDS apart;
- ``count FILE``: appends a line to FILE (how often a job ran), sleeps 3 s, exits 0;
- ``wait FILE``: runs until FILE exists (at most 5 minutes), then exits 0;
- ``stubborn FILE``: the same, ignoring SIGTERM (a stop ends it only with the
  spawner's SIGKILL, ``kill_grace_seconds`` later) from when it prints so;
- ``write N``: writes N bytes to ``$UWS_RESULTS_DIR/data.bin``;
- ``sparse N``: prints a line, then makes its output (its log) N bytes long, a hole
  that costs no disk.
"""

import json
import os
import signal
import sys
import time


def main(what, *args):
    if what == "report":
        report = {
            "argv": list(args),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("UWS_", "ECHO_"))},
            "env_names": sorted(os.environ),
            "uid": os.getuid(),
            "gids": sorted({os.getgid(), *os.getgroups()}),
            "cwd": os.getcwd(),
            "cpus": sorted(os.sched_getaffinity(0)),
        }
        with open(os.path.join(os.environ["UWS_RESULTS_DIR"], "report.json"), "w") as f:
            json.dump(report, f)
        print("reported", flush=True)
        return 0
    if what == "exit":
        print(f"exiting with {args[0]}", flush=True)
        return int(args[0])
    if what == "signal":
        print("killing myself", flush=True)
        os.kill(os.getpid(), int(args[0]))
        time.sleep(10)
        return 0
    if what == "sleep":
        time.sleep(float(args[0]))
        return 0
    if what == "alloc":
        print(f"allocating {args[0]} MB", flush=True)
        data = bytearray(int(args[0]) * 1024 * 1024)
        print(f"allocated {len(data)} bytes", flush=True)
        return 0
    if what == "lines":
        for i in range(int(args[0])):
            print(f"line {i}", flush=True)
            time.sleep(float(args[1]))
        return 0
    if what == "count":
        with open(args[0], "a") as f:
            f.write(f"{os.environ['UWS_JOB_ID']}\n")
        time.sleep(3)
        return 0
    if what == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        what = "wait"
    if what == "wait":
        deadline = time.monotonic() + 300
        while not os.path.exists(args[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        return 0
    if what == "write":
        with open(os.path.join(os.environ["UWS_RESULTS_DIR"], "data.bin"), "wb") as f:
            f.write(b"x" * int(args[0]))
        return 0
    if what == "sparse":
        print("growing", flush=True)
        os.ftruncate(1, int(args[0]))
        return 0
    raise SystemExit(f"unknown: {what}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
