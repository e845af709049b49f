"""GITS: the grid chosen by dynamic programming on the teacher trajectory's one-step errors
(Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling").

The teacher trajectory is computed on a fine grid ``F_0 > ... > F_M`` (uniform in lambda from
the start level to the lowest trained level). A step from ``F_i`` to ``F_j`` costs the RMS
distance between the teacher state at ``F_j`` and one first-order step (DDIM, exact for a
locally constant denoiser) taken from the teacher state at ``F_i`` [GITS Eq. 9, the local
truncation error]; the last step to 0 costs the distance of ``D(y_i, F_i)`` to the teacher's
final sample. Dynamic programming picks the ``n`` steps from ``F_0`` to the end of least total
cost [GITS Alg. 1]. Every cost comes from the ``M + 1`` denoiser outputs the teacher trajectory
already provides (one extra call per fine level), so the search costs ``~5 M`` calls in all.

    >>> from diffsolve.models.gmm import builtin
    >>> from diffsolve.tune.teacher import Teacher
    >>> t = Teacher(builtin("gmm-2d"), seeds=range(16), shape=(2,), path="edm", steps=20)
    >>> g = gits_grid(t, n_steps=4, final="zero", fine=24)
    >>> len(g), g[0] == t.s_start, g[-1]
    (5, True, 0.0)
"""

from __future__ import annotations

import math


__all__ = ["gits_grid", "least_cost_path"]


def gits_grid(teacher, n_steps: int, final: str, fine: int = 64) -> list[float]:
    """The ``n_steps``-step grid of least summed one-step error on a ``fine``-level teacher
    trajectory; ``final`` ``"zero"`` (the last step denoises) or ``"s_min"`` (ends on a fine level)."""
    if fine < n_steps + 1:
        raise ValueError(f"fine={fine} levels cannot hold a grid of {n_steps} steps; use fine >= {n_steps + 1}")
    F, traj, D = teacher.fine_trajectory(fine)  # teacher states and D(y, s) at fine + 1 levels
    M = len(F) - 1
    rms = lambda a, b: float((a - b).pow(2).mean().sqrt())  # noqa: E731

    def cost(i: int, j: int) -> float:
        r = F[j] / F[i]
        return rms(r * traj[i] + (1 - r) * D[i], traj[j])  # [GITS Eq. 9] a DDIM step's local error

    end_cost = [rms(D[i], teacher.target) for i in range(M + 1)]
    C = [[cost(i, j) if j > i else math.inf for j in range(M + 1)] for i in range(M + 1)]
    path = least_cost_path(C, end_cost, n_steps, final)
    levels = [F[i] for i in path]
    return levels + [0.0] if final == "zero" else levels


def least_cost_path(C: list[list[float]], end_cost: list[float], n_steps: int, final: str) -> list[int]:
    """Fine-level indices ``0 = i_0 < i_1 < ...`` of the ``n_steps``-step path of least summed
    cost ``C[i][j]`` (plus ``end_cost[i]`` of the last step to 0 when ``final == "zero"``; with
    ``"s_min"`` the path ends on the last fine level) [GITS Alg. 1]."""
    M = len(C) - 1
    k_fine = n_steps - 1 if final == "zero" else n_steps
    inf = math.inf
    best = [[inf] * (M + 1) for _ in range(k_fine + 1)]  # best[k][j]: least cost to level j in k steps
    back = [[-1] * (M + 1) for _ in range(k_fine + 1)]
    best[0][0] = 0.0
    for k in range(1, k_fine + 1):
        for j in range(1, M + 1):
            cands = [(best[k - 1][i] + C[i][j], i) for i in range(j) if best[k - 1][i] < inf]
            if cands:
                best[k][j], back[k][j] = min(cands)
    if final == "zero":
        j = min(range(M + 1), key=lambda i: best[k_fine][i] + end_cost[i])
    else:
        j = M
    path = [j]
    for k in range(k_fine, 0, -1):
        j = back[k][j]
        path.append(j)
    return path[::-1]
