"""``diffsolve sample`` (sample a model, write a picture, print quality numbers) and
``diffsolve solvers`` (the solver table)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, TextIO

import torch
from torch import Tensor

from .. import data
from ..bench.ray_address import check_ray_address
from ..guidance import CFG
from ..io import atomic_save_tensor
from ..metrics import compare_to_exact, image_quality
from ..models import load_model
from ..models.gmm import GaussianMixture
from ..plots import save_samples
from ..sample import sample
from ..solvers import SOLVERS, NFEError, NoiseSource, get_solver, list_solvers
from .args import (IMAGE_EXTENSIONS, UsageError, add_quiet, finite_float, library_check, model_name, nfe_arg,
                   nonneg_float, nonneg_int, output_file, path_name, positive_float, positive_int, sample_count,
                   schedule_name, seed_arg, solver_name)

__all__ = ["add_parsers", "cmd_sample", "cycled_labels", "cmd_solvers", "quality_lines", "exact_lines", "image_lines", "cli_nfe_hint"]

DEFAULT_NFE = 10


def _print_table(rows: list[dict], cols: list[str], file: TextIO = sys.stdout) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=file)
    print("  ".join("-" * widths[c] for c in cols), file=file)
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols), file=file)


def cmd_solvers(args: argparse.Namespace) -> int:
    _print_table(list_solvers(), ["name", "order", "stochastic", "nfe", "aliases", "paper"])
    return 0


def quality_lines(model: Any, x: Tensor, labels: Tensor | None) -> list[str]:
    """What the shipped metrics say of samples ``x`` of ``model``: distribution distances against
    exact samples for an exact mixture, the MNIST metrics (docs/metrics.md) for 28x28 grey
    images, nothing for other models. Too few samples for a metric: a line saying so."""
    if isinstance(model, GaussianMixture):
        try:
            r = compare_to_exact(model, x.to(torch.float64))
        except ValueError as e:  # e.g. one sample: the unbiased MMD needs two
            return [f"distances to exact samples not computed: {e}"]
        return exact_lines(r)
    if tuple(x.shape[1:]) != (1, 28, 28):
        return []
    why = data.mnist_missing()  # precision/recall read the MNIST test images; FD and accuracy do not
    try:
        q = image_quality(x, labels, knn=why is None)
    except ValueError as e:  # e.g. one image: no Frechet distance
        return [f"quality not computed: {e}"]
    return image_lines(q, why)


def exact_lines(r: dict) -> list[str]:
    """The lines of ``compare_to_exact``'s numbers."""
    return [f"against {r['n']} exact samples (floor: two exact sets of that size):",
            f"  sliced W2 {r['sliced_w2']:.4g} (floor {r['sliced_w2_floor']:.4g}), "
            f"MMD^2 {r['mmd']:.3g} (floor {r['mmd_floor']:.3g}), "
            f"mode-weight TV {r['mode_tv']:.3g} (expected {r['mode_tv_floor']:.3g})"]


def image_lines(q: dict, why: str | None = None) -> list[str]:
    """The lines of ``image_quality``'s numbers; ``why``: why precision/recall were not computed."""
    if why or "precision" not in q:
        pr = f"  precision/recall not computed: {why or 'they need more than 5 samples'}"
    else:
        pr = (f"  k-NN precision {q['precision']:.3f}, recall {q['recall']:.3f}, "
              f"density {q['density']:.3f}, coverage {q['coverage']:.3f}")
    out = ["quality (the shipped MNIST CNN; docs/metrics.md):"]
    if "class_accuracy" in q:
        out.append(f"  class accuracy {100 * q['class_accuracy']:.1f}% (classified as the requested label)")
    out.append(f"  Frechet distance {q['fd']:.2f} to MNIST test; {q['n']} real training images score "
               f"{q['fd_floor']:.2f} (ratio {q['fd_ratio']:.2f}; FD is biased upward at small n)")
    return out + [pr]


def cli_nfe_hint(message: str) -> str:
    """A library NFE message said in flags: its Python hint ``nfe=None`` becomes ``--nfe none``
    and ``nfe=N`` becomes ``--nfe N``.

    >>> cli_nfe_hint("solver 'x' cannot use nfe=7; pass nfe=None with a schedule name")
    "solver 'x' cannot use --nfe 7; use --nfe none with a schedule name"
    """
    message = message.replace("pass nfe=None", "use --nfe none").replace("nfe=None", "--nfe none")
    return re.sub(r"\bnfe=(\S)", r"--nfe \1", message)


