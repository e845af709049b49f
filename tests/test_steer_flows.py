"""Flow-model steering: rollover budget forcing (rbf) and FlowChef on the shipped 2-D
rectified-flow model ``moons`` with r(x) = x_1 (data range about [-1, 2]), and FlowChef on
gmm-2d against the exact tilted target.

Measured (num=128/256, seeds 0..num-1; see the report): base ddim-eta (vp grid, 10 calls)
mean reward 0.11 +- 0.04; rbf with 8 x 10 calls 1.01 +- 0.013; best-of-8 (max) at the same
80 calls 0.91 +- 0.018; FlowChef (10 calls, step 0.05, 3 inner steps) 0.94 +- 0.04 against
the ddim base 0.10 +- 0.045.  The bounds below are >= 8 standard errors of the difference
except the rbf-vs-best-of-n order (a measured fact at these seeds, stated as such).
"""

import pytest
import torch

import diffsolve
import rows
from diffsolve.metrics.exact import sliced_w2
from diffsolve.noise import NoiseSource
from diffsolve.rewards import FunctionReward, Linear
from diffsolve.steer.rbf import quotas, rbf_grid

R = Linear(torch.tensor([1.0, 0.0]))
NUM = 128
SEEDS = list(range(NUM))


@pytest.fixture(scope="module")
def moons():
    return diffsolve.load("moons")


def _mean_se(x):
    v = R(x).to(torch.float64)
    return float(v.mean()), float(v.std() / len(v) ** 0.5)


class RowCounter(rows.RowCounter):
    """Counts evaluated rows and asserts that nobody differentiates through the network."""

    def denoise(self, y, s, **cond):
        assert not y.requires_grad                     # no backpropagation through the network
        return super().denoise(y, s, **cond)


# ------------------------------------------------------------------ rollover budget forcing
@pytest.fixture(scope="module")
def rbf_run(moons):
    return diffsolve.steer(moons, R, "rbf", num=NUM, particles=8, nfe=10)


def test_rbf_raises_reward_above_base_and_best_of_n(moons, rbf_run):
    grid = rbf_grid("vp", 10, moons.path)
    noise = NoiseSource.initial(SEEDS, moons.shape)
    base = diffsolve.sample(moons, noise, "ddim-eta", nfe=10, schedule=grid, seeds=SEEDS)
    eq = diffsolve.sample(moons, noise, "ddim-eta", nfe=80, schedule=rbf_grid("vp", 80, moons.path), seeds=SEEDS)
    bon = diffsolve.steer(moons, R, "best-of-n", num=NUM, particles=8, nfe=10, select="max", solver="ddim-eta",
                          schedule=grid)
    m, se = _mean_se(rbf_run.samples)
    for other in (base.samples, eq.samples):
        mb, seb = _mean_se(other)
        assert m - mb > 0.6 and m - mb > 8 * (se ** 2 + seb ** 2) ** 0.5, (m, mb)
    assert bon.nfe == rbf_run.nfe == 80
    assert m > _mean_se(bon.samples)[0]            # measured 1.01 vs 0.91 (256 samples)
    assert torch.allclose(rbf_run.info["reward"], R(rbf_run.samples).double())


def test_rbf_spends_exactly_the_budget(moons):
    counted = RowCounter(moons)
    res = diffsolve.steer(counted, R, "rbf", num=16, particles=5, nfe=7)
    assert res.nfe == 35 and counted.rows == 16 * 35                  # counted at the network
    q = res.info["quota"]
    assert q == quotas(34, 6) and sum(q) == 34
    spent, roll = res.info["spent"], res.info["rollover"]
    assert (spent.sum(1) + 1 == 35).all()                              # one call at s_0 + candidates
    carry = torch.zeros(16, dtype=torch.long)
    for i in range(6):                                                 # avail = quota + rollover
        assert (roll[:, i] == q[i] + carry - spent[:, i]).all()
        assert (spent[:, i] >= 1).all()
        carry = roll[:, i]
    assert (roll[:, -1] == 0).all() and not res.info["accepted"][:, -1].any()
    assert res.info["reward_calls"] == 16 + int(spent.sum())
    # a rejected step (no candidate improved) used all of its calls and rolled none over
    rejected = ~res.info["accepted"][:, :-1]
    assert (roll[:, :-1][rejected] == 0).all()


def test_rbf_one_particle_is_the_base_sampler(moons):
    for opts in ({}, {"solver_options": {"eta": 0.5}}):
        res = diffsolve.steer(moons, R, "rbf", num=8, particles=1, nfe=6, **opts)
        base = diffsolve.sample(moons, NoiseSource.initial(range(8), moons.shape), "ddim-eta", nfe=6,
                                schedule=rbf_grid("vp", 6, moons.path), seeds=list(range(8)), **opts.get("solver_options", {}))
        assert torch.equal(res.samples, base.samples) and res.nfe == 6


