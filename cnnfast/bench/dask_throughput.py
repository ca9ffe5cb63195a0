"""python -m cnnfast.bench.dask_throughput: inference images/s through cnnfast.dask.predict.

Rows per model: this process without Dask (cnnfast and BLAS at 1 and 2 threads),
Dask's threaded scheduler (2 threads, cnnfast and BLAS at 1 thread each) and a LocalCluster
of 1 and 2 worker processes (1 thread each, cnnfast at 1 thread), started
as distributed starts them (MALLOC_TRIM_THRESHOLD_=65536 in the workers'
environment) and with glibc's default malloc (that variable unset). The images
are generated on the workers and persisted first, so the timings cover
predict's graph, the model's trip to the workers, the forward passes and the
outputs' trip back. Each cell is the best of --repeat calls after one warm-up
call, over --rounds sweeps of all rows (the fastest run is the one least
disturbed by other work on a shared machine); the load average is printed
before and after each round. Needs `pip install "cnnfast[dask]"`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

import cnnfast
from cnnfast import models
from cnnfast.bench._threads import cnnfast_threads


class Case(NamedTuple):
    model: str
    images: int
    chunk: int
    batch: int
    channels: int
    size: int
    num_classes: int


CASES = [Case("lenet5", 16384, 2048, 256, 1, 32, 10),
         Case("resnet18", 64, 8, 8, 3, 224, 1000)]
QUICK = [Case("lenet5", 4096, 512, 256, 1, 32, 10),
         Case("resnet18", 16, 4, 4, 3, 224, 1000)]


def best_s(fn, repeat):
    fn()   # warm-up: first model transfer, imports, allocations
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def build(case):
    cnnfast.nn.manual_seed(0)
    return models.MODELS[case.model](num_classes=case.num_classes, in_channels=case.channels)


def local_rate(case, model, threads, repeat):
    x = np.random.default_rng(0).standard_normal(
        (case.images, case.channels, case.size, case.size), dtype=np.float32)
    model = model.eval()

    def run():
        for i in range(0, len(x), case.batch):
            model(x[i:i + case.batch])

    # NumPy's BLAS (the Linear layers) too: a worker process has it at 1 thread
    with cnnfast_threads(threads), threadpool_limits(threads):
        return case.images / best_s(run, repeat)


def dask_images(case):
    import dask.array as da
    shape = (case.images, case.channels, case.size, case.size)
    return da.random.default_rng(0).standard_normal(
        shape, chunks=(case.chunk, -1, -1, -1), dtype=np.float32)


def dask_rate(case, model, repeat, compute):
    from cnnfast.dask import predict

    x = dask_images(case)
    x = compute.persist(x)

    def run():
        out = compute.result(predict(model, x, batch_size=case.batch))
        assert out.shape == (case.images, case.num_classes)

    return case.images / best_s(run, repeat)


class Threaded:
    def persist(self, x):
        return x.persist(scheduler="threads")

    def result(self, y):
        with cnnfast.num_threads(1), threadpool_limits(1):
            return y.compute(scheduler="threads", num_workers=2)


class Cluster:
    def __init__(self, client):
        self.client = client

    def persist(self, x):
        from distributed import wait
        x = self.client.persist(x)
        wait(x)
        return x

    def result(self, y):
        return self.client.compute(y).result()


@contextlib.contextmanager
def malloc_trim(on):
    """distributed's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its workers
    (and leaves it in this process's os.environ, where the next cluster picks
    it up); any explicit value turns off glibc's adaptive mmap threshold, so
    every large array is mapped and unmapped afresh. Off: the variable unset."""
    import dask
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    with dask.config.set({} if on else {key: None}):
        yield


def sweep(cases, repeat):
    """(case, how, images/s) for every row."""
    from distributed import Client, LocalCluster

    for case in cases:
        model = build(case)
        for threads in (1, 2):
            yield (case, f"this process, cnnfast (and BLAS) at {threads} thread"
                   + ("s" if threads > 1 else ""), local_rate(case, model, threads, repeat))
        yield (case, "Dask threaded scheduler, 2 threads, cnnfast at 1 thread",
               dask_rate(case, model, repeat, Threaded()))
        for trim in (True, False):
            for workers in (1, 2):
                with malloc_trim(trim), LocalCluster(
                        n_workers=workers, threads_per_worker=1, processes=True,
                        dashboard_address=None) as cluster, Client(cluster) as client:
                    client.run(cnnfast.set_num_threads, 1)
                    rate = dask_rate(case, model, repeat, Cluster(client))
                how = f"LocalCluster, {workers} worker process" + ("es" if workers > 1 else "")
                yield case, how + ("" if trim else ", `MALLOC_TRIM_THRESHOLD_` unset"), rate


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnnfast.bench.dask_throughput",
                                description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="fewer images, 2 calls per row")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per row and round")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every row this many times, spread out, and keep each row's best")
    args = p.parse_args(argv)
    # the model travels inside the graph on purpose; ResNet-18 is over the 10 MiB warning
    warnings.filterwarnings("ignore", message="Sending large graph")
    cases, repeat = (QUICK, 2) if args.quick else (CASES, args.repeat)
    loads = [os.getloadavg()[0]]
    best = {}
    for _ in range(args.rounds):
        for case, how, rate in sweep(cases, repeat):
            best.setdefault(how, {})[case] = max(best.get(how, {}).get(case, 0), rate)
        loads.append(os.getloadavg()[0])
    print(f"cnnfast {cnnfast.__version__}; best of {repeat} calls x {args.rounds} round(s) "
          f"per cell; 1-minute load average {', '.join(f'{x:.1f}' for x in loads)} "
          f"(before, after each round)")
    print("| images/s | " + " | ".join(
        f"{c.model} {c.channels}x{c.size}x{c.size}, {c.images} images, batch {c.batch}"
        for c in cases) + " |")
    print("|---|" + "---:|" * len(cases))
    for how, rates in best.items():
        print(f"| {how} | " + " | ".join(f"{rates[c]:,.0f}" for c in cases) + " |")


if __name__ == "__main__":
    main()
