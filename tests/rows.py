"""A test helper: a denoiser wrapper that counts the rows the network sees (every network
evaluation of one sample), independently of what a method reports."""

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
