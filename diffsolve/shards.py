"""Sampling at scale: a run of many samples written in shards named by their seed ranges,
resumable, serially or over Ray, with byte-identical files either way.

A run (:class:`SampleRun`) is a model, a solver configuration and a seed range
``[seed, seed + num)`` cut into shards of ``shard_size`` consecutive seeds.  Sample k uses
seed ``seed + k`` (per-sample noise, :mod:`diffsolve.noise`: a sample depends only on its seed)
and, when labels are given, label ``labels[k % len(labels)]``: what a shard holds depends only on
its seed range, never on which process drew it or which shards were drawn before.

On disk, in ``out_dir``:

* ``run.json``: the run's configuration (the manifest); a resumed run with another configuration
  is refused naming the first differing field (:class:`RunMismatch`);
* one shard per seed range, ``samples-000000-000999.safetensors`` (``samples`` float32,
  ``seeds`` int64, ``labels`` int64 when labelled; metadata: one key ``diffsolve`` holding the
  run and the range as key-sorted JSON) or, with ``format="png"``, a folder
  ``samples-000000-000999/`` of ``SEED.png`` (8-bit, [-1, 1] mapped to [0, 255]) and
  ``shard.json`` (seeds, labels, run).

Every shard is written atomically (a temporary name renamed into place), so a shard that exists
is complete and a killed run resumes by drawing only the missing ones (after removing the
temporaries a kill left behind).  Shard files hold no timestamps and are encoded by the same
function whoever drew them: a serial run, a Ray run and a resumed run write the same bytes
(on the same kind of machine: a different BLAS, thread count or device may change the last
bits of the network's output).

    >>> import tempfile
    >>> run = SampleRun(model="gmm-2d", solver="dpm++2m", nfe=8, num=10, shard_size=4)
    >>> [s.name for s in run.shards()]
    ['samples-000000-000003', 'samples-000004-000007', 'samples-000008-000009']
    >>> d = tempfile.mkdtemp()
    >>> r = run_shards(run, d)
    >>> len(r.written), r.complete
    (3, True)
    >>> len(run_shards(run, d).written)            # resumed: nothing missing
    0
    >>> sum(s.samples.shape[0] for s in read_shards(d))
    10
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .io import TMP_PREFIX, atomic_write, atomic_write_json, remove_orphans

__all__ = ["shard_quality", "SampleRun", "Shard", "ShardData", "RunResult", "RunMismatch", "run_shards", "sample_shard",
           "encode_shard", "read_shards", "read_manifest", "missing_shards", "MANIFEST", "FORMATS"]

#: the manifest's file name in a run directory
MANIFEST = "run.json"
#: shard formats
FORMATS = ("safetensors", "png")
_MANIFEST_FORMAT = "diffsolve-sample-run/1"
_SHARD_FORMAT = "diffsolve-shard/1"
_TMP_DIR = re.compile(re.escape(TMP_PREFIX) + r"[a-z0-9_]{8}")


class RunMismatch(ValueError):
    """A run directory holds a run with another configuration; ``field`` names the first
    differing field, ``old`` and ``new`` its two values."""

    def __init__(self, message: str, field: str, old: Any, new: Any):
        super().__init__(message)
        self.field, self.old, self.new = field, old, new


@dataclass(frozen=True)
class Shard:
    """Seeds ``[start, stop)`` of a run, named ``samples-START-LAST`` (``width`` digits)."""

    start: int
    stop: int
    width: int = 6

    @property
    def name(self) -> str:
        return f"samples-{self.start:0{self.width}d}-{self.stop - 1:0{self.width}d}"

    @property
    def seeds(self) -> list[int]:
        return list(range(self.start, self.stop))

    def filename(self, fmt: str) -> str:
        """The shard's entry in the run directory: a ``.safetensors`` file or a PNG folder."""
        return self.name + ".safetensors" if fmt == "safetensors" else self.name


def _json_float(v: float | None) -> float | str | None:
    return v if v is None or math.isfinite(v) else repr(float(v))  # inf -> "inf" (JSON has none)