def _nfe_and_tolerances(args: argparse.Namespace) -> tuple[int | None, dict[str, float]]:
    """The NFE to pass to ``sample`` and the solver's tolerance options, checked against the
    solver: adaptive solvers take ``--nfe none`` and ``--rtol/--atol``, the others an NFE; a
    ``--plan`` brings its own NFE (``--nfe`` may repeat it)."""
    tolerances = {k: getattr(args, k) for k in ("rtol", "atol") if getattr(args, k) is not None}
    given = "nfe" in vars(args)
    if vars(args).get("plan") is not None or args.solver == "auto":
        what = "--plan" if vars(args).get("plan") is not None else "--solver auto"
        if tolerances:
            raise UsageError(f"argument --{next(iter(tolerances))}: {what} is not adaptive (it spends exactly --nfe "
                             "calls); --rtol/--atol apply to the adaptive solvers (--solver dpm-solver-12/-23)")
        if given and args.nfe is None:
            raise UsageError(f"argument --nfe: 'none' is for adaptive solvers, not {what}")
        if vars(args).get("plan") is not None:
            if args.solver != "auto" or args.schedule is not None:
                raise UsageError("argument --plan: the plan fixes the solver and the levels; drop --solver/--schedule")
            return (args.nfe if given else None), {}
        if args.schedule is not None:
            raise UsageError("argument --schedule: --solver auto (the default) chooses its own grid; name a "
                             "solver (e.g. --solver dpm++2m) to use --schedule")
        return (args.nfe if given else DEFAULT_NFE), {}
    if args.schedule is None:
        args.schedule = "karras"
    cls = type(get_solver(args.solver))
    if getattr(cls, "adaptive", False):
        if given and args.nfe is not None:
            raise UsageError(f"argument --nfe: solver {cls.name!r} is adaptive: its NFE follows from --rtol/--atol; "
                             "use --nfe none")
        return None, tolerances
    if tolerances:
        adaptive = ", ".join(n for n, c in sorted(SOLVERS.items()) if getattr(c, "adaptive", False))
        raise UsageError(f"argument --{next(iter(tolerances))}: solver {cls.name!r} is not adaptive (it spends "
                         f"exactly --nfe calls); --rtol/--atol apply to the adaptive solvers: {adaptive}")
    if given and args.nfe is None:
        raise UsageError(f"argument --nfe: 'none' is for adaptive solvers; solver {cls.name!r} needs a positive integer")
    return (args.nfe if given else DEFAULT_NFE), {}


def cycled_labels(args: argparse.Namespace, model: Any, n: int, allow_null: bool = False) -> Tensor | None:
    """The ``--label`` values cycled over ``n`` samples, checked against the model's classes
    (``allow_null``: the null label ``num_classes``, "no condition", is accepted too)."""
    if args.label is None:
        return None
    k = int(getattr(model, "num_classes", 0) or 0)
    if not k:
        raise UsageError(f"argument --label: model {args.model!r} is unconditional (it has no classes)")
    top = k if allow_null else k - 1
    bad = [v for v in args.label if v > top]
    if bad:
        raise UsageError(f"argument --label: {bad[0]} is out of range; model {args.model!r} has classes 0..{k - 1}"
                         + (f" (and {k}: no condition)" if allow_null else ""))
    return torch.tensor([args.label[i % len(args.label)] for i in range(n)])


#: ``--guide``: classifier-free guidance (the default), Adaptive Guidance, and the guidance of the
#: unconditional MNIST model by a classifier (noisy classifier on y) or a reward (verifier on x0-hat)
GUIDES = ("cfg", "adaptive-cfg", "classifier", "free")


def _guided(args: argparse.Namespace, model: Any, labels: Tensor | None) -> tuple[Any, str]:
    """The denoiser to sample (the model, or guidance around it) and the words describing it."""
    guide = vars(args).get("guide", "cfg")
    if guide != "cfg":
        return _other_guide(args, guide, model, labels)
    if args.guidance == 1.0 and args.guidance_interval is None:
        return model, ""
    if labels is None:
        raise UsageError("--guidance needs --label (classifier-free guidance steers towards the labels)")
    lo, hi = args.guidance_interval or (0.0, float("inf"))
    if lo >= hi:
        raise UsageError(f"argument --guidance-interval: S_LO {lo:g} must be below S_HI {hi:g}")
    words = f", guidance {args.guidance:g}" + (f" on s in [{lo:g}, {hi:g}]" if args.guidance_interval else "")
    return CFG(model, scale=args.guidance, interval=(lo, hi)), words