def test_rbf_seeds_reproducible(moons, rbf_run):
    one = diffsolve.steer(moons, R, "rbf", num=1, particles=8, nfe=10, seeds=[37])
    # equal up to the network's batch-size rounding (its matmuls are not bitwise batch-invariant)
    assert torch.allclose(one.samples[0], rbf_run.samples[37], atol=1e-10)
    other = diffsolve.steer(moons, R, "rbf", num=2, particles=8, nfe=10, seeds=[37, 1000])
    assert torch.allclose(other.samples[0], rbf_run.samples[37], atol=1e-10)
    assert torch.equal(one.info["spent"][0], rbf_run.info["spent"][37])     # the same search
    em = diffsolve.steer(moons, R, "rbf", num=4, particles=3, nfe=5, solver="euler-maruyama", grid="linear")
    assert em.nfe == 15 and torch.isfinite(em.samples).all()


def test_rbf_refusals(moons):
    with pytest.raises(ValueError, match="solver='ddim'.*ddim-eta"):
        diffsolve.steer(moons, R, "rbf", solver="ddim")
    with pytest.raises(ValueError, match="grid='cosine'.*vp"):
        diffsolve.steer(moons, R, "rbf", grid="cosine")
    with pytest.raises(ValueError, match="nfe=1"):
        diffsolve.steer(moons, R, "rbf", num=2, particles=2, nfe=1)
    with pytest.raises((TypeError, ValueError), match="eta"):
        diffsolve.steer(moons, R, "rbf", solver_options={"eta": -1.0})


# ------------------------------------------------------------------------------ FlowChef
def test_flowchef_raises_reward_at_equal_calls(moons):
    counted = RowCounter(moons)
    base = diffsolve.sample(moons, NoiseSource.initial(SEEDS, moons.shape), "ddim", nfe=10, schedule="time")
    res = diffsolve.steer(counted, R, "flowchef", num=NUM, particles=1, nfe=10, step_size=0.05, inner_steps=3)
    assert res.nfe == 10 and counted.rows == NUM * 10 and res.info["vjp"] == 0
    assert res.info["grad_calls"] == NUM * 10 * 3
    m, se = _mean_se(res.samples)
    mb, seb = _mean_se(base.samples)
    assert m - mb > 0.5 and m - mb > 8 * (se ** 2 + seb ** 2) ** 0.5, (m, mb)
    zero = diffsolve.steer(moons, R, "flowchef", num=NUM, particles=1, nfe=10, step_size=0.0)
    assert torch.equal(zero.samples, base.samples)                     # no step: the base ODE sampler
    lam0 = diffsolve.steer(moons, R, "flowchef", num=NUM, particles=1, nfe=10, lam=0.0)
    assert torch.equal(lam0.samples, base.samples)


def test_flowchef_nears_the_exact_tilt_on_gmm():
    g = diffsolve.exact_model("gmm-2d")
    tilted, _ = R.tilt(g, 1.0)
    ref = tilted.sample(4096, generator=torch.Generator().manual_seed(0))
    seeds = list(range(256))
    base = diffsolve.sample(g, NoiseSource.initial(seeds, g.shape), "ddim", nfe=10, schedule="karras")
    res = diffsolve.steer(g, R, "flowchef", num=256, particles=1, nfe=10, step_size=0.1)
    # measured (512 samples): base 0.43, flowchef 0.17
    assert sliced_w2(ref, res.samples) < 0.6 * sliced_w2(ref, base.samples)


def test_flowchef_seeds_and_refusals(moons):
    a = diffsolve.steer(moons, R, "flowchef", num=6, particles=1, nfe=8, seeds=[4, 9, 11, 2, 0, 7])
    b = diffsolve.steer(moons, R, "flowchef", num=1, particles=1, nfe=8, seeds=[11])
    assert torch.allclose(a.samples[2], b.samples[0], atol=1e-12)
    with pytest.raises(ValueError, match="particles=8.*accepted: 1"):
        diffsolve.steer(moons, R, "flowchef", num=2, nfe=5)                 # the default particles=8
    with pytest.raises(ValueError, match="solver='ddpm'.*deterministic"):
        diffsolve.steer(moons, R, "flowchef", solver="ddpm", particles=1)
    with pytest.raises(ValueError, match="step_size=-0.1"):
        diffsolve.steer(moons, R, "flowchef", step_size=-0.1, particles=1)
    with pytest.raises(ValueError, match="inner_steps=0"):
        diffsolve.steer(moons, R, "flowchef", inner_steps=0, particles=1)
    black_box = FunctionReward(lambda x: x[:, 0], differentiable=False)
    with pytest.raises(TypeError, match="gradient"):
        diffsolve.steer(moons, black_box, "flowchef", particles=1)


def test_flowchef_does_not_diverge_on_a_sharp_likelihood():
    """A measurement with sigma_y = 0.05 (gradients ~ 400 x the residual): the clipped gradient
    step stays finite and fits the measurement better than the base sampler (the unclipped step
    diverged to rewards of -4e20 on the exact benchmark)."""
    from diffsolve.inverse import LinearOperator, Problem

    g = diffsolve.exact_model("gmm-2d")
    A = LinearOperator(torch.tensor([[1.0, 0.5]], dtype=torch.float64), (2,))
    r = Problem(A, torch.tensor([[0.5]], dtype=torch.float64), 0.05)
    res = diffsolve.steer(g, r, "flowchef", num=200, particles=1, nfe=20)
    base = diffsolve.steer(g, r, "flowchef", num=200, particles=1, nfe=20, lam=0.0)
    assert bool(torch.isfinite(res.samples).all())
    assert float(r(res.samples).mean()) > float(r(base.samples).mean()) + 10