@dataclass(frozen=True)
class SampleRun:
    """What a sharded run draws: everything that decides the bytes of its shards.

    ``nfe=None`` for adaptive solvers (with ``rtol``/``atol``); ``labels``: class labels cycled
    over the samples (sample k gets ``labels[k % len(labels)]``), None for no conditioning;
    ``guidance`` / ``guidance_interval``: classifier-free guidance as :class:`~diffsolve.guidance.CFG`
    takes them; ``model_sha256``: filled in by :func:`run_shards` for checkpoints (the weights'
    digest, so that a retrained checkpoint under the same name is not mixed with the old one).
    """

    model: str
    solver: str = "dpm++2m"
    nfe: int | None = 10
    schedule: str | None = "karras"  # None with solver="auto" (the rule chooses the grid)
    path: str | None = None
    rtol: float | None = None
    atol: float | None = None
    seed: int = 0
    num: int = 1000
    shard_size: int = 1000
    labels: tuple[int, ...] | None = None
    guidance: float = 1.0
    guidance_interval: tuple[float, float] | None = None
    format: str = "safetensors"
    model_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in ("num", "shard_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.seed + self.num > 1 << 63:
            raise ValueError(f"seeds {self.seed}..{self.seed + self.num - 1} pass 2**63 - 1; use a smaller seed")
        if self.format not in FORMATS:
            raise ValueError(f"unknown shard format {self.format!r}; accepted: {', '.join(FORMATS)}")
        if self.labels is not None:
            labels = tuple(self.labels)
            if not labels or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels):
                raise ValueError(f"labels must be a non-empty sequence of integers >= 0, got {self.labels!r}")
            object.__setattr__(self, "labels", labels)
        if self.guidance_interval is not None:
            object.__setattr__(self, "guidance_interval", tuple(float(v) for v in self.guidance_interval))

    # -- the plan ---------------------------------------------------------------------------
    def shards(self) -> list[Shard]:
        """The run's shards in seed order; the last one may be shorter."""
        stop = self.seed + self.num
        width = max(6, len(str(stop - 1)))
        return [Shard(a, min(a + self.shard_size, stop), width) for a in range(self.seed, stop, self.shard_size)]

    def labels_for(self, seeds: list[int]) -> Tensor | None:
        """The labels of the samples with these seeds (a pure function of ``seed - self.seed``)."""
        if self.labels is None:
            return None
        return torch.tensor([self.labels[(s - self.seed) % len(self.labels)] for s in seeds], dtype=torch.int64)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON values (an infinite interval end as the string ``"inf"``)."""
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels) if self.labels is not None else None
        d["guidance_interval"] = ([_json_float(v) for v in self.guidance_interval]
                                  if self.guidance_interval is not None else None)
        d["rtol"], d["atol"] = _json_float(self.rtol), _json_float(self.atol)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SampleRun":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown run field(s) {unknown}; this diffsolve knows {sorted(names)}")
        d = dict(d)
        if d.get("labels") is not None:
            d["labels"] = tuple(d["labels"])
        if d.get("guidance_interval") is not None:
            d["guidance_interval"] = tuple(float(v) for v in d["guidance_interval"])
        return cls(**d)


@dataclass(frozen=True)
class ShardData:
    """One shard read back: ``samples`` (float32; PNG shards: the 8-bit values mapped back to
    [-1, 1]), ``labels`` (int64) or None, ``seeds`` (int64)."""

    name: str
    samples: Tensor
    labels: Tensor | None
    seeds: Tensor


@dataclass
class RunResult:
    """What :func:`run_shards` did: the shards it ``written`` and those already there
    (``skipped``), the orphaned temporaries it ``removed``, and whether the run is ``complete``."""

    out_dir: str
    total: int
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.written) + len(self.skipped) == self.total


# -- sampling one shard -----------------------------------------------------------------------

@lru_cache(maxsize=4)
def _model(name: str) -> Any:
    from .models import load_model

    return load_model(name)


def _denoiser(run: SampleRun) -> Any:
    model = _model(run.model)
    if run.guidance == 1.0 and run.guidance_interval is None:
        return model
    from .guidance import CFG

    lo, hi = run.guidance_interval or (0.0, math.inf)
    return CFG(model, scale=run.guidance, interval=(lo, hi))


#: torch threads a shard is drawn with (fixed: the bytes must not depend on the machine's thread count)
SHARD_THREADS = 1


def sample_shard(run: SampleRun, shard: Shard) -> tuple[Tensor, Tensor | None]:
    """Draw one shard: samples (float32, as ``diffsolve sample`` keeps them) and labels (or None)."""
    from .noise import NoiseSource
    from .sample import sample

    seeds = shard.seeds
    model = _model(run.model)
    labels = run.labels_for(seeds)
    noise = NoiseSource.initial(seeds, tuple(model.shape))
    opts: dict[str, Any] = {"path": run.path} if run.path else {}
    opts.update({k: getattr(run, k) for k in ("rtol", "atol") if getattr(run, k) is not None})
    # one torch thread per shard, wherever it is drawn: a matrix product's float rounding depends on
    # the thread count (serial shards drawn with 2 threads differed from Ray workers' 1-thread ones in
    # the last bits), and a shard must be the same bytes in any run; Ray gives the parallelism
    prev = torch.get_num_threads()
    torch.set_num_threads(SHARD_THREADS)
    try:
        res = sample(_denoiser(run), noise, solver=run.solver, nfe=run.nfe, schedule=run.schedule, seeds=seeds,
                     cond={"labels": labels} if labels is not None else {}, **opts)
    finally:
        torch.set_num_threads(prev)
    return res.samples.float().contiguous(), labels


def _shard_meta(run: SampleRun, shard: Shard) -> dict[str, Any]:
    return {"format": _SHARD_FORMAT, "run": run.to_dict(), "start": shard.start, "stop": shard.stop}


def _to_uint8(x: Tensor) -> Tensor:
    """Images in [-1, 1] (clamped) as 8-bit values, (N, H, W, C)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def encode_shard(run: SampleRun, shard: Shard, samples: Tensor, labels: Tensor | None) -> dict[str, bytes]:
    """The shard's files as bytes, keyed by their path relative to the run directory: one
    ``.safetensors`` file, or a PNG folder's files.  Deterministic: no timestamps, key-sorted JSON."""
    meta = _shard_meta(run, shard)
    seeds = torch.tensor(shard.seeds, dtype=torch.int64)
    if run.format == "safetensors":
        from safetensors.torch import save

        tensors = {"samples": samples.contiguous(), "seeds": seeds}
        if labels is not None:
            tensors["labels"] = labels.to(torch.int64).contiguous()
        # one metadata key: safetensors keeps metadata in a hash map, whose order is not fixed
        return {shard.filename(run.format): save(tensors, metadata={"diffsolve": json.dumps(meta, sort_keys=True)})}
    import io

    from PIL import Image

    if samples.ndim != 4 or samples.shape[1] not in (1, 3):
        raise ValueError(f"format 'png' needs images (N, 1 or 3, H, W), got samples of shape {tuple(samples.shape[1:])}; "
                         "use format 'safetensors'")
    out: dict[str, bytes] = {}
    for s, img in zip(shard.seeds, _to_uint8(samples).numpy()):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
        out[f"{shard.name}/{s:0{shard.width}d}.png"] = buf.getvalue()
    meta.update(seeds=shard.seeds, labels=labels.tolist() if labels is not None else None)
    out[f"{shard.name}/shard.json"] = (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()
    return out


def _draw(run_dict: dict[str, Any], start: int, stop: int, width: int) -> dict[str, bytes]:
    """One shard drawn and encoded (the unit of work, serial or a Ray task)."""
    run, shard = SampleRun.from_dict(run_dict), Shard(start, stop, width)
    return encode_shard(run, shard, *sample_shard(run, shard))


def _write(out_dir: str, shard: Shard, fmt: str, files: dict[str, bytes]) -> None:
    """Write a shard's files atomically: a file by rename, a folder built under a temporary
    name and renamed into place."""
    def put(path: str, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)

    if fmt == "safetensors":
        (rel, data), = files.items()
        atomic_write(os.path.join(out_dir, rel), lambda tmp: put(tmp, data))
        return
    tmp = tempfile.mkdtemp(dir=out_dir, prefix=TMP_PREFIX)
    try:
        for rel, data in files.items():
            put(os.path.join(tmp, os.path.basename(rel)), data)
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, os.path.join(out_dir, shard.name))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# -- the run directory --------------------------------------------------------------------------

