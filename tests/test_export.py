"""The shipped networks are graph-clean: ``torch.export`` and ``torch.compile(fullgraph=True)``
capture them whole (no data-dependent branching, no reach into a layer's ``.weight``), with the
eager output; label validation lives outside them in :func:`diffsolve.nets.embed.check_labels`."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import diffsolve
from diffsolve.nets.embed import check_labels


def _inputs(model, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.shape, generator=g)
    t = torch.rand(batch, generator=g)
    labels = torch.tensor([0, 3, model.num_classes, 1])[:batch] if model.num_classes else None
    return x, t, labels


def _kw(labels):
    return {} if labels is None else {"labels": labels}


@pytest.mark.parametrize("name", ["mnist", "digits", "moons"])
def test_shipped_net_exports_and_matches_eager(name):
    model = diffsolve.load(name)
    x, t, labels = _inputs(model)
    ep = torch.export.export(model.net, (x, t), _kw(labels))
    with torch.no_grad():
        want = model.net(x, t, **_kw(labels))
    # another batch of the same shape: the exported program is not specialised to its example
    x2, t2, _ = _inputs(model, seed=1)
    with torch.no_grad():
        want2 = model.net(x2, t2, **_kw(labels))
    got, got2 = ep.module()(x, t, **_kw(labels)), ep.module()(x2, t2, **_kw(labels))
    assert got.shape == want.shape == x.shape
    assert float((got - want).abs().max()) <= 1e-5
    assert float((got2 - want2).abs().max()) <= 1e-5
    assert float((want2 - want).abs().max()) > 1e-2  # the second check is not the first one again
    if labels is not None:  # the labels reach the exported graph
        other = ep.module()(x, t, labels=torch.full_like(labels, model.num_classes))
        assert float((other - got).abs().max()) > 1e-3


def test_exported_net_takes_any_batch_size():
    # one exported program for every batch size (measured: the MNIST UNet exports this way too,
    # in ~13 s here; the MLP keeps the test short)
    model = diffsolve.load("digits")
    x, t, labels = _inputs(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(model.net, (x, t), {"labels": labels},
                             dynamic_shapes={"x": {0: batch}, "t": {0: batch}, "labels": {0: batch}})
    for n in (1, 7):
        g = torch.Generator().manual_seed(n)
        xn, tn, ln = torch.randn(n, *model.shape, generator=g), torch.rand(n, generator=g), torch.arange(n) % 11
        with torch.no_grad():
            want = model.net(xn, tn, labels=ln)
        assert float((ep.module()(xn, tn, labels=ln) - want).abs().max()) <= 1e-5


@pytest.mark.parametrize("name", ["mnist", "digits", "moons"])
def test_shipped_net_has_no_graph_breaks(name):
    model = diffsolve.load(name)
    x, t, labels = _inputs(model)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(model.net)(x, t, **_kw(labels))
    assert ex.graph_break_count == 0 and ex.graph_count == 1, ex.break_reasons
    # fullgraph capture (the eager backend: what dynamo traces, without code generation)
    compiled = torch.compile(model.net, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.equal(compiled(x, t, **_kw(labels)), model.net(x, t, **_kw(labels)))
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DIFFSOLVE_COMPILE_TESTS"),
                    reason="inductor code generation takes 95-210 s on 2 cores; set DIFFSOLVE_COMPILE_TESTS=1 "
                           "(fullgraph capture itself is checked by test_shipped_net_has_no_graph_breaks)")
def test_mnist_net_compiles_with_inductor_fullgraph():
    # measured on a 2-core machine: 95-210 s with a cold cache, almost all of it inductor's C++ code generation
    model = diffsolve.load("mnist")
    x, t, labels = _inputs(model)
    torch._dynamo.reset()
    compiled = torch.compile(model.net, fullgraph=True)
    t0 = time.time()
    with torch.no_grad():
        got = compiled(x, t, labels=labels)
        want = model.net(x, t, labels=labels)
    assert float((got - want).abs().max()) <= 1e-5, time.time() - t0
    torch._dynamo.reset()


def test_net_takes_device_and_dtype_from_its_input_not_its_weights():
    # a dynamically quantised copy has Linear layers whose .weight is a method, not a tensor
    model = diffsolve.load("digits")
    x, t, labels = _inputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(model.net, {nn.Linear}, dtype=torch.qint8)
    assert not isinstance(q.cond.mlp[0].weight, torch.Tensor)
    with torch.no_grad():
        got, want = q(x, t, labels=labels), model.net(x, t, labels=labels)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got - want).abs().max()) < 0.1 * float(want.abs().max())
    # a half-precision copy runs on half inputs (the embedding follows the input's dtype)
    half = diffsolve.nets.build_net(model.meta["arch"], **model.meta["arch_kwargs"])
    half.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        out = half.half()(x.half(), t.half(), labels=labels)
    assert out.dtype == torch.float16
    assert float((out.float() - want).abs().max()) < 0.05 * float(want.abs().max())


# --- check_labels ------------------------------------------------------------------------------

@pytest.mark.parametrize("labels,want", [
    (3, [3, 3, 3]), (torch.tensor(10), [10, 10, 10]), ([0, 5, 10], [0, 5, 10]),
    (np.array([1, 2, 3]), [1, 2, 3]), (np.int64(4), [4, 4, 4]), (torch.tensor([1.0, 2.0, 10.0]), [1, 2, 10]),
    (torch.tensor([1, 2, 3], dtype=torch.int32), [1, 2, 3]),
])
def test_check_labels_accepts_whole_numbers_in_range(labels, want):
    out = check_labels(labels, 3, 10)
    assert out.dtype == torch.int64 and out.tolist() == want


def test_check_labels_passes_none_through():
    assert check_labels(None, 3, 10) is None and check_labels(None, 3, 0) is None


@pytest.mark.parametrize("labels,batch,num_classes,match", [
    (torch.tensor([2.7, 1.0]), 2, 10, r"whole numbers.*2\.7"),
    (torch.tensor([float("nan"), 1.0]), 2, 10, "whole numbers.*nan"),
    (True, 2, 10, "bool"),
    (torch.tensor([True, False]), 2, 10, "bool"),
    (torch.tensor([1 + 1j, 2]), 2, 10, "complex"),
    ([1, 2, 3], 2, 10, r"shape \(2,\).*got shape \(3,\)"),
    (torch.tensor([[1, 2]]), 2, 10, r"shape \(2,\).*got shape \(1, 2\)"),
    ([1], 2, 10, r"got shape \(1,\)"),
    ([11, 0], 2, 10, r"labels must be in 0\.\.10 .*\[11\]"),
    ([-1, 0], 2, 10, r"0\.\.10.*\[-1\]"),
    ([0, 1], 2, 0, "unconditional"),
    ("cat", 2, 10, "labels must be integers"),
])
def test_check_labels_refuses_bad_labels(labels, batch, num_classes, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels, batch, num_classes)
