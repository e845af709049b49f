"""Test helpers shared by the steering and guidance tests: a denoiser wrapper that counts the
rows the network sees (every network evaluation of one sample), independently of what a method
reports, and the first budget a solver honours."""

from __future__ import annotations

from diffsolve.denoisers import DenoiserWrapper


class RowCounter(DenoiserWrapper):
    """Counts network evaluations (rows) independently of the method."""

    def __init__(self, inner):
        super().__init__(inner)
        self.rows = 0

    def denoise(self, y, s, **cond):
        self.rows += y.shape[0]
        return self.inner(y, s, **cond)


def honoured_nfe(slv, lo: int = 8, hi: int = 16) -> int | None:
    """The first NFE in [lo, hi) that solver ``slv`` can spend exactly (None for adaptive ones)."""
    if slv.adaptive:
        return None
    for n in range(lo, hi):
        try:
            slv.for_nfe(n).steps_for_nfe(n)
            return n
        except ValueError:
            continue
    raise ValueError(f"{slv.name} honours no NFE in [{lo}, {hi})")
