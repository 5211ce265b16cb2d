"""A dask cluster of GPU worker jobs on SLURM (dask-jobqueue), for ``tomocare ... --scheduler FILE``.

    pip install -c constraints.txt -e '.[gpu,deploy]'   # from a clone: dask-cuda + dask-jobqueue
    python deploy/slurm/jobqueue_cluster.py --scheduler-file ~/tomocare-scheduler.json \\
        --partition gpu --account myproj --max-jobs 8 \\
        -- tomocare denoise /data/dataset --out /data/denoised --scheduler ~/tomocare-scheduler.json

The dask scheduler runs in this process; every worker is one SLURM job with one GPU
(``--gres=gpu:1``) and one worker process, so SLURM's CUDA_VISIBLE_DEVICES is that worker's
GPU. Workers retire before the walltime (``--lifetime`` minus a random stagger) and ``adapt``
submits replacement jobs while work remains; a task lost with a retiring worker is recomputed
(tomocare's tasks write the same bytes when they run twice).

With a command after ``--``, the command runs once the first worker joined and the cluster is
closed when it ends (exit status passed on); without one, the cluster runs until Ctrl-C, for
commands started elsewhere with ``--scheduler FILE``. Training runs in the process that runs
``tomocare``: run this script inside a one-GPU job (``deploy/slurm/driver.sbatch``) rather than on
a login node, or train separately and give ``tomocare denoise --model``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed import Client


def minutes(walltime: str) -> int:
    """SLURM walltime ``[D-]HH:MM:SS`` in whole minutes."""
    days, _, hms = walltime.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def main() -> int:
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scheduler-file", type=Path, required=True, help="written here for --scheduler")
    p.add_argument("--partition", help="SLURM partition of the GPU jobs")
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--walltime", default="02:00:00", help="of each worker job")
    p.add_argument("--margin", type=int, default=10,
                   help="minutes before the walltime at which a worker retires at the latest")
    p.add_argument("--stagger", type=int, default=5, help="minutes of random spread of the retirements")
    p.add_argument("--cpus", type=int, default=8, help="CPU cores per GPU job (reading, decompression)")
    p.add_argument("--threads", type=int, default=2, help="dask threads of the worker (tasks sharing the GPU)")
    p.add_argument("--memory", default="64GB", help="host memory per GPU job")
    p.add_argument("--gres", default="gpu:1", help="GPU request per job (e.g. gpu:a100:1)")
    p.add_argument("--min-jobs", type=int, default=1)
    p.add_argument("--max-jobs", type=int, default=4)
    p.add_argument("--interface", help="network interface the workers reach the scheduler on (e.g. ib0)")
    p.add_argument("--local-directory", default="$TMPDIR", help="worker scratch space on the node")
    p.add_argument("--prologue", action="append", default=[],
                   help="shell line run before the worker, e.g. 'module load cuda'")
    p.add_argument("--dry-run", action="store_true", help="print the worker job script and exit")
    args = p.parse_args(argv)

    lifetime = minutes(args.walltime) - args.margin
    if lifetime <= args.stagger:
        sys.exit(f"error: walltime {args.walltime} leaves no worker lifetime with a {args.margin} min margin")
    cluster = SLURMCluster(
        queue=args.partition,
        account=args.account,
        walltime=args.walltime,
        cores=args.threads,            # dask threads of the worker ...
        job_cpu=args.cpus,             # ... while SLURM gives the job this many cores
        processes=1,                   # one worker process per job = per GPU
        memory=args.memory,
        job_extra_directives=[f"--gres={args.gres}"],
        worker_extra_args=["--lifetime", f"{lifetime}m", "--lifetime-stagger", f"{args.stagger}m"],
        job_script_prologue=args.prologue,
        interface=args.interface,
        local_directory=args.local_directory,
        log_directory="dask-logs",
        scheduler_options={"dashboard_address": ":8787"},
    )
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return 0
    cluster.adapt(minimum_jobs=args.min_jobs, maximum_jobs=args.max_jobs)
    with cluster, Client(cluster) as client:
        client.write_scheduler_file(str(args.scheduler_file))
        print(f"scheduler {cluster.scheduler_address}, file {args.scheduler_file}, dashboard {client.dashboard_link}",
              file=sys.stderr)
        try:
            if not command:
                while True:
                    time.sleep(3600)
            client.wait_for_workers(1)
            return subprocess.call(command)
        except KeyboardInterrupt:
            return 130
        finally:
            args.scheduler_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
