"""Rewards: functions ``log r(x0) -> (B,)`` on data, with a gradient when they have one.

DESIGN.md: rewards and measurements are one idea.  The same object feeds gradient guidance
(a covector ``lam grad log r`` through x0-hat), particle weights (potentials of x0-hat) and
search (the score a candidate is chosen by).  The target of steering with scale ``lam`` is the
*tilted* distribution

    p_lam(x) = p(x) exp(lam r(x)) / Z,      Z = E_p[exp(lam r(x))].

Built-ins:

* :class:`FunctionReward` wraps any ``f(x0) -> (B,)`` (differentiable through autograd when
  it is written in torch; ``differentiable=False`` for black boxes: search and particle
  methods still work, gradient methods refuse it);
* :class:`Linear`: ``r(x) = <a, x>`` whose tilt of a Gaussian mixture is a Gaussian mixture
  in closed form (:meth:`Linear.tilt`), the exact target of the steering benchmark;
* :class:`ClassifierReward`: ``log p(c | x0)`` of a classifier's logits;
* the log-likelihood of a linear-Gaussian measurement is :class:`diffsolve.inverse.Problem`,
  a Reward too (its exact tilted target is :meth:`GaussianMixture.posterior`).

A reward may also say how it is *twisted* at noise level s (``twist(x0, s)``, the log
potential a particle at level s is weighted by, TDS's p~_s): by default ``r(x0-hat)``; the
measurement inflates its variance by x0-hat's uncertainty.

    >>> import torch
    >>> r = Linear(torch.tensor([1.0, 0.0], dtype=torch.float64))
    >>> r(torch.tensor([[2.0, 5.0], [-1.0, 0.0]], dtype=torch.float64)).tolist()
    [2.0, -1.0]
    >>> r.grad(torch.zeros(1, 2, dtype=torch.float64)).tolist()
    [[1.0, 0.0]]
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["Reward", "FunctionReward", "Linear", "ClassifierReward", "Smoothed", "RowRewards", "as_reward"]


class Reward:
    """Base class: ``__call__(x0) -> (B,)`` log-reward per sample (override :meth:`value`).

    ``differentiable`` says whether :meth:`grad` exists (autograd through :meth:`value` by
    default).  Every call checks the output's shape, so that a batched reward returning its
    values out of order or of the wrong length is caught where it happens."""

    differentiable: bool = True
    name: str = "reward"

    def value(self, x0: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x0: Tensor) -> Tensor:
        out = self.value(x0)
        if not isinstance(out, Tensor) or out.shape != (x0.shape[0],):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"reward {self.name!r} returned {got} for a batch of {x0.shape[0]}; a reward returns "
                             f"one value per sample, shape ({x0.shape[0]},), in the batch's order")
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).nonzero()[0, 0])
            raise ValueError(f"reward {self.name!r} returned {float(out[bad])} for sample {bad}; rewards must be "
                             f"finite (use a large negative number for 'impossible')")
        return out

    def grad(self, x0: Tensor) -> Tensor:
        """d r / d x0 per sample (shape of x0), by autograd through :meth:`value`."""
        if not self.differentiable:
            raise TypeError(f"reward {self.name!r} is not differentiable; use a search or particle method "
                            f"(best-of-n, fk, ...) rather than a gradient method")
        with torch.enable_grad():
            x = x0.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(x).sum(), x)
        return g

    def twist(self, x0: Tensor, s: float | Tensor) -> Tensor:
        """The log potential of a particle whose denoised estimate at level s is x0 (TDS's
        log p~_s, up to a constant): ``r(x0)`` unless a reward knows better."""
        return self(x0)

    def twist_grad(self, x0: Tensor, s: float | Tensor) -> Tensor:
        """The gradient of :meth:`twist` in x0."""
        return self.grad(x0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FunctionReward(Reward):
    """A reward from a function ``f(x0) -> (B,)``.

    >>> import torch
    >>> r = FunctionReward(lambda x: -(x ** 2).sum(1), name="-|x|^2")
    >>> r.grad(torch.tensor([[1.0, -2.0]])).tolist()
    [[-2.0, 4.0]]
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], differentiable: bool = True, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"a reward function must be callable, got {type(fn).__name__}")
        self.fn, self.differentiable = fn, bool(differentiable)
        self.name = name or getattr(fn, "__name__", "function")

    def value(self, x0: Tensor) -> Tensor:
        return self.fn(x0)


