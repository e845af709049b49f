"""Reproduces the accuracy tables of docs/diffusers.md.

DPM-Solver++(2M) on the exact Gaussian mixture ``gmm-64`` with the ``ddpm-linear`` table and its
exact eps network, run (i) by diffusers' ``DPMSolverMultistepScheduler`` (stock configuration,
float32 tables, the network called at its integer timesteps) and (ii) by diffsolve on several
grids.  Every run starts from the same x_T; its error is the RMS difference (over all samples
and coordinates) from the exact probability-flow ODE solution that starts from the *same x_T at
the run's own first level* and ends at s = 0 (RK4 in lambda = -log s down to s = 1e-6 on the
exact denoiser, then D(y, 1e-6); its own error is printed).

    python docs/diffusers_accuracy.py            # about 2-4 minutes on one busy core
"""

from __future__ import annotations

import time
import warnings
from functools import lru_cache

import torch

import diffsolve
from diffsolve import from_network, get_path, make_schedule
from diffsolve.models.gmm import builtin

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
F64 = torch.float64
NFES = (5, 10, 20)
BATCH = 64
REF_STEPS = 200

G = builtin("gmm-64")
PATH = get_path("ddpm-linear")
NET = G.network(PATH, "eps")
D = from_network(NET, PATH, "eps")
XT = torch.randn(BATCH, 64, dtype=F64, generator=torch.Generator().manual_seed(0))


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


def y_start(t0: float) -> torch.Tensor:
    return XT / PATH.alpha(torch.tensor([t0], dtype=F64))


@lru_cache(maxsize=None)
def reference(t0: float, steps: int = REF_STEPS) -> torch.Tensor:
    """Exact ODE solution at s = 0 from x_T at timestep t0 (RK4 in lambda on the exact denoiser)."""
    s0 = float(PATH.s(torch.tensor(t0, dtype=F64)))
    grid = make_schedule("log-snr", steps + 1, s_min=1e-6, s_max=s0)  # ..., 1e-6, 0
    return diffsolve.sample(G, XT, solver="rk4", nfe=None, schedule=grid, y_start=y_start(t0)).samples


def diffusers_run(n: int, **config) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' loop, stock tables; returns x0 and the timesteps."""
    from diffusers import DPMSolverMultistepScheduler

    sch = DPMSolverMultistepScheduler(**config)
    sch.set_timesteps(n)
    x = XT.clone()
    for t in sch.timesteps:
        x = sch.step(NET(x, torch.full((BATCH,), float(t), dtype=F64)), t, x).prev_sample
    return x, sch.timesteps


def ours(n: int, schedule, t0: float = float(PATH.t_max)) -> torch.Tensor:
    nfe = n if isinstance(schedule, str) else None
    return diffsolve.sample(D, XT, solver="dpm++2m", nfe=nfe, schedule=schedule, y_start=y_start(t0)).samples


def table(title: str, rows: list[tuple[str, object]], nfes=NFES) -> None:
    """Print a markdown table: per NFE the RMS error and the last evaluated timestep."""
    print(f"### {title}\n")
    print("| run | " + " | ".join(f"NFE {n}: error (last t)" for n in nfes) + " |")
    print("|---|" + "---:|" * len(nfes))
    for label, fn in rows:
        cells = []
        for n in nfes:
            x, t0, t_last = fn(n)
            cells.append(f"{rms(x, reference(t0)):.2e} ({t_last:.4g})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()


def theirs(**cfg):
    def fn(n):
        x, ts = diffusers_run(n, **cfg)
        return x, float(ts[0]), float(ts[-1])
    return fn


def our(kind: str):
    def fn(n):
        s = make_schedule(kind, n, path=PATH)
        t = PATH.t_of_s(s[:-1])
        return ours(n, kind), float(t[0]), float(t[-1])
    return fn


def jump_floors(ts: list[float]) -> dict[float, float]:
    """Error of the final jump alone: the exact ODE solution down to s(t), then y = D(y, s(t))."""
    levels = PATH.s(torch.tensor(ts, dtype=F64))
    fine = make_schedule("log-snr", 2 * REF_STEPS, path=PATH, final="s_min")
    grid = torch.unique(torch.cat([fine, levels])).flip(0)
    res = diffsolve.sample(G, XT, solver="rk4", nfe=None, schedule=grid, y_start=y_start(float(PATH.t_max)),
                           return_trajectory=True)
    out = {}
    for t, s in zip(ts, levels):
        y = res.trajectory[int((grid == s).nonzero())]
        out[t] = rms(G(y, s), reference(float(PATH.t_max)))
    return out


def main() -> None:
    start = time.time()
    t_max = float(PATH.t_max)
    print(f"reference self-check: RK4 {REF_STEPS} vs {2 * REF_STEPS} steps: "
          f"{rms(reference(t_max), reference(t_max, 2 * REF_STEPS)):.1e} RMS")
    floors = jump_floors([0.0, 47.0, 50.0, 90.0, 100.0, 166.0, 200.0])
    print("error of the final jump alone (exact ODE down to s(t), then D), by the last evaluated t:")
    print("| last t | " + " | ".join(f"{t:g}" for t in floors) + " |")
    print("|---|" + "---:|" * len(floors))
    print("| RMS error | " + " | ".join(f"{e:.2e}" for e in floors.values()) + " |\n")
    for n in NFES + (50, 100):
        a, b = our("karras")(n)[0], theirs(use_karras_sigmas=True)(n)[0]
        print(f"NFE {n}: RMS difference diffsolve karras vs diffusers karras (rounded t): {rms(a, b):.2e}")
    print()

    table("(a) Karras levels: evaluated exactly vs at rounded timesteps", [
        ("diffsolve `karras`: network at the exact fractional t", our("karras")),
        ("diffusers `use_karras_sigmas=True`: network at round(t)", theirs(use_karras_sigmas=True)),
    ], nfes=NFES + (50, 100))
    table("(b) where the final jump to s = 0 starts", [
        ("diffsolve `time` (uniform t, 999..0 evaluated, then 0)", our("time")),
        ("diffsolve `log-snr`", our("log-snr")),
        ("diffsolve `karras`", our("karras")),
        ("diffusers `linspace` (DPMSolverMultistep default)", theirs(timestep_spacing="linspace")),
        ("diffsolve `time-linspace` (the same levels, float64)", our("time-linspace")),
        ("diffusers `leading`", theirs(timestep_spacing="leading")),
        ("diffusers `trailing`", theirs(timestep_spacing="trailing")),
    ])
    print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
