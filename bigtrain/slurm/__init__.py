"""Slurm: `bigtrain submit` (submitit, one task per GPU) on the login node, and the job that
trains, checkpoints on Slurm's signals and requeues itself on the compute nodes."""
from .job import TrainJob
from .submit import Resources, SubmitError, parse_time, status, submit

__all__ = ["Resources", "SubmitError", "TrainJob", "parse_time", "status", "submit"]
