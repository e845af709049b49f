"""Loop overhead: the time a sampling loop spends *outside* the network, per step.

Both loops run the same tiny network (a two-layer MLP on 2-D data with the timestep as an extra
input, float32) on the same DDPM table (``ddpm-linear``), the same timesteps (diffusers'
``timestep_spacing="linspace"``, our ``time-linspace``) and the same method (DPM-Solver++(2M)):

* ours: ``diffsolve.sample(den, noise, solver="dpm++2m", ...)`` with ``den = from_network(net,
  path, "eps")``, the whole call (schedule construction, range checks, state in float64, NFE
  check); the adapter is built once, as a pipeline builds its scheduler once;
* diffusers: ``scheduler.set_timesteps(n)`` then the canonical loop
  ``x = scheduler.step(net(scheduler.scale_model_input(x, t), t), t, x).prev_sample`` (the
  scheduler object built once).

The network's own time is measured inside it (``time.perf_counter`` around each call) and
subtracted; what is left, divided by the number of steps, is the loop overhead per step.  The
two loops alternate within one run (so that a busy machine slows both alike) and the medians
over the repeats are compared as a ratio ours / diffusers.

Example::

    >>> from diffsolve.bench.overhead import measure_overhead
    >>> r = measure_overhead(batch_sizes=(1,), steps=5, repeats=3)   # doctest: +SKIP
    >>> sorted(r[0])                                                  # doctest: +SKIP
    ['batch', 'diffusers_us_per_step', 'ours_us_per_step', 'ratio', 'repeats', 'steps']
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch

from ..denoisers import from_network
from ..sample import sample

__all__ = ["TinyNet", "measure_overhead", "format_overhead"]

#: CPU time of the calling thread: on a shared machine, time stolen by other processes is not
#: counted (wall-clock time would charge it to whichever loop happened to be running)
_clock = time.thread_time


class TinyNet(torch.nn.Module):
    """eps(x, t) = MLP([x, t/1000]): 3 -> width -> 2 with SiLU (about 450 parameters at width 64).
    Times its own calls in ``self.seconds``."""

    def __init__(self, dim: int = 2, width: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1, self.l2 = torch.nn.Linear(dim + 1, width), torch.nn.Linear(width, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        self.seconds, self.calls = 0.0, 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t0 = _clock()
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        h = torch.cat([x.float(), (t / 1000.0)[:, None]], 1)
        out = self.l2(torch.nn.functional.silu(self.l1(h))).to(x.dtype)
        self.seconds += _clock() - t0
        self.calls += 1
        return out


def _ours(net: TinyNet, den, noise: torch.Tensor, steps: int) -> tuple[float, float]:
    net.seconds, net.calls = 0.0, 0
    t0 = _clock()
    with torch.no_grad():
        res = sample(den, noise, solver="dpm++2m", nfe=steps, schedule="time-linspace")
    total = _clock() - t0
    assert res.nfe == net.calls == steps
    return total, net.seconds


def _diffusers(net: TinyNet, sched, noise: torch.Tensor, steps: int) -> tuple[float, float]:
    net.seconds, net.calls = 0.0, 0
    t0 = _clock()
    with torch.no_grad():
        sched.set_timesteps(steps)
        x = noise * sched.init_noise_sigma
        for t in sched.timesteps:
            x = sched.step(net(sched.scale_model_input(x, t), t), t, x).prev_sample
    total = _clock() - t0
    assert net.calls == steps
    return total, net.seconds


def measure_overhead(batch_sizes: Sequence[int] = (1, 64), steps: int = 20, repeats: int = 50,
                     warmup: int = 3, threads: int | None = 1) -> list[dict]:
    """Median loop overhead per step (microseconds) of diffsolve and diffusers, interleaved.

    Returns one dict per batch size with ``ours_us_per_step``, ``diffusers_us_per_step`` and
    ``ratio`` (ours / diffusers).  Raises ImportError when diffusers is not installed.
    """
    from diffusers import DPMSolverMultistepScheduler

    if threads is not None:
        torch.set_num_threads(threads)
    net = TinyNet()
    den = from_network(net, "ddpm-linear", "eps")  # built once, as the scheduler is
    sched = DPMSolverMultistepScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                        solver_order=2, algorithm_type="dpmsolver++",
                                        timestep_spacing="linspace")
    out = []
    for B in batch_sizes:
        noise = torch.randn(B, 2, generator=torch.Generator().manual_seed(B))
        ours, theirs = [], []
        for r in range(warmup + repeats):
            a_tot, a_net = _ours(net, den, noise, steps)
            b_tot, b_net = _diffusers(net, sched, noise, steps)
            if r >= warmup:
                ours.append((a_tot - a_net) / steps)
                theirs.append((b_tot - b_net) / steps)
        o, d = statistics.median(ours), statistics.median(theirs)
        out.append({"batch": B, "steps": steps, "repeats": repeats, "ours_us_per_step": 1e6 * o,
                    "diffusers_us_per_step": 1e6 * d, "ratio": o / d})
    return out


def format_overhead(rows: list[dict]) -> str:
    """A Markdown table of :func:`measure_overhead`'s result."""
    lines = ["| batch | steps | ours (us/step) | diffusers (us/step) | ratio ours/diffusers |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['steps']} | {r['ours_us_per_step']:.0f} | "
                     f"{r['diffusers_us_per_step']:.0f} | {r['ratio']:.2f} |")
    return "\n".join(lines)
