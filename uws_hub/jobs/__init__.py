"""Jobs: launches of job types in workspaces, on a resource (a local process, SLURM).

- :mod:`.service`: :class:`JobService`, what a launch or a stop request does and
  the one way a job's status changes.
- :mod:`.launch`: :class:`LaunchRequest`, what launch checks (limits, quotas) look at.
- :mod:`.types`: the configured job types.
- :mod:`.limits`: each job type's resource limits and defaults.
- :mod:`.reconcile`: the reconciler's steps for a job (start, notice, stop, record).
- :mod:`.servers`: :class:`ServerControl`, a job's JupyterHub named server (spawn,
  stop, proxy route, tokens) outside any request.
"""