def _other_guide(args: argparse.Namespace, guide: str, model: Any, labels: Tensor | None) -> tuple[Any, str]:
    """``--guide adaptive-cfg|classifier|free``: Adaptive Guidance (its default s_check and gamma)
    around the conditional model, or the unconditional MNIST model steered toward ``--label`` by
    the noise-conditional classifier (classifier guidance) or the steering verifier read at
    x0-hat (universal guidance)."""
    from ..guidance import AdaptiveGuidance, ClassifierGuidance, UniversalGuidance

    if labels is None:
        raise UsageError(f"--guide {guide} needs --label (guidance steers towards the labels)")
    if args.out_dir is not None:
        raise UsageError(f"argument --guide: {guide} is not available with --out-dir (sharded runs record "
                         "classifier-free guidance only); use --guide cfg or draw without --out-dir")
    if guide == "adaptive-cfg":
        lo, hi = args.guidance_interval or (0.0, float("inf"))
        if lo >= hi:
            raise UsageError(f"argument --guidance-interval: S_LO {lo:g} must be below S_HI {hi:g}")
        ag = AdaptiveGuidance(model, scale=args.guidance, interval=(lo, hi))
        return ag, f", adaptive guidance {args.guidance:g} (gamma {ag.gamma:g}, s_check {ag.s_check:g})"
    if args.guidance_interval is not None:
        raise UsageError(f"argument --guidance-interval: only with --guide cfg or adaptive-cfg, not {guide}")
    if tuple(getattr(model, "shape", ())) != (1, 28, 28) or getattr(model, "null_label", None) is None:
        raise UsageError(f"argument --guide: {guide} guidance steers the unconditional MNIST model with the shipped "
                         f"MNIST classifiers; model {args.model!r} is not MNIST-shaped with a null label "
                         "(use --model mnist, or --guide cfg)")
    if args.guidance < 0:
        raise UsageError(f"argument --guidance: {guide} guidance needs a scale >= 0, got {args.guidance:g}")
    if guide == "classifier":
        from ..models.noisy_classifier import load_noisy_classifier

        return (ClassifierGuidance(model, load_noisy_classifier(), scale=args.guidance),
                f", classifier guidance {args.guidance:g} on the unconditional model")
    from ..models.verifier import class_rewards

    return (UniversalGuidance(model, class_rewards(model, labels), scale=args.guidance),
            f", universal guidance {args.guidance:g} on the unconditional model")


#: flags of sharded sampling (``--out-dir``), refused without it
_SHARD_FLAGS = (("shard_size", "--shard-size"), ("ray", "--ray"), ("ray_cpus", "--ray-cpus"), ("format", "--format"))
#: run fields (diffsolve.shards.SampleRun) as the flags that set them
_FIELD_FLAGS = {"labels": "--label", "model_sha256": "--model (its weights' digest)"}


def _check_shard_flags(args: argparse.Namespace) -> None:
    if args.out_dir is None:
        given = next((flag for key, flag in _SHARD_FLAGS if key in vars(args)), None)
        if given:
            raise UsageError(f"argument {given}: only with --out-dir DIR (sharded sampling)")
        return
    for key, flag in (("out", "--out"), ("save_tensor", "--save-tensor")):
        if vars(args).get(key):
            raise UsageError(f"argument {flag}: not with --out-dir (the samples go to shards in "
                             f"{args.out_dir}; read them with diffsolve.shards.read_shards)")
    if "ray_cpus" in vars(args) and vars(args).get("ray") != "local":
        raise UsageError("argument --ray-cpus: only with --ray local (a running cluster has its own CPUs)")


