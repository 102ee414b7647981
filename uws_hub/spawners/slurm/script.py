"""The sbatch script of a job: rendering it, and reading back what an
interrupted start needs from it (its token, its hub job id). Pure functions.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import jinja2

from .commands import command_environment

#: the ``#SBATCH`` lines of a job's requested resources, in both default scripts
SBATCH_RESOURCES = """\
{% if partition %}#SBATCH --partition={{ partition }}
{% endif %}{% if runtime %}#SBATCH --time={{ runtime }}
{% endif %}{% if memory %}#SBATCH --mem={{ memory }}
{% endif %}{% if nprocs %}#SBATCH --cpus-per-task={{ nprocs }}
{% endif %}{% if gres %}#SBATCH --gres={{ gres }}
{% endif %}{% if account %}#SBATCH --account={{ account }}
{% endif %}{% if qos %}#SBATCH --qos={{ qos }}
{% endif %}{% if reservation %}#SBATCH --reservation={{ reservation }}
{% endif %}{% if options %}#SBATCH {{ options }}
{% endif %}"""

DEFAULT_BATCH_SCRIPT = (
    """\
#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --output={{ output }}
#SBATCH --chdir={{ workdir }}
"""
    + SBATCH_RESOURCES
    + """
# uws-hub job {{ uws_job_id }} in {{ workdir }}
{{ exports }}
{{ prologue }}
# a free port on this node, told to the hub through the job's comment while the server
# starts; then the hub is woken to read it at once (best effort: it polls SLURM anyway)
port=$({{ python | quote }} -I -S -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
( {{ scontrol | quote }} update JobId="$SLURM_JOB_ID" Comment="uws-port=$port"{% if wake %} && {{ python | quote }} -I -S -c {{ wake | quote }} >/dev/null 2>&1{% endif %} ) &
export JUPYTERHUB_SERVICE_URL="http://0.0.0.0:${port}${JUPYTERHUB_SERVICE_PREFIX}"
echo "uws-hub: starting the server of job {{ uws_job_id }} on $(hostname), port $port"
# a stop (scancel) sends SIGTERM to every process of the job: this shell waits for the
# server's own shutdown, then runs the epilogue; dying at once, it would end the job's
# main process, and SLURM would SIGKILL the server in the middle of its shutdown
trap : TERM
{% if srun %}{{ srun }} {% endif %}{{ cmd }}
status=$?
{{ epilogue }}
exit $status
"""
)


#: what the default script runs (node_python -c) once the port is in the job's comment:
#: one POST /hub/api/jobs/{id}/wake with the job's own token, which makes the hub read
#: SLURM's queue at once instead of at its next poll (the hub trusts nothing in it)
WAKE_CODE = (
    'import os, urllib.request as r; e = os.environ; r.urlopen(r.Request(e["JUPYTERHUB_API_URL"].rstrip("/")'
    ' + "/jobs/" + e["UWS_JOB_ID"] + "/wake", method="POST",'
    ' headers={"Authorization": "token " + e["JUPYTERHUB_API_TOKEN"]}), timeout=10)'
)

# ---------------------------------------------------------------- batch script
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render_batch_script(template: str, *, env: dict[str, str], cmd: list[str], **variables: Any) -> str:
    """Render the sbatch script template (Jinja2).

    ``variables`` are the template's values (``job_name``, ``output``,
    ``workdir``, ``partition``, ``runtime``, ...); none may contain a newline
    (they end up on ``#SBATCH`` lines). ``env`` becomes ``export NAME=value``
    lines (values shell-quoted) in ``{{ exports }}``; ``cmd`` becomes
    ``{{ cmd }}``, shell-quoted. The ``quote`` filter shell-quotes anything else.
    """
    for name, value in variables.items():
        if isinstance(value, str) and ("\n" in value or "\r" in value or "\0" in value):
            raise ValueError(f"batch script value {name!r} contains a line break")
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\0" in value:
            raise ValueError(f"environment variable {name!r} contains a NUL byte")
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items()))
    jenv = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    jenv.filters["quote"] = lambda v: shlex.quote(str(v))
    return jenv.from_string(template).render(exports=exports, cmd=shlex.join(cmd), **variables)


def token_from_script(script: str) -> str | None:
    """The ``JUPYTERHUB_API_TOKEN`` a batch script rendered by this module exports."""
    for line in script.splitlines():
        if line.startswith("export JUPYTERHUB_API_TOKEN="):
            try:
                words = shlex.split(line)
            except ValueError:
                return None
            if len(words) == 2:
                return words[1].split("=", 1)[1] or None
    return None


def script_job_id(script: str) -> int | None:
    """The hub job id (``UWS_JOB_ID``) a batch script rendered by this module exports."""
    match = re.search(r"^export UWS_JOB_ID=(\d+)$", script, re.M)
    return int(match.group(1)) if match else None


def submit_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``sbatch`` itself: enough to find and configure SLURM
    (:func:`.commands.command_environment`).

    The job's own environment is exported by the batch script, so that a
    batch script holds all a job needs (and an interrupted start can be adopted).
    """
    return command_environment(extra)