def _model_sha256(name: str) -> str | None:
    """The digest of a checkpoint's weights (None for exact mixtures and diffusers folders)."""
    import hashlib

    from .models.gmm import BUILTINS

    if name in BUILTINS:
        return None
    try:
        from .models.checkpoint import weights_path, locate
        from .models.checkpoint_files import read_json

        meta_path = locate(name)
        if not meta_path.endswith(".json"):
            return None
        path = weights_path(read_json(meta_path), meta_path)
    except Exception:  # noqa: BLE001 - a model we cannot fingerprint is recorded without a digest
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(out_dir: str) -> SampleRun:
    """The run recorded in ``out_dir/run.json``."""
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{out_dir}: no {MANIFEST}; not a directory written by diffsolve sample --out-dir")
    with open(path) as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(content, dict) or content.get("format") != _MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a run manifest of this diffsolve (format {_MANIFEST_FORMAT!r})")
    return SampleRun.from_dict(content["run"])


def _check_same(out_dir: str, old: SampleRun, new: SampleRun) -> None:
    a, b = old.to_dict(), new.to_dict()
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            raise RunMismatch(f"{out_dir} holds a run with {key}={a.get(key)!r}, this one has {key}={b.get(key)!r}; "
                              "resume with the run's settings or write to another directory", key, a.get(key), b.get(key))


