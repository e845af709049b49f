"""Bridges to other libraries.  Each submodule imports its library only when it is imported:

* :mod:`diffsolve.integrations.diffusers`: :class:`~diffsolve.integrations.diffusers.DiffsolveScheduler`,
  any diffsolve solver as a diffusers scheduler (``pipe.scheduler = DiffsolveScheduler.from_config(
  pipe.scheduler.config, solver="unipc-bh2", schedule="karras")``).
"""

__all__: list[str] = []
