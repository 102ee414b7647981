"""Batch runners: how a batch job runs on each resource (:mod:`.base` says what they do).

- :mod:`.local`: a local process under the job wrapper (limits, exit record, adoption).
- :mod:`.slurm`: ``sbatch`` of the command itself, followed by the shared SLURM poller.
"""