def _sample_shards(args: argparse.Namespace, model: Any, nfe: int | None, tolerances: dict[str, float],
                   guided: str) -> int:
    """``diffsolve sample --out-dir DIR``: the run drawn (or resumed) in shards, then its quality
    numbers streamed over the shards."""
    from ..shards import shard_quality
    from ..shards import RunMismatch, SampleRun, run_shards

    run = SampleRun(model=args.model, solver=args.solver, nfe=nfe, schedule=args.schedule, path=args.path,
                    rtol=tolerances.get("rtol"), atol=tolerances.get("atol"), seed=args.seed, num=args.num,
                    shard_size=vars(args).get("shard_size", 1000),
                    labels=tuple(args.label) if args.label is not None else None, guidance=args.guidance,
                    guidance_interval=tuple(args.guidance_interval) if args.guidance_interval else None,
                    format=vars(args).get("format", "safetensors"))
    log = None if args.quiet else print
    try:
        res = run_shards(run, args.out_dir, ray=vars(args).get("ray"), ray_cpus=vars(args).get("ray_cpus"),
                         progress=not args.quiet, log=log)
    except RunMismatch as e:
        flag = _FIELD_FLAGS.get(e.field, "--" + e.field.replace("_", "-"))
        raise UsageError(f"argument --out-dir: {args.out_dir} holds a run with {flag} {e.old!r}, this command "
                         f"asks {e.new!r}; resume with the run's settings (see {args.out_dir}/run.json) or "
                         "write to another --out-dir") from None
    except NFEError as e:
        raise NFEError(cli_nfe_hint(str(e))) from None
    print(f"{args.num} sample{'s' if args.num != 1 else ''} from {args.model} with {args.solver}: "
          f"{'adaptive' if nfe is None else nfe} NFE{guided}, in {res.total} shard{'s' if res.total != 1 else ''} "
          f"of {run.shard_size} in {os.path.abspath(args.out_dir)}: {len(res.written)} written now, "
          f"{len(res.skipped)} already there")
    if args.metrics:
        why = data.mnist_missing()
        try:
            kind, q = shard_quality(args.out_dir, knn=why is None)
        except ValueError as e:
            print(f"quality not computed: {e}")
            return 0
        for line in exact_lines(q) if kind == "exact" else image_lines(q, why) if kind == "mnist" else []:
            print(line)
    return 0


def _grid_name(args: argparse.Namespace) -> str:
    return "plan" if vars(args).get("plan") is not None else "auto grid" if args.solver == "auto" else args.schedule


def _load_plan(file: str) -> Any:
    from ..plan import Plan

    try:
        return Plan.load(file)
    except (ValueError, OSError) as e:
        raise UsageError(f"argument --plan: {e}") from None


