"""Bad input gets a ValueError or TypeError naming the argument; edge shapes
and memory layouts give the right answer. Run on every backend."""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import extension, reference
from tests.opcases import make_inputs

BACKENDS = ["reference"] + (["extension"] if extension.has_kernel("class_pool", "cpu") else [])


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _inputs(B=2, C=6, K=4, H=3, W=5, dtype=torch.float32):
    return make_inputs(B, C, K, H, W, dtype=dtype)


CLASS_POOL_CASES = [
    # (description, mutate(x, gw, gb) -> args, error, message regex)
    (
        "x 3-D",
        lambda x, gw, gb: (x[0], gw, gb),
        ValueError,
        r"x must be 4-D .* got shape \(6, 3, 5\)",
    ),
    (
        "guide_weight 1-D",
        lambda x, gw, gb: (x, gw[0], gb),
        ValueError,
        r"guide_weight must have shape \(K, C\)",
    ),
    (
        "channel mismatch",
        lambda x, gw, gb: (x, gw[:, :5], gb),
        ValueError,
        r"guide_weight must have shape \(K, C\) with C=6 from x, got \(4, 5\)",
    ),
    (
        "bias length",
        lambda x, gw, gb: (x, gw, gb[:3]),
        ValueError,
        r"guide_bias must have shape \(K,\) with K=4 from guide_weight, got \(3,\)",
    ),
    (
        "mixed dtypes",
        lambda x, gw, gb: (x, gw.double(), gb),
        TypeError,
        r"guide_weight must have x's dtype torch.float32, got torch.float64",
    ),
    (
        "mixed dtypes bias",
        lambda x, gw, gb: (x, gw, gb.half()),
        TypeError,
        r"guide_bias must have x's dtype",
    ),
    (
        "integer x",
        lambda x, gw, gb: (x.long(), gw, gb),
        TypeError,
        r"x must be a floating-point tensor, got dtype torch.int64",
    ),
    (
        "integer weight",
        lambda x, gw, gb: (x, gw.int(), gb),
        TypeError,
        r"guide_weight must be a floating-point",
    ),
    (
        "no pixels",
        lambda x, gw, gb: (x[:, :, :0], gw, gb),
        ValueError,
        r"x must have at least one pixel \(H\*W > 0\)",
    ),
    (
        "not a tensor",
        lambda x, gw, gb: (x.tolist(), gw, gb),
        TypeError,
        r"x must be a torch.Tensor, got list",
    ),
    (
        "mixed devices",
        lambda x, gw, gb: (x, gw.to("meta"), gb),
        ValueError,
        r"guide_weight must be on x's device cpu, got meta",
    ),
]


@pytest.mark.parametrize("case", CLASS_POOL_CASES, ids=[c[0] for c in CLASS_POOL_CASES])
def test_class_pool_rejects_bad_input(case, backend):
    _, mutate, error, message = case
    x, gw, gb, _, _ = _inputs()
    with pytest.raises(error, match=message):
        ops.class_pool(*mutate(x, gw, gb), backend=backend)


DYNAMIC_CASES = [
    ("x 5-D", lambda x, w, b: (x[None], w, b), ValueError, r"x must be 4-D"),
    ("weight 2-D", lambda x, w, b: (x, w[0], b), ValueError, r"weight must have shape \(B, K, C\)"),
    (
        "weight batch",
        lambda x, w, b: (x, w[:1], b[:1]),
        ValueError,
        r"weight must have shape \(B, K, C\) with B=2 and C=6 from x, got \(1, 4, 6\)",
    ),
    (
        "channel mismatch",
        lambda x, w, b: (x, w[..., :5], b),
        ValueError,
        r"weight must have shape \(B, K, C\) with B=2 and C=6 from x, got \(2, 4, 5\)",
    ),
    (
        "bias length",
        lambda x, w, b: (x, w, b[:, :3]),
        ValueError,
        r"bias must have shape \(B, K\) with B=2 from x and K=4 from weight, got \(2, 3\)",
    ),
    (
        "mixed dtypes",
        lambda x, w, b: (x.double(), w, b),
        TypeError,
        r"weight must have x's dtype torch.float64",
    ),
    ("integer bias", lambda x, w, b: (x, w, b.long()), TypeError, r"bias must be a floating-point"),
    ("no pixels", lambda x, w, b: (x[..., :0], w, b), ValueError, r"at least one pixel"),
    (
        "mixed devices",
        lambda x, w, b: (x, w, b.to("meta")),
        ValueError,
        r"bias must be on x's device cpu",
    ),
]


@pytest.mark.parametrize("case", DYNAMIC_CASES, ids=[c[0] for c in DYNAMIC_CASES])
def test_dynamic_classify_rejects_bad_input(case, backend):
    _, mutate, error, message = case
    x, _, _, w, b = _inputs()
    with pytest.raises(error, match=message):
        ops.dynamic_classify(*mutate(x, w, b), backend=backend)


def test_direct_op_calls_are_checked_too():
    if "extension" not in BACKENDS:
        pytest.skip("extension not built")
    x, gw, gb, w, b = _inputs()
    with pytest.raises(ValueError, match="guide_weight must have shape"):
        torch.ops.condnet.class_pool(x, gw[:, :5], gb)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        torch.ops.condnet.dynamic_classify(x.int(), w, b)
    with pytest.raises(ValueError, match="bias must have shape"):
        torch.ops.condnet.dynamic_classify(x, w, b[:, :2])


def test_empty_batch_gives_empty_outputs(backend):
    x, gw, gb, w, b = _inputs(B=0)
    x.requires_grad_(True)
    g, f = ops.class_pool(x, gw, gb, backend=backend)
    y = ops.dynamic_classify(x, w, b, backend=backend)
    assert g.shape == (0, 4, 3, 5) and f.shape == (0, 4, 6) and y.shape == (0, 4, 3, 5)
    (g.sum() + f.sum() + y.sum()).backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_memory_layout_does_not_change_results(layout, backend):
    x, gw, gb, w, b = _inputs(B=2, C=6, K=4, H=7, W=5)
    if layout == "channels_last":
        xs = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        xs = x.transpose(2, 3).contiguous().transpose(2, 3)
    else:
        xs = torch.cat([x, x], dim=1)[:, ::2]
        x = xs.contiguous()
    assert not xs.is_contiguous()
    gws = gw.t().contiguous().t()
    ws = w.transpose(1, 2).contiguous().transpose(1, 2)
    for got, want in zip(
        ops.class_pool(xs, gws, gb, backend=backend), reference.class_pool(x, gw, gb), strict=True
    ):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(
        ops.dynamic_classify(xs, ws, b, backend=backend), reference.dynamic_classify(x, w, b)
    )


def test_ops_accept_meta_tensors():
    # Shape-only runs (complexity reports, model construction on "meta").
    x = torch.empty(2, 8, 4, 5, device="meta")
    guide_logits, class_feats = ops.class_pool(x, torch.empty(3, 8, device="meta"))
    assert guide_logits.shape == (2, 3, 4, 5) and class_feats.shape == (2, 3, 8)
    logits = ops.dynamic_classify(x, torch.empty(2, 3, 8, device="meta"))
    assert logits.shape == (2, 3, 4, 5) and logits.device.type == "meta"