def missing_shards(run: SampleRun, out_dir: str) -> list[Shard]:
    """The shards of ``run`` that ``out_dir`` lacks (a shard present is complete: written atomically)."""
    return [s for s in run.shards() if not os.path.exists(os.path.join(out_dir, s.filename(run.format)))]


def _remove_orphans(out_dir: str) -> list[str]:
    removed = remove_orphans(out_dir)
    with os.scandir(out_dir) as entries:
        for e in entries:
            if _TMP_DIR.fullmatch(e.name) and e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(e.path)
    return sorted(removed)


def _prepare(run: SampleRun, out_dir: str) -> SampleRun:
    """Check the run against its model, fill in the model digest, and open ``out_dir``: write the
    manifest, or check it against the run."""
    from .solvers import get_solver

    if run.solver != "auto":
        run = dataclasses.replace(run, solver=get_solver(run.solver).name)  # an alias resumes its solver's run
    model = _model(run.model)
    if not hasattr(model, "shape"):
        raise ValueError(f"model {run.model!r} is not a diffusion/flow denoiser (a text model?); "
                         "sharded sampling draws continuous samples")
    k = int(getattr(model, "num_classes", 0) or 0)
    if run.labels is not None:
        if not k:
            raise ValueError(f"labels: model {run.model!r} is unconditional (it has no classes)")
        bad = [v for v in run.labels if v >= k]
        if bad:
            raise ValueError(f"labels: {bad[0]} is out of range; model {run.model!r} has classes 0..{k - 1}")
    if (run.guidance != 1.0 or run.guidance_interval is not None) and run.labels is None:
        raise ValueError("guidance needs labels (classifier-free guidance steers towards the labels)")
    if run.format == "png" and (len(model.shape) != 3 or model.shape[0] not in (1, 3)):
        raise ValueError(f"format 'png': model {run.model!r} draws samples of shape {tuple(model.shape)}, not images; "
                         "use format 'safetensors'")
    if run.model_sha256 is None:
        run = dataclasses.replace(run, model_sha256=_model_sha256(run.model))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"{out_dir}: exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, MANIFEST)):
        _check_same(out_dir, read_manifest(out_dir), run)
    else:
        stray = sorted(n for n in os.listdir(out_dir) if n.startswith("samples-"))
        if stray:
            raise ValueError(f"{out_dir} holds shards ({stray[0]}, ...) but no {MANIFEST}; "
                             "write to an empty directory")
        atomic_write_json(os.path.join(out_dir, MANIFEST), {"format": _MANIFEST_FORMAT, "run": run.to_dict()})
    return run