def cmd_sample(args: argparse.Namespace) -> int:
    _check_shard_flags(args)
    nfe, tolerances = _nfe_and_tolerances(args)
    try:
        model = load_model(args.model)
    except (ValueError, OSError) as e:  # a checkpoint found at parse time that does not load
        raise UsageError(f"argument --model: {e}") from None
    labels = cycled_labels(args, model, args.num)
    den, guided = _guided(args, model, labels)
    if args.out_dir is not None:
        if not hasattr(model, "shape"):
            raise UsageError(f"argument --model: {args.model!r} is not a diffusion/flow model; --out-dir "
                             "draws continuous samples")
        if vars(args).get("plan") is not None:
            raise UsageError("argument --plan: not with --out-dir yet (a sharded run records a solver name and a "
                             "schedule name in its manifest); sample a plan without --out-dir")
        return _sample_shards(args, model, nfe, tolerances, guided)
    seeds = list(range(args.seed, args.seed + args.num))
    noise = NoiseSource.initial(seeds, tuple(model.shape))
    cond = {"labels": labels} if labels is not None else {}
    if vars(args).get("guide") == "free":  # the reward steers toward the labels; the model runs unconditional
        cond = {"labels": torch.full_like(labels, model.null_label)}
    solver = args.solver if vars(args).get("plan") is None else _load_plan(args.plan)
    try:
        res = sample(den, noise, solver=solver, nfe=nfe, schedule=args.schedule, seeds=seeds, cond=cond,
                     progress=not args.quiet, **({"path": args.path} if args.path else {}), **tolerances)
    except NFEError as e:
        raise NFEError(cli_nfe_hint(str(e))) from None
    x = res.samples.float()
    args.out = vars(args).get("out", "samples.png")
    if args.out:
        nrow = len(args.label) if args.label and 4 <= len(args.label) <= 16 and args.num % len(args.label) == 0 else None
        save_samples(x, args.out, nrow=nrow,
                     title=f"{args.model}: {res.solver}, {res.nfe} NFE, {_grid_name(args)}{guided}")
    if args.save_tensor:
        atomic_save_tensor(x, args.save_tensor)
    print(f"{args.num} sample{'s' if args.num != 1 else ''} from {args.model} with {res.solver}: {res.nfe} NFE{guided}, "
          f"noise levels {float(res.sigmas[0]):.4g} -> {float(res.sigmas[-1]):.4g}"
          + (f"; wrote {os.path.abspath(args.out)}" if args.out else ""))
    if args.metrics:
        for line in quality_lines(model, x, labels):
            print(line)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solvers", help="list every solver with its order, NFE rule and paper")
    p.set_defaults(func=cmd_solvers)

    p = sub.add_parser("sample", help="sample a model and write a picture")
    p.add_argument("--model", default="gmm-2d", type=model_name,
                   help="an exact mixture (gmm-2d, gmm-64, gmm-3072), a shipped model or a checkpoint path")
    p.add_argument("--solver", default="auto", type=solver_name,
                   help="'auto' (default: solver, grid and ending chosen from --nfe and the path; docs/tuning.md) "
                        "or a name from 'diffsolve solvers'")
    p.add_argument("--plan", default=None, metavar="PLAN",
                   help="sample with a plan fitted by 'diffsolve tune' (a .json file) or a shipped one "
                        "(mnist-g1.25-nfe5: the MNIST model at CFG 1.25, 5 NFE): its solver, options and levels")
    p.add_argument("--nfe", type=nfe_arg, default=argparse.SUPPRESS,
                   help=f"network evaluations (default {DEFAULT_NFE}); 'none' for adaptive solvers (dpm-solver-12/-23)")
    p.add_argument("--rtol", type=positive_float, default=None, help="relative tolerance of an adaptive solver")
    p.add_argument("--atol", type=positive_float, default=None, help="absolute tolerance of an adaptive solver")
    p.add_argument("--schedule", default=None, type=schedule_name,
                   help="noise levels of a named solver (default karras); --solver auto chooses its own")
    p.add_argument("--path", default=None, type=path_name,
                   help="path whose noise range the schedule spans (default: the model's)")
    p.add_argument("--num", type=sample_count, default=1000, help="number of samples")
    p.add_argument("--seed", type=seed_arg, default=0, help="first per-sample seed")
    p.add_argument("--label", type=nonneg_int, nargs="+", default=None, help="class labels (cycled) for conditional models")
    p.add_argument("--guidance", type=finite_float, default=1.0,
                   help="guidance scale (cfg: 1 = the conditional model; needs --label)")
    p.add_argument("--guide", choices=GUIDES, default="cfg",
                   help="cfg: classifier-free guidance (default); adaptive-cfg: Adaptive Guidance (stops the "
                        "unconditional branch per sample once it agrees with the conditional one); classifier / "
                        "free: the unconditional MNIST model steered toward --label by the shipped noisy classifier "
                        "(classifier guidance) or the steering verifier at x0-hat (universal guidance); --guidance "
                        "is the scale (docs/guidance.md)")
    p.add_argument("--guidance-interval", type=nonneg_float, nargs=2, default=None, metavar=("S_LO", "S_HI"),
                   help="guide only at canonical noise levels in [S_LO, S_HI] (Kynkaanniemi et al. 2024)")
    p.add_argument("--no-metrics", dest="metrics", action="store_false",
                   help="do not print the quality numbers (exact mixtures: distances to exact samples; "
                        "MNIST-shaped models: class accuracy, FD, precision/recall)")
    p.add_argument("--out", default=argparse.SUPPRESS, type=output_file(IMAGE_EXTENSIONS, allow_empty=True),
                   help="picture to write (scatter for 2-D, grid for images; default samples.png); '' writes none")
    p.add_argument("--save-tensor", default=None, type=output_file((".pt", ".pth")), help="also save the samples (.pt)")
    g = p.add_argument_group("sampling at scale (docs/sampling-at-scale.md)")
    g.add_argument("--out-dir", default=None, type=_out_dir, metavar="DIR",
                   help="write the samples in shards named by seed range (resumes a run there: only missing "
                        "shards are drawn); no picture")
    g.add_argument("--shard-size", type=positive_int, default=argparse.SUPPRESS,
                   help="samples a shard (default 1000)")
    g.add_argument("--format", choices=("safetensors", "png"), default=argparse.SUPPRESS,
                   help="shard files: one .safetensors (samples, labels, seeds; default) or a folder of PNGs")
    g.add_argument("--ray", default=argparse.SUPPRESS, metavar="local|ADDRESS",
                   type=library_check("ray_address", check_ray_address),
                   help="draw the shards on Ray: 'local' starts a cluster here, else HOST:PORT of a running one "
                        "(checked at once: it must accept a connection)")
    g.add_argument("--ray-cpus", type=positive_int, default=argparse.SUPPRESS, help="CPUs of a --ray local cluster")
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_sample)


def _out_dir(text: str) -> str:
    """A run directory: an existing directory or one that can be made (its parent exists)."""
    if not text:
        raise argparse.ArgumentTypeError("'' is not a directory name")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text!r}: its parent directory {parent!r} does not exist")
    return text
