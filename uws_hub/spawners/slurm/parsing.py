"""What SLURM's commands print, parsed: job states, ``squeue``/``sacct``/``sbatch``
output, the hub's job names, and why a job ended. Pure functions, tested without SLURM.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ...reasons import exit_reason

# ---------------------------------------------------------------- states
#: waiting for resources (or held); the job has no node yet
PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"})
#: the job has its node(s) and its batch script runs (or is stopped/suspended)
RUNNING_STATES = frozenset({"RUNNING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING"})
#: on its way out: processes being killed, files staged out
ENDING_STATES = frozenset({"COMPLETING", "STAGE_OUT"})
#: finished for good; ``VANISHED`` is ours: gone from squeue and sacct alike
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
        "VANISHED",
    }
)

#: ``squeue -o`` format: id, long state, reason, batch host, time limit, uid, comment.
#: The comment is last: users can set it to anything (``scontrol update``).
SQUEUE_FORMAT = "%i|%T|%r|%B|%l|%U|%k"
#: ``squeue -o`` format for the orphan sweep: id, state, submit time, name
SWEEP_FORMAT = "%i|%T|%V|%j"
#: an id as SLURM and the hub write them (decimal, no leading zero): nothing else an
#: account may write in its place counts (``²``, which ``int`` refuses; ``012``; ``٣``)
PLAIN_ID = re.compile("[1-9][0-9]*")
#: ``sacct -o`` fields (with ``-P``: separated by ``|``)
SACCT_FIELDS = "JobID,State,ExitCode,NodeList,Start,End,UID"
#: how a job's server tells the hub its port: ``scontrol update JobId=.. Comment=uws-port=N``
PORT_COMMENT = re.compile(r"(?:^|[\s,;])uws-port=(\d{1,5})(?:$|[\s,;])")


@dataclass(frozen=True)
class JobState:
    """What SLURM says about one job."""

    job_id: str
    #: SLURM's long state name, e.g. ``PENDING``, ``RUNNING``, ``TIMEOUT``
    state: str
    #: SLURM's reason (why it pends, or why it ended), "" if none
    reason: str = ""
    #: the node its batch script runs on, "" while pending
    node: str = ""
    #: the time limit SLURM applies, e.g. ``1:00:00`` or ``UNLIMITED``
    time_limit: str = ""
    comment: str = ""
    exit_code: str = ""
    #: when its batch script started and ended (``sacct``; SLURM's local time, ISO 8601)
    start: str = ""
    end: str = ""
    #: the uid it runs as (None: not printed). SLURM gives a job id again once it forgot
    #: the job (slurmctld restarted without its state, ``FirstJobId``, ``MaxJobId``
    #: wrapped), to any account's next job: one of another uid is not the hub's job.
    #: The uid, not the name: slurmctld caches a uid's name, and prints a new account
    #: that got a freed uid under the former account's name
    uid: int | None = None

    @property
    def pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def ended(self) -> bool:
        # unknown (newer) state names count as alive: never end a job by guessing
        return self.state in ENDED_STATES

    @property
    def port(self) -> int | None:
        """The port its server reported in the job's comment, if any."""
        match = PORT_COMMENT.search(self.comment or "")
        if match and 0 < int(match.group(1)) < 65536:
            return int(match.group(1))
        return None


def _none(value: str) -> str:
    """SLURM prints ``(null)``, ``n/a`` or ``None`` for nothing."""
    value = value.strip()
    return "" if value in ("(null)", "n/a", "N/A", "None", "NONE") else value


def _time(value: str) -> str:
    """A time from sacct, "" for none (``Unknown``, ``None``)."""
    value = _none(value)
    return "" if value in ("Unknown",) else value


def framed(fields: str) -> tuple[str, str]:
    r"""An ``squeue -o`` format of ``fields`` whose every record starts with a marker
    made for this one call, and the marker (for :func:`records`).

    squeue prints a job's name and comment as their accounts set them, newlines
    too (``sbatch -J``, ``scontrol update``): a job named ``x\n<id>|RUNNING|..|uws-..-job-9``
    printed a line of its own for another account's job, which the orphan sweep
    cancelled as root; a comment forged the state, node and port of another
    user's server. The marker is unknown to them when slurmctld answers: a line
    that does not start with it is the rest of the record before it. (It is on
    squeue's command line, which other accounts of the hub's machine may read
    while squeue runs, and could be raced into a comment: :func:`records` refuses
    an output that prints a job twice, as a record so forged for another job does.)"""
    marker = f"@{secrets.token_hex(8)}@"
    return marker + fields, marker