def run_shards(run: SampleRun, out_dir: str, *, ray: str | None = None, ray_cpus: int | None = None,
               progress: bool = False, max_shards: int | None = None,
               on_shard: Callable[[str, int, int], None] | None = None,
               log: Callable[[str], None] | None = None) -> RunResult:
    """Draw (or resume) ``run`` into ``out_dir``: only the shards missing there are drawn.

    ``ray``: None (serial, in this process), ``"local"`` (start a Ray cluster here with
    ``ray_cpus`` CPUs), or the address of a running cluster (checked at once:
    :func:`~diffsolve.bench.ray_address.check_ray_address`); Ray workers draw and encode shards and
    send the bytes back, this process writes them (the workers need not see ``out_dir``).
    ``max_shards``: draw at most this many now (the rest another time: a partial run that
    resumes).  ``on_shard(name, done, total)`` is called after each shard is written; an exception
    from it stops the run, the shards written so far stay.
    """
    if ray is not None:
        from .bench.ray_address import check_ray_address

        check_ray_address(ray)
    if max_shards is not None and (isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 0):
        raise ValueError(f"max_shards must be an integer >= 0 or None, got {max_shards!r}")
    out_dir = os.fspath(out_dir)
    run = _prepare(run, out_dir)
    result = RunResult(out_dir=out_dir, total=len(run.shards()), removed=_remove_orphans(out_dir))
    todo = missing_shards(run, out_dir)
    todo_names = {s.name for s in todo}
    result.skipped = [s.filename(run.format) for s in run.shards() if s.name not in todo_names]
    if log:
        log(f"{result.total} shard{'s' if result.total != 1 else ''} of {run.shard_size} in {out_dir}: "
            f"{len(result.skipped)} already there, {len(todo)} to draw"
            + (f" (removed {len(result.removed)} unfinished temporaries)" if result.removed else ""))
    if max_shards is not None:
        todo = todo[:max_shards]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=result.total, initial=len(result.skipped), desc="shards", unit="shard")

    def emit(shard: Shard, files: dict[str, bytes]) -> None:
        _write(out_dir, shard, run.format, files)
        result.written.append(shard.filename(run.format))
        if bar is not None:
            bar.update(1)
        if on_shard is not None:
            on_shard(shard.filename(run.format), len(result.written) + len(result.skipped), result.total)

    try:
        if ray is None:
            for s in todo:
                emit(s, _draw(run.to_dict(), s.start, s.stop, s.width))
        elif todo:
            _run_ray(run, todo, emit, ray, ray_cpus)
    finally:
        if bar is not None:
            bar.close()
    return result


def _run_ray(run: SampleRun, todo: list[Shard], emit: Callable[[Shard, dict[str, bytes]], None], address: str,
             cpus: int | None) -> None:
    try:
        import ray as _ray  # optional dependency (diffsolve[ray])
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'diffsolve[ray]' (or pip install ray)") from None
    started = False
    if not _ray.is_initialized():
        try:
            if address == "local":
                _ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                _ray.init(address=address, log_to_driver=False)
        except Exception as e:  # noqa: BLE001 - Ray raises several types; the shards so far stay
            if _ray.is_initialized():
                _ray.shutdown()
            raise RuntimeError(f"ray {address!r}: Ray did not start ({type(e).__name__}: {' '.join(str(e).split())}); "
                               "rerun the same command to resume (serially without --ray)") from None
        started = True
    try:
        task = _ray.remote(_draw)
        width = max(1, int(_ray.cluster_resources().get("CPU", 1)))
        queue, pending, by_ref = list(todo), [], {}
        run_dict = run.to_dict()
        while queue or pending:
            while queue and len(pending) < 2 * width:  # bounded: finished shards are written as they come
                s = queue.pop(0)
                ref = task.remote(run_dict, s.start, s.stop, s.width)
                pending.append(ref)
                by_ref[ref] = s
            ready, pending = _ray.wait(pending, num_returns=1)
            emit(by_ref.pop(ready[0]), _ray.get(ready[0]))
    finally:
        if started:
            _ray.shutdown()


