"""`bigtrain submit CONFIG`: a training run as a Slurm job (submitit); `--status RUN_DIR`."""
from __future__ import annotations

from ._common import load_train_config


def run(args) -> int:
    from bigtrain.slurm import Resources, status, submit

    if args.status:
        if args.config:
            raise ValueError("--status RUN_DIR takes no CONFIG")
        status(args.status)
        return 0
    if not args.config:
        raise ValueError("give a CONFIG.yaml to submit, or --status RUN_DIR")
    cfg = load_train_config(args.config, args.overrides)
    source = args.config + (f" + overrides {' '.join(args.overrides)}" if args.overrides else "")
    res = Resources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                    partition=args.partition, time=args.time, account=args.account, qos=args.qos,
                    constraint=args.constraint, mem=args.mem, cpus_per_task=args.cpus_per_task,
                    max_requeues=args.max_requeues, signal_delay_s=args.signal_delay, job_name=args.job_name)
    submit(cfg, source, res, dry_run=args.dry_run)
    return 0


def add(sub) -> None:
    s = sub.add_parser("submit", help="submit a training run to Slurm (submitit): one task per GPU, checkpoint "
                                      "and requeue before the time limit; or --status RUN_DIR")
    s.add_argument("config", nargs="?", help="YAML run config; run.dir must be on storage every node sees")
    s.add_argument("overrides", nargs="*", help="key.sub=value overrides, as for train")
    s.add_argument("--status", metavar="RUN_DIR", help="show the run's newest job: Slurm state, attempts, checkpoint, logs")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per node, one task each (default 1); "
                   "0 for CPU nodes, with --tasks-per-node")
    s.add_argument("--tasks-per-node", type=int, default=None, help="default: --gpus-per-node")
    s.add_argument("--partition")
    s.add_argument("--time", default="24:00:00", help="time limit: minutes, H:MM:SS or D-HH:MM:SS (default 24:00:00)")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--constraint")
    s.add_argument("--mem", help="memory per node as sbatch takes it: 64G, 500M, 0 = all")
    s.add_argument("--cpus-per-task", type=int, help="also the torch threads per rank unless run.num_threads is set")
    s.add_argument("--max-requeues", type=int, default=10,
                   help="requeue after a time-limit signal at most this many times (default 10)")
    s.add_argument("--signal-delay", type=int, default=120, metavar="SECONDS",
                   help="Slurm sends SIGUSR2 this long before the time limit (default 120)")
    s.add_argument("--job-name", help="default: bigtrain-<run dir name>")
    s.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting it")
    s.set_defaults(fn=run)