class Linear(Reward):
    """``r(x) = <a, x>`` (``direction`` a, of the data's shape).

    Tilting a Gaussian N(mu, C) by exp(lam <a, x>) gives N(mu + lam C a, C) with mass
    multiplied by exp(lam <a, mu> + lam^2 a^T C a / 2), so the tilt of a mixture is a mixture
    with shifted means and reweighted components: :meth:`tilt`."""

    name = "linear"

    def __init__(self, direction: Tensor):
        self.a = torch.as_tensor(direction, dtype=torch.float64)

    def value(self, x0: Tensor) -> Tensor:
        return (x0.flatten(1) * self.a.to(x0).flatten()).sum(1)

    def grad(self, x0: Tensor) -> Tensor:
        return self.a.to(x0).expand_as(x0).clone()

    def tilt(self, gmm, lam: float = 1.0):
        """The exact tilted mixture ``p(x) exp(lam <a, x>) / Z`` of a
        :class:`~diffsolve.GaussianMixture` and ``log Z`` (a float).

        >>> import torch, diffsolve
        >>> g = diffsolve.GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.tensor(2.0))
        >>> t, log_z = Linear(torch.ones(1)).tilt(g, lam=0.5)
        >>> t.means.tolist(), log_z                   # mean + lam C a = 1; log Z = lam^2 C / 2
        ([[1.0]], 0.25)
        """
        a = self.a.flatten()
        if a.numel() != gmm.dim:
            raise ValueError(f"the direction has {a.numel()} entries; the mixture's data has {gmm.dim}")
        Ua = torch.einsum("knr,n->kr", gmm.U, a)
        Ca = torch.einsum("knr,kr->kn", gmm.U, gmm.d * Ua) + gmm.c[:, None] * a  # C_k a
        aCa = (Ca * a).sum(1)
        logm = torch.log(gmm.weights) + lam * (gmm.means @ a) + 0.5 * lam * lam * aCa
        log_z = float(torch.logsumexp(logm, 0))
        tilted = type(gmm)(torch.exp(logm - log_z), gmm.means + lam * Ca, gmm.c, gmm.U, gmm.d,
                                 shape=gmm.shape, name=f"{gmm.name}-tilted")
        return tilted, log_z


class ClassifierReward(Reward):
    """``log p(label | x0)`` from a classifier's logits: ``classifier(x) -> (B, classes)``.

    ``label`` is one class for every sample or a (B,) tensor of classes; ``transform`` maps the
    prior's data to the classifier's input (default: identity).  The classifier runs in its own
    dtype; the reward comes back in x0's dtype."""

    def __init__(self, classifier: Callable[[Tensor], Tensor], label: int | Tensor,
                 transform: Callable[[Tensor], Tensor] | None = None, name: str | None = None):
        self.classifier, self.transform = classifier, transform
        self.label = label
        self.name = name or f"class:{label if isinstance(label, int) else 'per-sample'}"

    def value(self, x0: Tensor) -> Tensor:
        x = self.transform(x0) if self.transform is not None else x0
        p = next(iter(getattr(self.classifier, "parameters", lambda: iter(()))()), None)
        if p is not None:
            x = x.to(p.dtype)
        logp = torch.log_softmax(self.classifier(x), -1)
        n_cls = logp.shape[-1]
        lab = torch.as_tensor(self.label, device=logp.device).long()
        if bool(((lab < 0) | (lab >= n_cls)).any()):
            raise ValueError(f"label {self.label!r} is not a class of this classifier; accepted: 0..{n_cls - 1}")
        lab = lab.expand(x0.shape[0]) if lab.ndim == 0 else lab
        return logp.gather(1, lab[:, None])[:, 0].to(x0.dtype)


