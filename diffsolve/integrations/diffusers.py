"""Any diffsolve solver as a diffusers scheduler: :class:`DiffsolveScheduler`.

    pipe.scheduler = DiffsolveScheduler.from_config(pipe.scheduler.config, solver="unipc-bh2",
                                                     schedule="karras")

The scheduler reads the pipeline's own scheduler config (``num_train_timesteps``, the betas:
``beta_schedule``/``beta_start``/``beta_end``/``trained_betas``/``rescale_betas_zero_snr``,
``prediction_type``, ``timestep_spacing``; a ``FlowMatchEulerDiscreteScheduler`` config's
``shift``) and builds the same canonical denoiser as ``diffsolve.load(unet, scheduler=config)``:
the config parsing is :func:`diffsolve.models.checkpoint.load`'s, called on a stand-in network.

How one network call per ``step`` drives a solver.  ``set_timesteps(n)`` chooses the grid of
levels on which the solver makes exactly ``n`` network calls (``num_inference_steps`` is the
NFE, as in ``diffsolve.sample(..., nfe=n)``), runs the solver once on a probe to learn the level
of every call, and lists their timesteps in ``timesteps``: a two-evaluation method such as
``heun`` lists both evaluations of each step (as diffusers' ``HeunDiscreteScheduler`` does), so
a pipeline loop ``for t in scheduler.timesteps`` makes one network call per entry.  ``order`` is
therefore 1: one pipeline iteration per call.  Each ``step`` hands the network output it
receives to the solver's own ``step`` (:meth:`diffsolve.solvers.Solver.step`) through the
network adapter (prediction type -> ``D(y, s)``): the solver step is replayed with the outputs
received so far and stops at the first evaluation it has no output for; ``prev_sample`` is that
evaluation's point in the pipeline's space ``x = alpha * y`` (after the last call: the sample).
So the pipeline computes exactly what ``diffsolve.sample(diffsolve.load(unet, scheduler=config),
noise, solver=S, schedule=K, nfe=n)`` computes from the same starting state: the network sees
the same inputs at the same timesteps, and the solver state is kept in float64 on the CPU (the
dtype of the pipeline's sample elsewhere, as the driver does); only ``prev_sample`` is rounded
to the pipeline's dtype.

Starting state: the first ``sample`` is ``x`` at the grid's first level ``s_0``, so
``y_0 = sample / alpha_0``.  ``init_noise_sigma`` is ``sigma_0 = alpha_0 s_0`` (just below 1 for
DDPM tables), so a pipeline that scales its latents by it (Stable Diffusion) starts where
``diffsolve.sample`` starts (``y_0 = s_0 * noise``); ``DDPMPipeline``/``DDIMPipeline`` start from
unscaled noise, i.e. ``y_start = noise / alpha_0``.  ``scale_model_input`` is the identity (the
network takes ``x`` as it is).

Timesteps are fractional: the network is called at ``t(s)`` of the table interpolated as
:class:`~diffsolve.paths.DiscreteVPPath` does (float32 ``timesteps``), which ``UNet2DModel`` and
``UNet2DConditionModel`` accept.  A pipeline that casts timesteps to integers before calling the
network evaluates it at the truncated timestep while the update uses the exact level: the
network's noise level then differs from the sample's by up to one table step, an error that does
not shrink with more steps (about 1-4e-4 RMS on a Gaussian mixture, docs/diffusers.md, "Noise
levels between timesteps"); such a call is accepted with a warning.  ``schedule="time-leading"``
/ ``"time-trailing"`` with a one-evaluation solver put every call on an integer timestep and lose
nothing.

Stochastic solvers draw their noise from :class:`~diffsolve.noise.NoiseSource`: with
``seeds=[...]`` (one per sample) the noise is the one ``diffsolve.sample(..., seeds=...)`` draws;
without, one seed per sample is drawn from the ``generator`` the pipeline passes to ``step``
(a list of generators: one each), else from torch's global generator.

Not supported (refused with a message): adaptive solvers (their levels depend on the data),
``use_dynamic_shifting`` (Flux's resolution-dependent shift) and custom ``timesteps``/``sigmas``
lists (diffusers' ``retrieve_timesteps`` refuses them for this scheduler).  Ignored:
``clip_sample``/``thresholding`` (wrap a denoiser in :class:`diffsolve.Thresholded` instead) and
``steps_offset``.  A pipeline that changes the sample between the two calls of one solver step
is not followed (changes at step boundaries are: the state is taken from the sample).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput
except ImportError as e:  # pragma: no cover - diffusers is an optional dependency
    raise ImportError("diffsolve.integrations.diffusers needs diffusers: pip install diffusers") from e

from ..denoisers import NetworkDenoiser
from ..models.checkpoint import load
from ..noise import check_seeds as noise_seeds
from ..paths import FlowPath, Path
from ..schedules import FINALS, SCHEDULES, make_schedule
from ..solvers.base import NoiseSource, StabilityWarning, get_solver
from ..validate import check_seeds

__all__ = ["DiffsolveScheduler", "DiffsolveSchedulerOutput"]

F64 = torch.float64
_TABLE_SPACINGS = ("linspace", "leading", "trailing")


@dataclass
class DiffsolveSchedulerOutput(BaseOutput):
    """``prev_sample``: where the pipeline calls the network next (after the last call: the
    sample); ``pred_original_sample``: the solver's latest data estimate ``D`` (x-space)."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None