def records(stdout: str, marker: str) -> list[str]:
    """The records of squeue's output in a :func:`framed` format (the job id first),
    without the marker; newlines in a name or comment are kept in the record.

    ValueError if a job's id starts two records: squeue prints each job once, so one
    was forged in another job's name or comment with the marker read off squeue's
    command line; which one is not known, and nothing of the output is believed (the
    poll fails and is tried again, with a new marker; the orphan sweep waits)."""
    found: list[str] = []
    for line in stdout.removesuffix("\n").split("\n"):
        if line.startswith(marker):
            found.append(line[len(marker) :])
        elif found:
            found[-1] += "\n" + line
    repeated = [job_id for job_id, n in Counter(r.split("|", 1)[0] for r in found).items() if n > 1]
    if repeated:
        raise ValueError(f"squeue printed job(s) {', '.join(repeated[:5])} more than once: a forged record")
    return found


def parse_squeue(stdout: str, marker: str) -> dict[str, JobState]:
    """Parse ``squeue -h -o`` output in the :func:`framed` :data:`SQUEUE_FORMAT` into
    job states by id."""
    states: dict[str, JobState] = {}
    for line in records(stdout, marker):
        parts = line.split("|", 6)
        if len(parts) < 6 or not parts[0].strip():
            continue
        job_id, state, reason, node, time_limit, uid = (p.strip() for p in parts[:6])
        comment = parts[6].strip() if len(parts) > 6 else ""
        states[job_id] = JobState(
            job_id=job_id,
            state=state.split()[0].rstrip("+") if state else "UNKNOWN",
            reason=_none(reason),
            node=_none(node),
            time_limit=_none(time_limit),
            comment=_none(comment),
            uid=parse_uid(uid),
        )
    return states


#: a uid as SLURM prints it: ``1002`` (squeue's ``%U``, sacct's ``UID``), or after the
#: account's name (the jobcomp/filetxt records' ``UserId=alice(1002)``)
_UID = re.compile(r"(?:[^()]*\(([0-9]+)\)|([0-9]+))")


def parse_uid(value: str) -> int | None:
    """The uid in ``value`` (see :data:`_UID`), None if there is none."""
    match = _UID.fullmatch(value.strip())
    return int(match.group(1) or match.group(2)) if match else None


def parse_sacct(stdout: str, uids: Mapping[str, int] | None = None) -> dict[str, JobState]:
    """Parse ``sacct -n -P -o`` :data:`SACCT_FIELDS` output (allocations only) by id.

    ``State`` may read ``CANCELLED by 1002`` (who cancelled it); a job that
    was requeued is listed once per run, the last line wins. ``uids``: the uid each
    job id is the hub's job of, where known; a record of another uid under that id (a
    job SLURM gave the id again) is not that job's, and is left out.
    """
    uids = uids or {}
    states: dict[str, JobState] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        job_id = parts[0]
        if "." in job_id:  # a step (batch, extern, 0): the allocation's line is enough
            continue
        uid = parse_uid(parts[6]) if len(parts) > 6 else None
        if job_id in uids and uid != uids[job_id]:
            continue
        words = parts[1].split()
        state = words[0].rstrip("+") if words else "UNKNOWN"
        states[job_id] = JobState(
            job_id=job_id,
            state=state,
            reason=" ".join(words[1:]),
            exit_code=parts[2] if len(parts) > 2 else "",
            node=_none(parts[3]) if len(parts) > 3 else "",
            start=_time(parts[4]) if len(parts) > 4 else "",
            end=_time(parts[5]) if len(parts) > 5 else "",
            uid=uid,
        )
    return states


@dataclass(frozen=True)
class SweepEntry:
    job_id: str
    state: str
    submitted: str
    name: str


def parse_sweep(stdout: str, marker: str) -> list[SweepEntry]:
    """Parse ``squeue -h -o`` output in the :func:`framed` :data:`SWEEP_FORMAT` (every
    queued or running job). The hub's jobs are single jobs with plain ids: the others
    (an array's ``12_[1-3]``, a heterogeneous job's ``12+0``) are left out, as their
    ids ``int`` refuses (an array named like a hub job made every sweep fail)."""
    entries = []
    for line in records(stdout, marker):
        parts = line.split("|", 3)
        if len(parts) == 4 and PLAIN_ID.fullmatch(parts[0]):
            entries.append(SweepEntry(*parts))
    return entries


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``123`` or ``123;cluster``; last line)."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    job_id = lines[-1].split(";")[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


# ---------------------------------------------------------------- names
def job_name(prefix: str, job_id: int) -> str:
    return f"{prefix}job-{job_id}"


def job_id_from_name(prefix: str, name: str) -> int | None:
    """The hub job id in a SLURM job name made by :func:`job_name`, or None if not ours.

    Any account of the cluster names its jobs as it likes: only the names the hub makes
    count. ``str.isdigit`` also passed digits ``int`` refuses (a job named
    ``<prefix>job-²`` made every orphan sweep fail) and names the hub never makes
    (``job-012``, ``job-٣``: read as job 12's or 3's)."""
    if not prefix or not name.startswith(prefix + "job-"):
        return None
    rest = name[len(prefix) + 4 :]
    return int(rest) if PLAIN_ID.fullmatch(rest) else None


