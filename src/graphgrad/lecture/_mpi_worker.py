"""One rank of the lecture's data-parallel check (run by ``mpiexec -n N python -m ...``).

Every rank builds the same model and batch from the seed, computes the gradient of
(1/S) Σ_s H_s over its shard of the S samples, and the ranks add their gradients with one
Allreduce over a contiguous buffer; rank 0 writes the result and the median time as JSON.

    python -m graphgrad.lecture._mpi_worker OUT.json SAMPLES HIDDEN SEED
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(argv: list[str]) -> int:
    """Run one rank; returns the exit code."""
    from mpi4py import MPI

    from graphgrad._atomic import atomic_write_text
    from graphgrad.experiments.gradients import default_batch
    from graphgrad.nn.layers import MLP
    from graphgrad.tensor import Tensor, cross_entropy

    out, samples, hidden, seed = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    x, y, _ = default_batch(samples, seed)
    model = MLP(784, [hidden], 10, "relu", rng=np.random.default_rng(seed), dtype=np.float64)
    params = model.parameters()
    shard = np.array_split(np.arange(samples), size)[rank]
    total = np.empty(model.num_parameters())

    def step() -> np.ndarray:
        model.zero_grad()
        # this rank's share of the mean: (1/S) Σ_{s in shard} H_s
        loss = cross_entropy(model(Tensor(x[shard])), y[shard]) * (len(shard) / samples)
        loss.backward()
        local = np.concatenate([np.asarray(p.grad, dtype=np.float64).reshape(-1) for p in params])
        comm.Allreduce(local, total, op=MPI.SUM)
        return total

    step()
    times = []
    for _ in range(5):
        comm.Barrier()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        result = {"grad": total.tolist(), "seconds": float(np.median(times)), "ranks": size}
        atomic_write_text(out, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
