"""Workspace jobs as SLURM batch jobs (entry point ``uws-slurm``).

- :mod:`.spawner`: :class:`WorkspaceSlurmSpawner`, the spawner.
- :mod:`.poller`: the shared status poller (one ``squeue`` per cycle for every job).
- :mod:`.commands`: running SLURM's commands (argv lists, timeouts).
- :mod:`.parsing`: SLURM's output and states, parsed (pure functions).
- :mod:`.script`: the sbatch script, rendered and read back (pure functions).
- :mod:`.output`: a job's output, read as its account and kept for its owner.
- :mod:`.orphans`: cancelling this hub's SLURM jobs that no job knows.
- :mod:`.metrics`: the poller's Prometheus metrics.
"""

from .spawner import WorkspaceSlurmSpawner

__all__ = ["WorkspaceSlurmSpawner"]