class Smoothed(Reward):
    """The Gaussian smoothing of a reward [randomized smoothing, Cohen, Rosenfeld & Kolter 2019]:

        r_sigma(x) = log( (1/M) sum_j exp(r(x + sigma eps_j)) ),   eps_j ~ N(0, I) fixed

    For a classifier's ``log p(c | x)`` this is the log-probability of the *smoothed*
    classifier, whose gradient cannot exploit a single network's fine-grained, non-robust
    features: the steering signal stays on what a second network also sees (robust
    classifiers make better guidance: Kawar, Ganz & Elad 2022).  The M draws are fixed at
    construction (``seed``), so the reward is a deterministic, differentiable function; cost:
    M evaluations of ``reward`` per sample.

        >>> import torch
        >>> r = Smoothed(Linear(torch.tensor([1.0, 0.0], dtype=torch.float64)), sigma=0.5, draws=4)
        >>> bool(torch.allclose(r.grad(torch.zeros(3, 2, dtype=torch.float64)), torch.tensor([1.0, 0.0]).double()))
        True
    """

    def __init__(self, reward: Reward, sigma: float, draws: int = 8, seed: int = 0):
        if not isinstance(reward, Reward):
            raise TypeError(f"Smoothed wraps a diffsolve.rewards.Reward, got {type(reward).__name__}")
        if not (isinstance(sigma, (int, float)) and sigma >= 0):
            raise ValueError(f"sigma={sigma!r} is not accepted; accepted: a number >= 0")
        if not (isinstance(draws, int) and draws >= 1):
            raise ValueError(f"draws={draws!r} is not accepted; accepted: an integer >= 1")
        self.reward, self.sigma, self.draws, self.seed = reward, float(sigma), draws, seed
        self.differentiable = reward.differentiable
        self.name = f"{reward.name}~{sigma:g}"
        self._eps: dict[tuple, Tensor] = {}

    def _noise(self, like: Tensor) -> Tensor:
        key = (tuple(like.shape[1:]), like.dtype, like.device)
        if key not in self._eps:
            g = torch.Generator().manual_seed(self.seed)
            self._eps[key] = torch.randn(self.draws, *like.shape[1:], generator=g, dtype=torch.float64).to(
                like.device, like.dtype)
        return self._eps[key]

    def value(self, x0: Tensor) -> Tensor:
        B, M = x0.shape[0], self.draws
        xs = (x0[:, None] + self.sigma * self._noise(x0)[None]).reshape(B * M, *x0.shape[1:])
        r = self.reward(xs).reshape(B, M)
        return torch.logsumexp(r, 1) - math.log(M)


class RowRewards(Reward):
    """One reward per batch row: row b is scored by ``rewards[index[b]]`` (e.g. a class reward
    per target label), each reward evaluated once on its rows."""

    def __init__(self, rewards: Sequence[Reward], index: Tensor):
        self.rewards = [as_reward(r) for r in rewards]
        self.index = torch.as_tensor(index).long()
        if self.index.ndim != 1 or (self.index.numel() and not (
                0 <= int(self.index.min()) and int(self.index.max()) < len(self.rewards))):
            raise ValueError(f"index must be a 1-D tensor of entries in 0..{len(self.rewards) - 1}")
        self.differentiable = all(r.differentiable for r in self.rewards)
        self.name = "rows(" + ",".join(r.name for r in self.rewards) + ")"

    def value(self, x0: Tensor) -> Tensor:
        if x0.shape[0] != self.index.shape[0]:
            raise ValueError(f"RowRewards scores batches of {self.index.shape[0]} rows, got {x0.shape[0]}")
        out = x0.new_zeros(x0.shape[0])
        idx = self.index.to(x0.device)
        for k, r in enumerate(self.rewards):
            rows = idx == k
            if bool(rows.any()):
                out = out.index_put((rows,), r(x0[rows]))
        return out


def as_reward(reward: Any) -> Reward:
    """A :class:`Reward` from a Reward or a callable ``f(x0) -> (B,)``."""
    if isinstance(reward, Reward):
        return reward
    if callable(reward):
        return FunctionReward(reward)
    raise TypeError(f"a reward is a diffsolve.rewards.Reward or a function f(x0) -> (B,), got {type(reward).__name__}")
