"""A real Dask cluster on this machine: a scheduler and N single-threaded worker processes on
127.0.0.1, talking TCP as on a cluster of many; stopped by their pids (SIGTERM, then SIGKILL).

    python scripts/dask_cluster.py [--workers 2] -- COMMAND ...   # runs COMMAND with {address}
                                                                 # replaced by the scheduler's

Used by `make beam-dask-demo`, tests/test_beam.py and benchmarks/beam_throughput.py. Needs
Dask's distributed scheduler in this Python (Beam's dask extra, `make beam-setup` on TF 2).
"""
import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stop(procs: List[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.time() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:  # a worker that does not stop on SIGTERM
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def local_cluster(workers: int = 2, python: str = sys.executable, log_path: str = os.devnull) -> Iterator[str]:
    """Start the cluster; yields the scheduler's address (``tcp://127.0.0.1:PORT``) once all
    ``workers`` have joined. The workers import this clone's ``ggcam`` (PYTHONPATH)."""
    import distributed  # ImportError: no Dask here
    with tempfile.TemporaryDirectory(prefix="ggcam-dask-") as folder:
        scheduler_file = os.path.join(folder, "scheduler.json")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        common = ["--no-dashboard", "--host", "127.0.0.1"]
        with open(log_path, "a") as log:
            procs = [subprocess.Popen([python, "-m", "distributed.cli.dask_scheduler", "--port", "0",
                                       "--scheduler-file", scheduler_file] + common,
                                      stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)]
            try:
                deadline = time.time() + 120
                while not os.path.exists(scheduler_file) and time.time() < deadline:
                    time.sleep(0.1)
                for i in range(workers):
                    procs.append(subprocess.Popen(
                        [python, "-m", "distributed.cli.dask_worker", "--scheduler-file", scheduler_file,
                         "--nthreads", "1", "--no-nanny", "--name", "worker-%d" % i,
                         "--local-directory", os.path.join(folder, "worker-%d" % i)] + common,
                        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
                with distributed.Client(scheduler_file=scheduler_file, timeout=60) as client:
                    client.wait_for_workers(workers, timeout=120)
                    address = client.scheduler.address
                yield address
            finally:
                _stop(procs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ... ({address}: the scheduler's)")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        cluster = local_cluster(args.workers)
        address = cluster.__enter__()
    except ImportError:
        print("error: Dask is not installed for %s: Beam's Dask runner comes with `make beam-setup RUNTIME=tf2` "
              "(Beam 2.48 on Python 3.7, the TF 1.15 runtime, cannot have it)" % sys.executable, file=sys.stderr)
        return 1
    try:
        print("Dask scheduler at %s, %d single-threaded workers" % (address, args.workers), file=sys.stderr)
        return subprocess.call([c.replace("{address}", address) for c in command])
    finally:
        cluster.__exit__(None, None, None)


if __name__ == "__main__":
    sys.exit(main())
