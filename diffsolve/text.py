"""Text generation with masked diffusion (the public face of :mod:`diffsolve.discrete.text`).

    >>> import diffsolve.text
    >>> res = diffsolve.text.generate("shakespeare", num=2, length=64, nfe=16)   # doctest: +SKIP
"""

from .discrete.text import RECOMMENDED, TextResult, generate

__all__ = ["generate", "TextResult", "RECOMMENDED"]
