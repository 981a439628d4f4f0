"""condnet.nn.ContextAwareClassifier and condnet.nn.cac_losses against the
released CAC head, transcribed in tests/released_cac.py: eval logits, the four
training losses and the gradients of their sum, in float64 on every backend;
what the default mode changes; released checkpoints; bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condnet.nn import ContextAwareClassifier, ContextAwareOutput, cac_losses, set_backend
from condnet.ops import registry
from tests.opcases import KERNEL_BACKENDS
from tests.released_cac import ReleasedCACClassifier

BACKENDS = ["reference", *KERNEL_BACKENDS]
OPS = ("context_aware_classifier", "cosine_classify")
TOL = {"rtol": 1e-10, "atol": 1e-10}
LOSSES = ("main", "static", "oracle", "distill")
B, C, K, H, W = 2, 8, 5, 6, 7
LABEL_SIZE = (24, 28)  # the label at "image" resolution, 4x the features


def skip_unless_available(backend):
    """The kernel backends' CAC ops are being written: a backend without them is skipped."""
    for op in OPS:
        try:
            registry.resolve(op, "cpu", backend)
        except RuntimeError as error:
            pytest.skip(f"{backend} has no {op} for CPU tensors: {error}")


def make_pair(released=True, dropout=0.0, backend="reference", seed=0):
    """The module and the transcription with the same float64 weights; conv_seg
    scaled up from its 0.01 init so the static softmax is far from uniform."""
    torch.manual_seed(seed)
    oracle = ReleasedCACClassifier(C, K).double()
    nn.init.normal_(oracle.conv_seg.weight, std=0.5)
    nn.init.normal_(oracle.conv_seg.bias, std=0.5)
    clf = ContextAwareClassifier(C, K, released=released, dropout=dropout).double()
    clf.load_state_dict(oracle.state_dict(), strict=True)
    clf.backend = backend
    return clf, oracle


