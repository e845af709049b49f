"""The scan behind diffsolve/solvers/stability.py's calibration (not a test; run by hand, ~10 min):
for each deterministic solver given on the command line, the RMS of the samples over the data's
RMS on the exact mixtures, every path, karras / log-snr / time grids, nfe 2..21, with the grid.

    python scripts/stability_scan.py heun,rk4,dpm-solver-2,dpm-solver-3 > scan.txt

Each output line: model path schedule solver nfe rms_ratio grid.  Pair it with
``linear_test_amplification`` to compare the warning rule with what the mixtures do.
"""
import sys, math, torch, diffsolve, warnings, itertools
warnings.simplefilter("ignore")
solvers = sys.argv[1].split(",")
models = ["gmm-2d", "gmm-64"]
B = 32
rows = []
for model in models:
    g = diffsolve.exact_model(model)
    data_rms = float(g.sample(4096, generator=torch.Generator().manual_seed(1)).pow(2).mean().sqrt())
    noise = torch.randn(B, *g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for path in diffsolve.PATHS:
        for sched in ("karras", "log-snr", "time"):
            for name in solvers:
                for nfe in range(2, 22):
                    try:
                        res = diffsolve.sample(g, noise, solver=name, nfe=nfe, schedule=sched, path=path)
                    except diffsolve.NFEError:
                        continue
                    except Exception as e:
                        print(model, path, sched, name, nfe, "ERR", type(e).__name__, str(e)[:80]); continue
                    r = float(res.samples.pow(2).mean().sqrt()) / data_rms
                    print(f"{model} {path} {sched} {name} {nfe} {r:.3g} " + ",".join(f"{v:.4g}" for v in res.sigmas.tolist()), flush=True)