def find_orphans(entries: list[SweepEntry], prefix: str, known: dict[int, str | None]) -> list[str]:
    """The SLURM ids of this hub's jobs (named with ``prefix``) that no unfinished job knows.

    ``known`` maps each unfinished job to its stored SLURM id, or None. A SLURM
    job named like this hub's job N is an orphan if job N is not unfinished, or
    if job N's stored id is a later submission (a duplicate from a start the
    hub lost track of). A job N with no stored id yet may be submitting right
    now: left alone.
    """
    orphans = []
    for entry in entries:
        hub_job = job_id_from_name(prefix, entry.name)
        if hub_job is None:
            continue
        if hub_job not in known:
            orphans.append(entry.job_id)
            continue
        stored = known[hub_job]
        if stored and stored != entry.job_id and stored.isdigit() and int(entry.job_id) < int(stored):
            orphans.append(entry.job_id)
    return orphans


# ---------------------------------------------------------------- ends
def describe_end(state: JobState, *, started: bool) -> tuple[str, str]:
    """How a job that SLURM ended ends in the hub: (outcome, reason).

    ``outcome`` is ``completed``, ``failed`` or ``cancelled``; ``started``
    says whether its server had answered (a server that ends before it answers
    failed, even with exit status 0).
    """
    sid = f"SLURM job {state.job_id}"
    on = f" on node {state.node}" if state.node else ""
    s = state.state
    if s == "CANCELLED":
        by = f", {state.reason}" if state.reason.startswith("by ") else ""
        return "cancelled", f"{sid} was cancelled outside uws-hub (scancel{by})"
    if s == "TIMEOUT":
        limit = f" of {state.time_limit}" if state.time_limit and state.time_limit != "UNLIMITED" else ""
        return "failed", f"{sid} reached its time limit{limit}{on}"
    node = f" {state.node}" if state.node else ""
    if s == "NODE_FAIL":
        return "failed", f"{sid} failed: its node{node} failed"
    if s == "OUT_OF_MEMORY":
        return "failed", f"{sid} ran out of memory{on}"
    if s == "BOOT_FAIL":
        return "failed", f"{sid} failed: its node{node} did not boot"
    if s == "PREEMPTED":
        return "failed", f"{sid} was preempted{on}"
    if s == "DEADLINE":
        return "failed", f"{sid} reached its deadline{on}"
    if s == "VANISHED":
        return "failed", f"{sid} is no longer known to SLURM: {state.reason or 'it ended, how is unknown'}"
    detail = ", ".join(x for x in (state.reason, f"exit code {state.exit_code}" if state.exit_code else "") if x)
    detail = f" ({detail})" if detail else ""
    if s == "COMPLETED":
        if started:
            return "completed", f"{sid} ended: its server exited{on}"
        return "failed", f"{sid} ended before its server answered{detail}{on}"
    return "failed", f"{sid} ended {s}{detail}{on}"


def parse_exit_code(value: str) -> tuple[int | None, int | None]:
    """SLURM's ``ExitCode`` (``status:signal``, e.g. ``3:0`` or ``0:9``) as (exit status,
    signal): one of them, or (None, None) if SLURM gave none."""
    status, _, sig = value.strip().partition(":")
    if not status.isdigit():
        return None, None
    if sig.isdigit() and int(sig):
        return None, int(sig)
    return int(status), None


def describe_batch_end(state: JobState, *, time_limit: str = "", memory: str = "") -> tuple[str, str]:
    """How a batch job (a command, no server) that SLURM ended ends in the hub:
    (outcome, reason). Its command's exit status decides, unless SLURM ended it:
    ``TIMEOUT``, ``OUT_OF_MEMORY``, ``CANCELLED`` and the node's failures say so."""
    sid = f"SLURM job {state.job_id}"
    on = f" on node {state.node}" if state.node else ""
    s = state.state
    if s == "TIMEOUT":
        limit = time_limit or (state.time_limit if state.time_limit not in ("", "UNLIMITED") else "")
        return (
            "failed",
            f"The job reached its time limit{f' of {limit}' if limit else ''}: SLURM stopped it ({sid}{on})",
        )
    if s == "OUT_OF_MEMORY":
        return (
            "failed",
            f"The job went over its memory limit{f' of {memory}' if memory else ''}: SLURM ended it ({sid}{on})",
        )
    if s in ("COMPLETED", "FAILED"):
        code, sig = parse_exit_code(state.exit_code)
        if sig is not None or code is not None:
            outcome = "completed" if sig is None and code == 0 and s == "COMPLETED" else "failed"
            return outcome, exit_reason("The command", code, signal=sig, when=f" ({sid}{on})")
        if s == "COMPLETED":  # SLURM could not tell the exit code (no accounting): it says it completed
            return "completed", f"{sid} completed{on}"
    return describe_end(state, started=True)
