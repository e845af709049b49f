"""Diffusion Tree Sampling and Diffusion Tree Search (Jain, Sareen, Pedramfar & Ravanbakhsh, 2025,
"Diffusion Tree Sampling: Scalable inference-time alignment of diffusion models", arXiv 2506.20701).

The denoising chain of a *stochastic* base sampler is a tree [DTS Sec. 3]: the root is the
sample's starting noise y_0 = s_0 z, a node at depth k is a state y_k at grid level s_k, and an
edge is one solver step (a draw from p(y_{k+1} | y_k)).  Every node keeps a soft-value estimate
V and a visit count N.  The soft value of a state is

    V_k(y_k) = (1/lam) log E_{p(y_{k+1:n} | y_k)}[ exp(lam r(y_n)) ]                   [DTS Eq. 4]

and satisfies the soft Bellman equation V_k(y) = (1/lam) log E_{p(y'|y)}[exp(lam V_{k+1}(y'))]
[DTS Eq. 5].  One *rollout* (iteration of [DTS Alg. 1]) is

1. selection: from the root, while the node has its full ``max_children`` children, move to a
   child drawn with probability proportional to exp(lam V(child)) (DTS, the Boltzmann policy
   [DTS Eq. 7]) or to argmax_c V(c) + explore sqrt(log N(parent) / N(c)) (DTS*: greedy; the
   UCT-style bonus is this module's option, ``explore=0`` by default: pure greedy, the project
   page's "switch the selection rule to greedy maximization");
2. expansion: a new child y_{k+1} ~ p(. | y_k) by one step of the base solver;
3. rollout: the remaining steps with the base sampler down to a clean sample y_n, every state
   appended to the tree (so no computation is thrown away), and its reward r(y_n);
4. backup: V(leaf) = r, and up the path the soft Bellman backup with the children as the
   Monte Carlo sample of p(y' | y) [DTS Eq. 8]:

       V(y) = (1/lam) log( (1/|C(y)|) sum_{c in C(y)} exp(lam V(c)) ),   N(y) += 1.

A node whose step draws no noise (the last ``ddpm`` step into s = 0 is the denoiser's output
itself) has one child only: its children would be copies.  Selection passes over *complete*
subtrees (every node in them full), so every rollout adds a new leaf until the whole tree is
complete; after that a rollout spends no network call and only repeats a backup.  (Without
this, greedy selection with no exploration bonus walks the same full path forever.)

Output.  DTS returns one path per sample drawn from the root by the Boltzmann policy.  With the
backup above, sum_c exp(lam V(c)) = |C(y)| exp(lam V(y)), so the path's probability
telescopes to

    P(leaf l) = exp(lam r(l)) prod_{y on the path} 1/|C(y)|  /  exp(lam V(root)),

i.e. the leaves drawn with probability proportional to exp(lam r) times their tree weight
prod 1/|C| (each branching splits its parent's prior mass evenly among children drawn from
p(y' | y)): self-normalised importance sampling of p(x | y_0) exp(lam r(x)), whose bias goes
as the tree grows [DTS Thm. 1].  (Weighting leaves by exp(lam r) alone would count the
densely explored high-value subtrees twice.)  DTS* returns the leaf of highest reward found.

Finite trees (measured, tests/test_steer_dts.py).  How many children a node gets depends on
its children's values: a node whose first rollout scored well is selected again and widened,
and the mean backup then dilutes that lucky first child, while a node that scored badly keeps
its single child.  Until the tree is complete (about max_children^depth rollouts) the draw is
therefore *under*-tilted.  On gmm-2d with r = <(2, 0), x>, lam = 1, 10 ddpm steps, 300 samples,
the mode-weight TV to the exact tilted mixture is 0.24 / 0.19 / 0.10 / 0.085 at 8 / 32 / 128 /
256 rollouts with max_children = 2 (the 10-step chain tilted exactly: about 0.08), but stays
near 0.2 up to 256 rollouts with max_children = 4; hence the default 2.  At equal network calls
the tilted best-of-n is as good or better on this small problem (TV 0.16 at 70 calls against
DTS's 0.24 at 66); DTS's reuse of prefixes pays where rewards are informative only late.

Budget: ``particles`` rollouts per sample; the rollouts of all samples' trees run batched, one
network call per solver evaluation on the rows whose rollout is active at that level.  A
rollout expanded at depth k costs the n - k remaining steps, so the network evaluations differ
from sample to sample: ``info["nfe_per_sample"]`` holds each sample's exact count (the
evaluations made in its own tree), ``res.nfe`` the largest of them (no returned sample cost
more) and ``info["nfe_mean"]`` their mean (total evaluations / num).  Every random draw of
sample b (its starting noise, the noise of its rollouts, its selections) derives from seeds[b]
alone: a sample is the same in any batch.

    >>> import torch, diffsolve
    >>> from diffsolve.rewards import Linear
    >>> g = diffsolve.exact_model("gmm-2d")
    >>> res = diffsolve.steer(g, Linear(torch.tensor([2.0, 0.0])), "dts", num=3, particles=8, nfe=10)
    >>> tuple(res.samples.shape), res.info["reward_calls"], res.nfe <= 8 * 10
    ((3, 2), 24, True)
    >>> int(res.info["nfe_per_sample"].max()) == res.nfe
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_int, check_number
from ..counting import CountingDenoiser
from ..denoisers import as_denoiser
from ..noise import NoiseSource
from ..sample import SampleResult
from ..schedules import make_schedule
from ..solvers import get_solver
from .base import SteerMethod, check_stochastic, register
from .particles import particle_seeds
from .resample import uniforms

__all__ = ["DTS", "DTSStar", "Tree"]

_SELECT = 2000  # the draw index of the selection uniforms (apart from any solver's draws)
_FINAL = 2001   # ... and of the final descent


class _Watched(NoiseSource):
    """The solver's noise source, noting whether a step drew any noise (a step that draws none
    is deterministic: its node gets one child)."""

    drew = False

    def normal(self, *args, **kwargs):
        self.drew = True
        return super().normal(*args, **kwargs)


class Tree:
    """``G`` trees stored as flat tensors, node ``g * cap + j`` being node j of tree g: states
    ``y``, depths, soft values ``V``, visit counts ``N``, children (``M`` slots, -1 empty) and
    child counts.  Node 0 of each tree is its root."""

    def __init__(self, root: Tensor, cap: int, M: int, n_levels: int):
        G = root.shape[0]
        self.G, self.cap, self.M = G, cap, M
        dev = root.device
        self.y = root.new_zeros((G * cap, *root.shape[1:]))
        self.y[::cap] = root
        self.V = torch.zeros(G * cap, dtype=torch.float64, device=dev)
        self.N = torch.zeros(G * cap, dtype=torch.long, device=dev)
        self.depth = torch.zeros(G * cap, dtype=torch.long, device=dev)
        self.children = torch.full((G * cap, M), -1, dtype=torch.long, device=dev)
        self.n_children = torch.zeros(G * cap, dtype=torch.long, device=dev)
        self.closed = torch.zeros(G * cap, dtype=torch.bool, device=dev)  # leaf, or full with closed children
        self.size = torch.ones(G, dtype=torch.long, device=dev)  # nodes used per tree
        self.base = torch.arange(G, device=dev) * cap
        self.n = n_levels

    def add(self, trees: Tensor, parents: Tensor, y: Tensor, depth: int) -> Tensor:
        """New children ``y`` of ``parents`` (one per tree in ``trees``): their node ids."""
        ids = self.base[trees] + self.size[trees]
        self.size[trees] += 1
        self.y[ids] = y
        self.depth[ids] = depth
        slot = self.n_children[parents]
        self.children[parents, slot] = ids
        self.n_children[parents] += 1
        return ids


def _soft_mean(lam: float, v: Tensor, mask: Tensor) -> Tensor:
    """(1/lam) log mean_{mask} exp(lam v) per row [DTS Eq. 8]; the plain mean at lam = 0."""
    cnt = mask.sum(1).clamp_min(1).to(v.dtype)
    if lam == 0:
        return torch.where(mask, v, torch.zeros_like(v)).sum(1) / cnt
    z = torch.where(mask, lam * v, torch.full_like(v, -math.inf))
    return (torch.logsumexp(z, 1) - torch.log(cnt)) / lam


def _categorical(logits: Tensor, u: Tensor) -> Tensor:
    """One index per row drawn with probability softmax(logits) from uniforms ``u`` (rows,)."""
    p = torch.softmax(logits, 1)
    cdf = torch.cumsum(p, 1)
    last = (logits > -math.inf).sum(1) - 1  # rounding: never past the last real entry
    k = torch.searchsorted(cdf, u[:, None].to(cdf.dtype).contiguous())[:, 0]
    return torch.minimum(k, last)


@register
class DTS(SteerMethod):
    """Diffusion Tree Sampling: one tree per sample over the stochastic base chain, Boltzmann
    selection, soft Bellman backups; the returned sample is drawn from the tree (asymptotically
    the tilted target p(x) exp(lam r(x)) / Z).  Options:

    * ``max_children`` (default 2): children per node before selection descends past it (the
      tree is complete, and the sampler exact for it, after about max_children^depth rollouts);
    * ``solver`` (default ``"ddpm"``): a one-step stochastic solver (deterministic and multistep
      ones are refused: a tree node holds one state);
    * ``schedule`` (default ``"karras"``), ``solver_options``.
    """

    name = "dts"
    paper = ("Diffusion Tree Sampling: Scalable inference-time alignment of diffusion models "
             "(Jain et al. 2025), Alg. 1, Eq. 4-8")
    cost = "at most N x nfe network calls (N rollouts; a rollout expanded at depth k costs the n - k steps left)"
    needs = ("stochastic",)
    exact = True
    greedy = False

    def __init__(self, max_children: int = 2, solver: str = "ddpm", schedule: str = "karras",
                 solver_options: dict | None = None, explore: float = 0.0):
        self.M = check_int(self.name, "max_children", max_children, minimum=1, maximum=1_000_000)
        self.solver = check_stochastic(self.name, solver)
        if getattr(get_solver(solver), "max_order", 1) > 1:      # a node holds y only, no history
            from ..solvers import list_solvers

            ok = ", ".join(r["name"] for r in list_solvers()
                           if r["stochastic"] and getattr(get_solver(r["name"]), "max_order", 1) <= 1)
            raise ValueError(f"{self.name}: solver {solver!r} is multistep (its steps use the denoised outputs of "
                             f"earlier levels) and a tree node holds one state; accepted: a one-step stochastic "
                             f"solver ({ok})")
        self.explore = check_number(self.name, "explore", explore, 0)
        if self.explore and not self.greedy:
            raise ValueError(f"{self.name}: explore={explore!r} is DTS*'s exploration bonus; DTS selects by "
                             f"exp(lam V) and takes none (accepted: 0.0, or method 'dts*')")
        self.schedule, self.solver_options = schedule, dict(solver_options or {})

    # -- selection [DTS Alg. 1, lines 3-6; Eq. 7] -------------------------------------------
    def _scores(self, T: Tree, kids: Tensor, parents: Tensor, lam: float, skip_closed: bool) -> Tensor:
        mask = kids >= 0
        if skip_closed:                                    # complete subtrees have nothing left to expand
            mask = mask & ~T.closed[kids.clamp_min(0)]
        v = T.V[kids.clamp_min(0)]
        if self.greedy:
            s = v
            if self.explore:
                n_par = T.N[parents].clamp_min(1).to(v.dtype)[:, None]
                n_kid = T.N[kids.clamp_min(0)].clamp_min(1).to(v.dtype)
                s = v + self.explore * torch.sqrt(torch.log(n_par) / n_kid)
        else:
            s = lam * v
        return torch.where(mask, s, torch.full_like(s, -math.inf))

    def _descend(self, T: Tree, limit: Tensor, u: Tensor, lam: float, to_leaf: bool):
        """Walk every tree from its root: stop at the first node with fewer than ``limit[depth]``
        children (``to_leaf``: never stop before a leaf).  Returns (path (G, n+1), stop depth (G,))."""
        G, n = T.G, T.n
        path = torch.full((G, n + 1), -1, dtype=torch.long, device=T.V.device)
        cur = T.base.clone()
        stop = torch.full((G,), n, dtype=torch.long, device=T.V.device)
        moving = torch.ones(G, dtype=torch.bool, device=T.V.device) if to_leaf else ~T.closed[cur]
        for k in range(n + 1):
            path[:, k] = torch.where(moving, cur, path[:, k])
            if k == n:
                break
            nch = T.n_children[cur]
            here = moving & ((nch == 0) if to_leaf else (nch < limit[k]))
            stop = torch.where(here, torch.full_like(stop, k), stop)
            moving = moving & ~here
            if not bool(moving.any()):
                break
            kids = T.children[cur]
            sc = self._scores(T, kids, cur, lam, not to_leaf)
            pick = (sc.argmax(1) if self.greedy else _categorical(sc, u[:, k])).clamp_min(0)
            nxt = kids.gather(1, pick[:, None])[:, 0]
            cur = torch.where(moving, nxt, cur)
        return path, stop

    def run(self, prior, reward, *, num, particles, nfe, lam, seeds, cond, progress=False):
        den = as_denoiser(prior)
        slv = get_solver(self.solver, **self.solver_options).for_nfe(nfe, True)
        n = slv.steps_for_nfe(nfe, True)
        grid = make_schedule(self.schedule, n, path=getattr(den, "path", None), final="zero")
        G, R = num, particles
        root = float(grid[0]) * NoiseSource.initial(seeds, prior.shape)          # the root: starting noise
        cond = den.check(root, cond)
        den.prepare(grid, root.dtype)
        rseeds = torch.tensor(particle_seeds(seeds, R)).reshape(G, R)            # rollout j of tree g
        T = Tree(root, cap=1 + R * n, M=self.M, n_levels=n)
        limit = torch.full((n,), self.M, dtype=torch.long)
        noisy = [None] * n                                                        # does step k draw noise?
        nfe_rows = torch.zeros(G, dtype=torch.long)
        calls = reward_calls = 0
        leaf_r = torch.zeros(G * T.cap, dtype=torch.float64, device=root.device)
        it = range(R)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=self.name, unit="rollout", leave=False)
        for j in it:
            u = uniforms(seeds, j, n + 1, _SELECT, root.device)
            path, stop = self._descend(T, limit, u, lam, to_leaf=False)          # 1. selection
            go = stop < n
            y = torch.zeros_like(root)
            node = path[torch.arange(G), stop.clamp_max(n)]
            for k in range(int(stop.min()), n):                                   # 2.-3. expansion, rollout
                start = go & (stop == k)
                y[start] = T.y[path[start, k]]
                rows = (go & (stop <= k)).nonzero()[:, 0]
                if rows.numel() == 0:
                    continue
                src = _Watched(rseeds[rows.cpu(), j].tolist())
                st = slv.init(y[rows], grid, src).replace(i=k)
                counter = CountingDenoiser(den, {a: (v[rows] if isinstance(v, Tensor) and v.ndim and v.shape[0] == G
                                                      else v) for a, v in cond.items()})
                st = slv.step(st, counter)
                calls += counter.calls
                nfe_rows[rows.cpu()] += counter.calls
                if noisy[k] is None:
                    noisy[k] = src.drew
                    if not src.drew:
                        limit[k] = 1
                y[rows] = st.y
                parents = torch.where(stop[rows] == k, path[rows, k], node[rows])
                node[rows] = T.add(rows, parents, st.y, k + 1)
                path[rows, k + 1] = node[rows]
            if bool(go.any()):                                                    # the new leaves' rewards
                leaves = path[go, n]
                r = reward(T.y[leaves]).to(torch.float64)
                reward_calls += r.shape[0]
                leaf_r[leaves] = r
                T.V[leaves] = r
            done = path[:, n] >= 0                                                # (complete trees: nothing)
            T.N[path[done, n]] += 1                                               # 4. backup [DTS Eq. 8]
            T.closed[path[done, n]] = True
            for k in range(n - 1, -1, -1):
                p = path[done, k]
                kids = T.children[p]
                T.V[p] = _soft_mean(lam, T.V[kids.clamp_min(0)], kids >= 0)
                T.N[p] += 1
                T.closed[p] = (T.n_children[p] >= limit[k]) & (T.closed[kids.clamp_min(0)] | (kids < 0)).all(1)
        if self.greedy:                                                           # DTS*: the best leaf found
            leaf = torch.where(T.depth == n, leaf_r, torch.full_like(leaf_r, -math.inf))  # unused: depth 0
            pick = T.base + leaf.reshape(G, T.cap).argmax(1)
        else:                                                                     # DTS: a path by exp(lam V)
            u = uniforms(seeds, R, n + 1, _FINAL, root.device)
            path, _ = self._descend(T, limit, u, lam, to_leaf=True)
            pick = path[:, n]
        out = T.y[pick]
        res = SampleResult(samples=out, nfe=int(nfe_rows.max()), sigmas=grid, solver=slv.name,
                           eval_levels=grid[:-1].clone())
        res.info.update(reward=leaf_r[pick], reward_calls=reward_calls, nfe_per_sample=nfe_rows,  # exact, per sample
                        nfe_mean=float(nfe_rows.sum()) / G, network_calls=calls, rollouts=R,
                        tree_nodes=T.size.clone(), root_value=T.V[T.base].clone(), solver=slv.name,
                        max_children=self.M)
        return res


@register
class DTSStar(DTS):
    """Diffusion Tree Search (DTS*): DTS with greedy selection (argmax of the soft value, plus
    ``explore`` sqrt(log N(parent) / N(child)), default 0) returning the highest-reward leaf
    found: a search for high reward, not a sampler of the tilted target.  Options as
    :class:`DTS`, and ``explore`` (>= 0)."""

    name = "dts*"
    paper = ("Diffusion Tree Sampling: Scalable inference-time alignment of diffusion models "
             "(Jain et al. 2025), Alg. 1 with greedy selection (DTS*)")
    exact = False
    greedy = True