def features(seed=1):
    return torch.randn(
        B, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def make_label(seed=2):
    """(B, 1, 24, 28): class K-2 only in image 1, class K-1 in neither (its
    oracle row stays conv_seg's, detached), some ignored pixels in both."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.randint(0, K - 2, (B, 1, *LABEL_SIZE), generator=generator)
    label[1, 0, 8:16, 8:20] = K - 2
    label[0, 0, :6] = 255
    label[1, 0, :, :3] = 255
    return label


def leaf(x):
    return x.detach().clone().requires_grad_(True)


def gradients(loss, x, module):
    names = [name for name, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, [x, *module.parameters()], allow_unused=True)
    return dict(zip(["x", *names], grads, strict=True))


@pytest.mark.parametrize("released", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_logits_match_the_released_forward_test(backend, released):
    skip_unless_available(backend)
    clf, oracle = make_pair(released=released, dropout=0.1, backend=backend)
    clf.eval()
    x = features()
    # Without a zero feature the default's clamp is inactive: both modes are released.
    torch.testing.assert_close(clf(x), oracle.forward_test(x), **TOL)


def check_training_step(clf, oracle, drawn_masks=None):
    """One training step of both; ``drawn_masks`` collects the module's
    dropout masks, and the transcription is given the one just drawn."""
    x, label = features(), make_label()
    x_mine, x_theirs = leaf(x), leaf(x)
    out = clf.train()(x_mine, label=label)
    channel_mask = drawn_masks[-1] if drawn_masks else None
    assert isinstance(out, ContextAwareOutput) and out.released
    losses = cac_losses(out, label)
    expected, logits = oracle.train().forward_train(x_theirs, label, channel_mask)
    for name in LOSSES:
        torch.testing.assert_close(losses[name], expected[name], **TOL, msg=name)
    for name, value in logits.items():
        torch.testing.assert_close(getattr(out, name), value, **TOL, msg=name)
    mine = gradients(sum(losses.values()), x_mine, clf)
    theirs = gradients(sum(expected.values()), x_theirs, oracle)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert theirs[name].abs().max() > 0, name  # every parameter takes part
        torch.testing.assert_close(mine[name], theirs[name], **TOL, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_losses_and_gradients_match_the_released_head(backend):
    skip_unless_available(backend)
    check_training_step(*make_pair(released=True, dropout=0.0, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_with_dropout_matches_the_released_head_given_the_same_mask(backend):
    skip_unless_available(backend)
    p = 0.4
    clf, oracle = make_pair(released=True, dropout=p, backend=backend)
    drawn = []
    draw = clf.channel_mask

    def recording(x):
        drawn.append(draw(x))
        return drawn[-1]

    clf.channel_mask = recording
    torch.manual_seed(5)
    check_training_step(clf, oracle, drawn)
    (mask,) = drawn
    assert mask.shape == (B, C) and mask.dtype == torch.float64
    assert set(mask.unique().tolist()) <= {0.0, 1 / (1 - p)}
    assert (mask == 0).any() and (mask != 0).any()  # seed 5 drops some channels, not all


def test_the_mask_is_dropout2d_and_only_in_training():
    clf = ContextAwareClassifier(C, K, dropout=0.5).double()
    x = features()
    torch.manual_seed(0)
    mask = clf.train().channel_mask(x)
    torch.manual_seed(0)
    dropped = F.dropout2d(torch.ones(B, C, 1, 1, dtype=torch.float64), 0.5, training=True)
    torch.testing.assert_close(mask, dropped.flatten(1), rtol=0, atol=0)
    assert clf.eval().channel_mask(x) is None
    assert ContextAwareClassifier(C, K, dropout=0.0).train().channel_mask(x) is None


def test_default_oracle_is_per_image():
    """An image's oracle logits in the default mode are the released oracle of
    that image alone (values and gradients), and do not move when the other
    image changes; released, they do (the batch-wide mean leaks the other
    image's features in)."""
    x, label = features(), make_label()
    other = x.clone()
    other[1] = torch.randn(C, H, W, dtype=torch.float64)
    upstream = torch.randn(B, K, H, W, dtype=torch.float64)
    for released in (False, True):
        clf, oracle = make_pair(released=released)
        clf.train()
        x_leaf = leaf(x)
        first = clf(x_leaf, label=label).oracle_logits
        second = clf(other, label=label).oracle_logits
        if released:
            assert (first[0] - second[0]).abs().max() > 1e-3
            continue
        torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
        x_theirs = leaf(x)
        weight = oracle.conv_seg.weight.squeeze()
        alone = torch.cat(
            [
                oracle.get_adaptive_perspective(
                    x_theirs[i : i + 1], label[i : i + 1], weight.detach(), weight
                )
                for i in range(B)
            ]
        )
        torch.testing.assert_close(first, alone, **TOL)
        assert (
            first[0] - oracle.get_adaptive_perspective(x, label, weight, weight)[0]
        ).abs().max() > 1e-3
        mine = gradients((first * upstream).sum(), x_leaf, clf)
        theirs = gradients((alone * upstream).sum(), x_theirs, oracle)
        unused = {name for name, grad in theirs.items() if grad is None}
        assert unused == {"conv_seg.bias", "proj.0.weight", "proj.2.weight", "proj.2.bias"}
        for name in theirs.keys() - unused:
            torch.testing.assert_close(mine[name], theirs[name], **TOL, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_feature_gives_finite_logits_and_gradients_by_default(backend):
    skip_unless_available(backend)
    x, label = features(), make_label()
    x[0, :, 2, 3] = 0.0
    for released in (False, True):
        clf, oracle = make_pair(released=released, backend=backend)
        x_leaf = leaf(x)
        out = clf.train()(x_leaf, label=label)
        total = sum(cac_losses(out, label).values())
        grads = gradients(total, x_leaf, clf)
        finite = all(bool(g.isfinite().all()) for g in grads.values())
        if released:
            # The released division: NaN at that pixel, as the transcription gives.
            assert out.logits[0, :, 2, 3].isnan().all()
            assert oracle.eval().forward_test(x)[0, :, 2, 3].isnan().all()
            assert not finite
        else:
            assert out.logits.isfinite().all() and total.isfinite()
            assert (out.logits[0, :, 2, 3] == 0).all()
            assert finite


def test_default_losses_fix_the_averaging_and_the_alignment():
    x, label = features(), make_label()
    clf, _ = make_pair(released=False)
    out = clf.train()(x, label=label)
    losses = cac_losses(out, label)
    released = cac_losses(out, label, released=True)
    target = label[:, 0]
    valid = target != 255
    up = F.interpolate(out.logits, size=LABEL_SIZE, mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, target, ignore_index=255, reduction="none")
    torch.testing.assert_close(losses["main"], per_pixel[valid].mean(), **TOL)
    torch.testing.assert_close(released["main"], per_pixel.mean(), **TOL)
    for name in ("static", "oracle"):
        logits = getattr(out, f"{name}_logits")
        up = F.interpolate(logits, size=LABEL_SIZE, mode="bilinear", align_corners=False)
        expected = F.cross_entropy(up, target, ignore_index=255)
        torch.testing.assert_close(losses[name], expected, **TOL, msg=name)
        assert (released[name] - expected).abs() > 1e-6  # align_corners=True there
    torch.testing.assert_close(losses["distill"], released["distill"], rtol=0, atol=0)


def test_a_batch_without_labelled_pixels():
    x = features()
    label = torch.full((B, 1, *LABEL_SIZE), 255)
    for released in (False, True):
        clf, _ = make_pair(released=released)
        x_leaf = leaf(x)
        losses = cac_losses(clf.train()(x_leaf, label=label), label)
        assert losses["main"] == 0 and losses["distill"] == 0
        if released:
            assert losses["static"].isnan() and losses["oracle"].isnan()
        else:
            assert losses["static"] == 0 and losses["oracle"] == 0
            sum(losses.values()).backward()  # attached, and finite
            assert x_leaf.grad is not None and x_leaf.grad.isfinite().all()


def test_a_released_checkpoint_loads_strictly_and_reproduces_the_released_logits():
    _, oracle = make_pair(released=True)
    # As mmseg 0.x saves a segmentor: every key under its head's prefix.
    checkpoint = {f"decode_head.{k}": v.clone() for k, v in oracle.state_dict().items()}
    checkpoint["auxiliary_head.conv_seg.weight"] = torch.zeros(K, 4, 1, 1, dtype=torch.float64)
    assert set(checkpoint) >= {
        "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias",
        "decode_head.proj.0.weight",
        "decode_head.proj.2.weight",
        "decode_head.proj.2.bias",
        "decode_head.apd_proj.0.weight",
        "decode_head.apd_proj.2.weight",
        "decode_head.apd_proj.2.bias",
    }
    head = {
        k.removeprefix("decode_head."): v
        for k, v in checkpoint.items()
        if k.startswith("decode_head.")
    }
    for released in (True, False):
        clf = ContextAwareClassifier(C, K, released=released).double()
        clf.load_state_dict(head, strict=True)
        x = features()
        torch.testing.assert_close(clf.eval()(x), oracle.eval().forward_test(x), **TOL)


def test_train_mode_without_a_label_returns_the_logits():
    clf, _ = make_pair(dropout=0.0)
    x = features()
    logits = clf.train()(x)
    assert isinstance(logits, torch.Tensor)
    torch.testing.assert_close(logits, clf.eval()(x), rtol=0, atol=0)


def test_set_backend_reaches_the_classifier():
    clf = ContextAwareClassifier(C, K)
    model = nn.Sequential(nn.Conv2d(3, C, 1), clf)
    assert set_backend(model, "reference") == [clf] and clf.backend == "reference"
    assert set_backend(model, None)[0].backend is None


def test_parameters_have_the_released_names_and_shapes():
    clf = ContextAwareClassifier(C, K)
    shapes = {k: tuple(v.shape) for k, v in clf.state_dict().items()}
    assert shapes == {
        "conv_seg.weight": (K, C, 1, 1),
        "conv_seg.bias": (K,),
        "proj.0.weight": (C // 2, 2 * C),
        "proj.2.weight": (C, C // 2),
        "proj.2.bias": (C,),
        "apd_proj.0.weight": (C // 2, 2 * C),
        "apd_proj.2.weight": (C, C // 2),
        "apd_proj.2.bias": (C,),
    }
    assert clf.conv_seg.bias.abs().max() == 0
    assert 0.005 < clf.conv_seg.weight.std() < 0.02  # normal, std 0.01


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 7}, "in_channels=7 is odd.*pass hidden_channels"),
        ({"in_channels": 0}, "in_channels must be a positive int"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"hidden_channels": 0}, "hidden_channels must be a positive int"),
        ({"scale": 0.0}, "scale must be a positive finite number"),
        ({"scale": float("inf")}, "scale must be a positive finite number"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"released": 1}, "released must be a bool"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    args = {"in_channels": C, "num_classes": K, **kwargs}
    with pytest.raises(ValueError, match=match):
        ContextAwareClassifier(args.pop("in_channels"), args.pop("num_classes"), **args)


def test_an_odd_width_with_an_explicit_hidden_width():
    clf = ContextAwareClassifier(7, K, hidden_channels=3)
    assert clf.proj[0].weight.shape == (3, 14)


def test_bad_forward_inputs():
    clf, _ = make_pair()
    x, label = features(), make_label()
    clf.train()
    with pytest.raises(ValueError, match="label must have shape"):
        clf(x, label=label.expand(B, 2, *LABEL_SIZE))
    with pytest.raises(ValueError, match="label must hold integer class indices"):
        clf(x, label=label.double())
    with pytest.raises(ValueError, match="label has batch size 1; x has 2"):
        clf(x, label=label[:1])
    with pytest.raises(ValueError, match="label holds values outside"):
        clf(x, label=torch.full_like(label, K))
    with pytest.raises(ValueError, match="feat has 4 channels"):
        clf(x[:, :4])
    with pytest.raises(ValueError, match="label is given in eval mode"):
        clf.eval()(x, label=label)


def test_bad_loss_inputs():
    clf, _ = make_pair()
    x, label = features(), make_label()
    with pytest.raises(TypeError, match="ran in eval mode or without a label"):
        cac_losses(clf.eval()(x), label)
    out = clf.train()(x, label=label)
    with pytest.raises(TypeError, match="out must be a ContextAwareOutput"):
        cac_losses({"logits": out.logits}, label)
    with pytest.raises(ValueError, match="label must have shape"):
        cac_losses(out, label[:, 0, 0])
    with pytest.raises(ValueError, match="out.logits has batch size 2; the label has 1"):
        cac_losses(out, label[:1])
    with pytest.raises(ValueError, match="label holds values outside"):
        cac_losses(out, torch.full_like(label, K))
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        cac_losses(out, label, ignore_index=255.0)


def test_a_training_step_captures_in_one_graph():
    """The oracle and the losses skip their label-value check (a host sync)
    while compiling, so a training step is one graph."""
    clf, _ = make_pair(released=False, dropout=0.0)
    clf.train()
    x, label = features(), make_label()

    def step(x, label):
        return sum(cac_losses(clf(x, label=label), label).values())

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, label), step(x, label), **TOL)


def test_autocast_keeps_the_losses_and_gradients_in_float32():
    torch.manual_seed(0)
    clf = ContextAwareClassifier(16, K, dropout=0.0).train()
    nn.init.normal_(clf.conv_seg.weight, std=0.3)
    x = torch.randn(B, 16, H, W)
    label = make_label()
    exact = cac_losses(clf(x, label=label), label)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clf(x, label=label)
        losses = cac_losses(out, label)
    assert out.logits.dtype == out.oracle_logits.dtype == torch.bfloat16
    for name in LOSSES:
        assert losses[name].dtype == torch.float32
        torch.testing.assert_close(losses[name], exact[name], rtol=3e-2, atol=3e-2, msg=name)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in clf.parameters())