class _NeedEval(Exception):
    """Raised by the stand-in network at the first call it has no output for: the solver step
    stops there, and ``x`` is the point the pipeline must evaluate next."""

    def __init__(self, x: Tensor):
        super().__init__("evaluation needed")
        self.x = x


class _ReplayNet(nn.Module):
    """Stands in for the network inside the adapter: returns the outputs the pipeline computed,
    in call order, and raises :class:`_NeedEval` at the first call beyond them.  In ``probe``
    mode it returns zeros and records the network time of each call.  ``wrap`` returns the
    output as diffusers models do (``.sample``), for ``load``'s UNet wrapper."""

    def __init__(self, wrap: bool, t_scale: float = 1.0):
        super().__init__()
        # what load() reads of a UNet2DModel's config (the shape is never checked here)
        self.config = SimpleNamespace(sample_size=1, in_channels=1, num_class_embeds=None)
        self.wrap, self.t_scale = wrap, t_scale
        self.feed: list[Tensor] = []
        self.used = 0
        self.probe: list[float] | None = None   # probe mode: network times recorded here
        self.expect: list[float] = []           # the probe's times, checked on every replayed call
        self.base = 0                           # index of the first call of the replayed step
        self.who = "solver"

    def forward(self, x: Tensor, t: Tensor) -> Any:
        tm = float(t.reshape(-1)[0]) * self.t_scale
        if self.probe is not None:
            self.probe.append(tm)
            out = torch.zeros_like(x)
        elif self.used < len(self.feed):
            k = self.base + self.used
            want = self.expect[k]
            if not math.isclose(tm, want, rel_tol=1e-5, abs_tol=1e-5):
                raise RuntimeError(f"{self.who} asked for network call {k} at timestep {tm:.6g}, but set_timesteps "
                                   f"planned {want:.6g}: its evaluation levels depend on the data, and a pipeline "
                                   "needs them before the first call")
            out = self.feed[self.used]
            self.used += 1
        else:
            raise _NeedEval(x)
        return SimpleNamespace(sample=out) if self.wrap else out


def _canonical_level(s: Any) -> Any:
    """A level as the driver's counted denoiser passes it on: a 0-dim CPU tensor as a float."""
    if isinstance(s, Tensor) and s.ndim == 0 and s.device.type == "cpu":
        return float(s)
    return s


class DiffsolveScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler that runs a diffsolve solver (module docstring: how, and what is
    lost where).

    Config (read from the pipeline's scheduler config by ``from_config``; the rest are ours):

    * ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule`` (``linear``,
      ``scaled_linear``, ``squaredcos_cap_v2``), ``trained_betas``, ``rescale_betas_zero_snr``,
      ``prediction_type`` (``epsilon``, ``v_prediction``, ``sample``): the table and the
      prediction type, parsed by ``diffsolve.load``;
    * ``timestep_spacing``: the default schedule is ``"time-" + timestep_spacing`` (the levels
      diffusers' multistep schedulers place; ``"karras"`` or ``"log-snr"`` usually converge
      faster, docs/diffusers.md);
    * ``flow_matching`` (set by ``from_config`` for a ``FlowMatch*`` config) and ``shift``: a
      rectified-flow model (velocity prediction, network time ``t * num_train_timesteps``); its
      default schedule is ``"flow-shift"`` with the config's shift (``prediction_type`` is then
      ``"flow_prediction"``, and is not read);
    * ``solver`` (a name from ``diffsolve.solvers()``), ``solver_options`` (a dict, e.g.
      ``{"eta": 1.0}`` for ``ddim-eta``), ``schedule`` (a name from
      ``diffsolve.schedules.SCHEDULES``), ``rho``, ``shift``, ``s_min``, ``s_max``, ``final``
      (``"zero"`` or ``"s_min"``), ``allow_extrapolation``: as in :func:`diffsolve.sample`;
    * ``seeds``: one integer per sample for stochastic solvers (see the module docstring).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["FlowMatchEulerDiscreteScheduler"]
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Sequence[float] | None = None,
                 prediction_type: str = "epsilon", timestep_spacing: str = "linspace",
                 rescale_betas_zero_snr: bool = False, flow_matching: bool = False, shift: float | None = None,
                 use_dynamic_shifting: bool = False, solver: str = "dpm++2m", solver_options: dict | None = None,
                 schedule: str | None = None, rho: float | None = None, s_min: float | None = None,
                 s_max: float | None = None, final: str = "zero", seeds: Sequence[int] | None = None,
                 allow_extrapolation: bool = False):
        if use_dynamic_shifting:
            raise ValueError("DiffsolveScheduler does not support use_dynamic_shifting=True (a shift chosen per "
                             "image size at set_timesteps, as Flux does); pass a fixed shift= instead")
        if solver_options is not None and not isinstance(solver_options, dict):
            raise TypeError(f"solver_options must be a dict of the solver's options, "
                            f"got {type(solver_options).__name__}")
        self._solver = get_solver(solver, **(solver_options or {}))  # unknown names/options: refused here
        if getattr(self._solver, "adaptive", False):
            raise ValueError(f"solver {solver!r} is adaptive: its evaluation levels depend on the data, while a "
                             "pipeline needs every timestep before its first network call; use a fixed-grid solver")
        if schedule is not None and (not isinstance(schedule, str) or schedule not in SCHEDULES):
            raise ValueError(f"unknown schedule {schedule!r}; accepted: {', '.join(SCHEDULES)} "
                             f"(or None: the config's timestep_spacing)")
        if final not in FINALS:
            raise ValueError(f"unknown final {final!r}; accepted: {', '.join(FINALS)}")
        if schedule is None and not flow_matching and timestep_spacing not in _TABLE_SPACINGS:
            raise ValueError(f"unknown timestep_spacing {timestep_spacing!r}; accepted: {', '.join(_TABLE_SPACINGS)}")
        if seeds is not None:
            noise_seeds(seeds)
        self._replay, self._den, self.path = self._build_denoiser()
        self._replay.who = f"solver {self._solver.name!r}"
        self.timesteps: Tensor | None = None
        self.num_inference_steps: int | None = None
        self.init_noise_sigma = 1.0
        self.levels: Tensor | None = None
        self.eval_levels: Tensor | None = None
        self._reset()

    # -- config ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``; a ``FlowMatch*`` scheduler's config sets ``flow_matching``
        (with ``prediction_type="flow_prediction"``)."""
        name = config.get("_class_name") if isinstance(config, dict) else None
        # a saved config names its class; a live scheduler's .config does not, but only flow-matching
        # schedulers have a base_shift (Flux/SD3 dynamic shifting) and no betas
        flow = (isinstance(name, str) and name.startswith("FlowMatch")) or (
            isinstance(config, dict) and "base_shift" in config and "beta_schedule" not in config)
        if flow and "flow_matching" not in kwargs:
            kwargs["flow_matching"] = True
            kwargs.setdefault("prediction_type", "flow_prediction")
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def _build_denoiser(self) -> tuple[_ReplayNet, NetworkDenoiser, Path]:
        c = self.config
        if c.flow_matching:
            n = int(c.num_train_timesteps)
            net = _ReplayNet(wrap=False, t_scale=float(n))
            path = FlowPath(t_min=1.0 / n, t_max=1.0 - 1.0 / n, name="diffusers-flow")
            return net, NetworkDenoiser(net, path, "velocity", allow_extrapolation=c.allow_extrapolation), path
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                "rescale_betas_zero_snr")
        cfg = {k: c[k] for k in keys if c[k] is not None}
        if c.trained_betas is not None:
            cfg["trained_betas"] = [float(b) for b in c.trained_betas]
        cfg["prediction_type"] = c.prediction_type
        net = _ReplayNet(wrap=True)
        den = load(net, scheduler=cfg, net_dtype=None, allow_extrapolation=c.allow_extrapolation)
        return net, den, den.path

    @property
    def schedule_name(self) -> str:
        """The schedule ``set_timesteps`` builds: ``schedule``, else ``"flow-shift"`` for a flow
        model, else ``"time-" + timestep_spacing``.  (diffusers' ``from_config`` drops the keys an
        original scheduler left at its defaults, e.g. ``DDPMScheduler()``'s ``"leading"``: this
        scheduler's default ``"linspace"`` then applies.)"""
        return self._schedule_kind()

    def _schedule_kind(self) -> str:
        c = self.config
        if c.schedule is not None:
            return c.schedule
        return "flow-shift" if c.flow_matching else "time-" + c.timestep_spacing

    def __len__(self) -> int:
        return int(self.config.num_train_timesteps)

    # -- timesteps ----------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Plan ``num_inference_steps`` network calls (the NFE): the solver's grid, the level of
        every call and its timestep (``timesteps``, float32, one entry per call).  A budget the
        solver cannot honour exactly (``heun``: odd ones) is refused with the nearest ones."""
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            if isinstance(n, Tensor) and n.numel() == 1 and not n.is_floating_point():
                n = int(n)
            elif hasattr(n, "__index__") and not isinstance(n, bool):
                n = int(n.__index__())
            else:
                raise ValueError(f"num_inference_steps must be a positive integer (the number of network calls), "
                                 f"got {num_inference_steps!r}")
            if n < 1:
                raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        c = self.config
        final_zero = c.final == "zero"
        slv = self._solver.for_nfe(n, final_zero)
        n_steps = slv.steps_for_nfe(n, final_zero)
        kind = self._schedule_kind()
        sigmas = make_schedule(kind, n_steps, path=self.path, s_min=c.s_min, s_max=c.s_max, final=c.final,
                               rho=c.rho if kind == "karras" else None,
                               shift=c.shift if kind == "flow-shift" else None)
        if not c.allow_extrapolation:
            self.path.check_s(sigmas[:-1] if final_zero else sigmas, "schedule level")
        warning = slv.grid_warning(tuple(sigmas.tolist()))
        if warning:
            warnings.warn(warning, StabilityWarning, stacklevel=2)
        self._den.prepare(sigmas, F64)
        levels, times = self._probe(slv, sigmas)
        if len(times) != n:  # pragma: no cover - the solver's own NFE rule says otherwise
            raise RuntimeError(f"internal error: solver {slv.name!r} made {len(times)} calls, expected {n}")
        self._slv, self.levels, self.num_inference_steps = slv, sigmas, n
        self.eval_levels = torch.tensor(levels, dtype=F64)
        self._replay.expect = times
        self._times = [float(v) for v in torch.tensor(times, dtype=torch.float32).tolist()]
        self.timesteps = torch.tensor(times, dtype=torch.float32, device=device)
        self._alpha0 = self._alpha(float(sigmas[0]))
        self.init_noise_sigma = self._alpha0 * float(sigmas[0])
        self._reset()

    def _probe(self, slv, sigmas: Tensor) -> tuple[list[float], list[float]]:
        """Run the solver once on a one-number probe (the network returns zeros) and record the
        level and the network time of every call."""
        levels: list[float] = []
        self._replay.probe = times = []

        def denoise(y, s):
            s = _canonical_level(s)
            levels.append(float(s) if isinstance(s, float) else float(s.reshape(-1)[0]))
            return self._den(y, s)

        try:
            y = torch.zeros(1, 1, dtype=F64)
            src = NoiseSource([0]) if slv.stochastic else None
            state = slv.init(y, sigmas, src)
            for _ in range(sigmas.numel() - 1):
                state = slv.step(state, denoise)
        finally:
            self._replay.probe = None
        return levels, times

    def _alpha(self, s: float) -> float:
        """alpha at canonical level s (1 at s = 0)."""
        if s == 0:
            return 1.0
        p = self.path
        return float(p.alpha(p.t_of_s(torch.tensor([s], dtype=F64)))[0])

    def canonical_start(self, sample: Tensor) -> Tensor:
        """The solver's starting state for a pipeline's first ``sample`` (``x`` at the first
        level): ``sample / alpha_0`` in the state's dtype.  ``diffsolve.sample(...,
        y_start=scheduler.canonical_start(x))`` starts where the pipeline starts."""
        if self.levels is None:
            raise RuntimeError("call set_timesteps first: the starting level depends on the grid")
        dtype = F64 if sample.device.type == "cpu" else sample.dtype
        return sample.to(dtype) / self._alpha0

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """The identity: the network takes the pipeline's ``x`` as it is."""
        return sample

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """``x_t = alpha(t) x_0 + sigma(t) noise`` at network timesteps ``timesteps`` (one, or one
        per sample; fractional ones interpolated as the table is)."""
        t = torch.as_tensor(timesteps, dtype=F64).detach().cpu().reshape(-1) / self._replay.t_scale
        a = self.path.alpha(t).to(original_samples.device, original_samples.dtype)
        sg = self.path.sigma(t).to(original_samples.device, original_samples.dtype)
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        return a.reshape(shape) * original_samples + sg.reshape(shape) * noise.to(original_samples.dtype)

    # -- stepping -----------------------------------------------------------------------
    @property
    def step_index(self) -> int | None:
        """How many network outputs ``step`` has received since ``set_timesteps`` (None before
        the first)."""
        return self._step_index

    def _reset(self) -> None:
        self._step_index: int | None = None
        self._state = None
        self._feed: list[Tensor] = []
        self._base = 0
        self._last: Tensor | None = None
        self._x0: Tensor | None = None
        self._warned_int = False

    def _denoise(self, y: Tensor, s: Any) -> Tensor:
        out = self._den(y, _canonical_level(s))
        self._x0 = out
        return out

    def _start(self, sample: Tensor, generator: Any) -> None:
        if not sample.is_floating_point() or sample.is_complex():
            raise TypeError(f"sample must be a real floating tensor, got dtype {sample.dtype}")
        dtype = F64 if sample.device.type == "cpu" else sample.dtype
        src = None
        if self._slv.stochastic:
            B = sample.shape[0]
            seeds = self.config.seeds
            if seeds is None:
                seeds = _seeds_from(generator, B, sample.device)
            src = NoiseSource(check_seeds(list(seeds), B))
        self._den.prepare(self.levels, dtype)
        y0 = self.canonical_start(sample)
        self._state = self._slv.init(y0, self.levels, src)

    def _run(self, state) -> Tensor | None:
        """Replay the solver step from ``state`` with the outputs fed so far: the next
        evaluation point (x-space), or None when the step completed (the new state is kept)."""
        r = self._replay
        r.feed, r.used, r.base = self._feed, 0, self._base
        try:
            new = self._slv.step(state, self._denoise)
        except _NeedEval as e:
            if r.used != len(self._feed):  # pragma: no cover - replay is deterministic
                raise RuntimeError("internal error: the solver step asked for a network call before using the "
                                   "outputs it was given") from None
            return e.x
        if r.used != len(self._feed):  # pragma: no cover
            raise RuntimeError(f"internal error: the solver step used {r.used} of {len(self._feed)} network outputs")
        self._base += len(self._feed)
        self._feed, self._state = [], new
        return None

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor, generator: Any = None,
             return_dict: bool = True, **kwargs: Any) -> DiffsolveSchedulerOutput | tuple:
        """Take the network output at ``timestep`` (the entry of ``timesteps`` the pipeline is
        at) for ``sample`` and return where to call the network next (``prev_sample``); after the
        last entry ``prev_sample`` is the result.  ``eta``/``use_clipped_model_output`` (what
        ``DDIMPipeline`` passes) are accepted at their defaults only: stochasticity is the
        solver's (``solver="ddim-eta", solver_options={"eta": ...}``)."""
        eta = kwargs.pop("eta", None)
        if eta not in (None, 0, 0.0):
            raise ValueError(f"eta={eta!r}: DiffsolveScheduler takes stochasticity from its solver; use "
                             "from_config(..., solver='ddim-eta', solver_options={'eta': ...})")
        kwargs.pop("use_clipped_model_output", None)
        if kwargs:
            raise TypeError(f"DiffsolveScheduler.step got unexpected arguments {sorted(kwargs)}")
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step")
        k = 0 if self._step_index is None else self._step_index
        n = len(self._times)
        if k >= n:
            raise RuntimeError(f"step called {k + 1} times after set_timesteps({n}): the {n} planned network calls "
                               "are done; call set_timesteps again for a new run")
        self._check_timestep(timestep, k)
        if not isinstance(model_output, Tensor) or not isinstance(sample, Tensor):
            raise TypeError("model_output and sample must be tensors")
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(model_output.shape)}, sample {tuple(sample.shape)}")
        if k == 0:
            self._start(sample, generator)
        elif not self._feed and sample is not self._last and not torch.equal(sample, self._last):
            # the pipeline changed the sample between two solver steps: follow it
            st = self._state
            y = sample.to(device=st.y.device, dtype=st.y.dtype) / self._alpha(st.s)
            self._state = st.replace(y=y)
        self._feed = self._feed + [model_output]
        x = self._run(self._state)
        if x is None:  # the solver step completed: look ahead to its next call, or finish
            st = self._state
            if st.i == st.n_steps:
                x = st.y * self._alpha(st.s) if st.s > 0 else st.y
            else:
                x = self._run(st)
                if x is None:  # pragma: no cover - every step calls the network
                    raise RuntimeError(f"internal error: a step of solver {self._slv.name!r} made no network call")
        self._step_index = k + 1
        prev = x.to(device=sample.device, dtype=sample.dtype)
        self._last = prev
        x0 = None if self._x0 is None else self._x0.to(device=sample.device, dtype=sample.dtype)
        if not return_dict:
            return (prev,)
        return DiffsolveSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def _check_timestep(self, timestep: Any, k: int) -> None:
        want = self._times[k]
        try:
            got = float(torch.as_tensor(timestep).reshape(-1)[0])
        except (TypeError, ValueError, RuntimeError, IndexError):
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}") from None
        if got == want:
            return
        if got == int(got) and abs(got - want) < 1:
            if not self._warned_int:
                warnings.warn(f"the pipeline passed integer timestep {got:g} where the scheduler planned {want:.4f}: "
                              "the network is evaluated up to one table step away from the sample's noise level "
                              "(pass timesteps as floats to avoid this error)", UserWarning, stacklevel=3)
                self._warned_int = True
            return
        raise ValueError(f"step got timestep {got:g}, but network call {k} of {len(self._times)} was planned at "
                         f"{want:g}: call the network at scheduler.timesteps in order, one step per entry")


def _seeds_from(generator: Any, batch: int, device: torch.device) -> list[int]:
    """One seed per sample drawn from the pipeline's generator(s) (torch's global one if None)."""
    hi = 2**63 - 1
    if generator is None:
        return torch.randint(0, hi, (batch,)).tolist()
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}: give one per sample")
        return [int(torch.randint(0, hi, (1,), generator=g, device=g.device)[0]) for g in generator]
    return torch.randint(0, hi, (batch,), generator=generator, device=generator.device).tolist()