# -- reading a run back ---------------------------------------------------------------------------

def _read_one(out_dir: str, run: SampleRun, shard: Shard) -> ShardData:
    path = os.path.join(out_dir, shard.filename(run.format))
    if run.format == "safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("diffsolve", "null"))
            t = {k: f.get_tensor(k) for k in f.keys()}
        samples, labels, seeds = t.get("samples"), t.get("labels"), t.get("seeds")
    else:
        import numpy as np
        from PIL import Image

        with open(os.path.join(path, "shard.json")) as fh:
            meta = json.load(fh)
        imgs = []
        for s in meta.get("seeds", []):
            with Image.open(os.path.join(path, f"{s:0{shard.width}d}.png")) as im:
                a = np.array(im)
            imgs.append(torch.from_numpy(a[..., None] if a.ndim == 2 else a).permute(2, 0, 1))
        samples = torch.stack(imgs).to(torch.float32) / 127.5 - 1 if imgs else None
        seeds = torch.tensor(meta.get("seeds", []), dtype=torch.int64)
        labels = torch.tensor(meta["labels"], dtype=torch.int64) if meta.get("labels") is not None else None
    want = _shard_meta(run, shard)
    if not isinstance(meta, dict) or {k: meta.get(k) for k in want} != want:
        raise ValueError(f"{path}: not a shard of the run in {os.path.join(out_dir, MANIFEST)} "
                         "(its recorded run or seed range differs)")
    if samples is None or seeds is None or seeds.tolist() != shard.seeds:
        raise ValueError(f"{path}: incomplete shard (samples or seeds missing or wrong)")
    return ShardData(shard.name, samples, labels, seeds)


def read_shards(out_dir: str, *, allow_missing: bool = False) -> Iterator[ShardData]:
    """The shards of the run in ``out_dir``, one at a time in seed order (each checked against
    the manifest).  A missing shard is an error naming it, unless ``allow_missing``."""
    run = read_manifest(out_dir)
    missing = missing_shards(run, out_dir)
    if missing and not allow_missing:
        raise FileNotFoundError(f"{out_dir}: {len(missing)} of {len(run.shards())} shards missing (first: "
                                f"{missing[0].filename(run.format)}); resume the run (the same diffsolve sample command)")
    skip = {s.name for s in missing}
    for shard in run.shards():
        if shard.name not in skip:
            yield _read_one(out_dir, run, shard)


def shard_quality(out_dir: str, knn: bool = True) -> tuple[str, dict[str, Any]]:
    """The quality numbers of the sharded run in ``out_dir`` (:mod:`diffsolve.shards`), reading
    one shard at a time: ``("exact", compare_to_exact numbers)`` for an exact mixture,
    ``("mnist", image_quality numbers)`` for 28x28 grey images, ``("none", {})`` otherwise."""
    from .metrics.streaming import stream_exact_quality, stream_image_quality
    from .models.gmm import BUILTINS, builtin

    run = read_manifest(out_dir)
    if run.model in BUILTINS:
        return "exact", stream_exact_quality(builtin(run.model), (s.samples for s in read_shards(out_dir)))
    if tuple(getattr(_model(run.model), "shape", ())) != (1, 28, 28):
        list(read_shards(out_dir))  # still check that every shard is there and belongs to the run
        return "none", {}
    return "mnist", stream_image_quality(((s.samples, s.labels) for s in read_shards(out_dir)), knn=knn)
