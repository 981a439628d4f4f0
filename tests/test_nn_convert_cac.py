"""make_conditional(model, variant="cac") and cac_auxiliary_loss: the conversion
(conv_seg is the trained conv, exactly, also for a 3x3 conv over patches), the
hand-over of the auxiliary losses (the same numbers as the module called with
the label), bad input; then on the host libraries' models of
test_nn_integrations: one training step, a strict state-dict round trip, and
torch.compile(fullgraph=True) on two of them; a two-process DDP run on gloo."""

import copy
import gc
import io
import time
import weakref

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from condnet.nn import (
    VARIANTS,
    ContextAwareClassifier,
    DropInContextAwareClassifier,
    cac_auxiliary_loss,
    cac_losses,
    context_aware_classifiers,
    guidance_loss,
    make_conditional,
)
from tests.test_nn_integrations import MODELS, build, data, main_logits

K = 5


class Net(nn.Module):
    """A stem, a head ending in ``head.cls`` and an auxiliary ``aux.cls``."""

    def __init__(self, kernel=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.cls = nn.Conv2d(8, K, kernel, padding=kernel // 2)
        self.aux = nn.Conv2d(8, K, 1)

    def features(self, x):
        return self.head(self.stem(x))

    def forward(self, x):
        feats = self.stem(x)
        out = F.interpolate(self.cls(self.head(feats)), size=x.shape[-2:], mode="bilinear")
        return {"out": out, "aux": self.aux(feats)}


def image(dtype=torch.float32, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, size, size, generator=g, dtype=dtype)


def label_for(seed=1, size=16):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, K, (2, size, size), generator=g)
    label[:, :2] = 255
    return label


def randomize_(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.normal_()
    return model


@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_seg_is_the_trained_conv_and_its_static_logits_the_plain_ones(kernel):
    plain = randomize_(Net(kernel)).double().eval()
    model = make_conditional(copy.deepcopy(plain), variant="cac")
    ((name, clf),) = context_aware_classifiers(model)
    assert name == "cls" and isinstance(clf, DropInContextAwareClassifier)
    assert clf.feature_channels == 8 and clf.in_channels == 8 * kernel**2
    assert clf.patches == (kernel > 1) and clf.dropout == 0.0 and not clf.released
    assert clf.conv_seg.weight.dtype == torch.float64 and not clf.training
    # The static logits, recorded in training mode (no dropout here), are the
    # plain conv's logits: the copy and the patch layout are exact.
    x = image(torch.float64)
    model.train()
    logits = model(x)["out"]
    assert logits.shape == plain(x)["out"].shape and logits.dtype == torch.float64
    recorded = clf.take_recorded()
    want = plain.cls(plain.features(x))
    torch.testing.assert_close(recorded.static_logits, want, rtol=0, atol=1e-12)
    assert clf.take_recorded() is None


def test_bias_free_conv_random_init_and_auxiliary():
    net = Net()
    net.cls = nn.Conv2d(8, K, 1, bias=False)
    model = make_conditional(net, variant="cac", auxiliary=True)
    assert [n for n, _ in context_aware_classifiers(model)] == ["cls", "aux"]
    assert model.cls.conv_seg.bias.abs().sum() == 0
    plain = randomize_(Net())
    model = make_conditional(copy.deepcopy(plain), variant="cac", init="random")
    assert not torch.equal(model.cls.conv_seg.weight, plain.cls.weight)
    assert model.cls.conv_seg.weight.std() < 0.02  # the released normal(0, 0.01)


def test_the_handed_over_losses_are_the_modules_own():
    """cac_auxiliary_loss = static + oracle + distill of cac_losses on the module
    called with the label itself; the gradients reach every parameter."""
    torch.manual_seed(0)
    model = make_conditional(randomize_(Net()).double(), variant="cac").train()
    clf = model.cls
    direct = ContextAwareClassifier(8, K, dropout=0.0).double().train()
    direct.load_state_dict(clf.state_dict(), strict=True)
    x, label = image(torch.float64), label_for()
    model(x)
    loss = cac_auxiliary_loss(model, label)
    losses = cac_losses(direct(model.features(x), label=label), label)
    want = losses["static"] + losses["oracle"] + losses["distill"]
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    loss.backward()
    want.backward()
    for name, param in clf.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        torch.testing.assert_close(param.grad, direct.get_parameter(name).grad)


def test_dropout_drops_whole_feature_channels_of_a_patch():
    model = make_conditional(Net(kernel=3), variant="cac", dropout=0.5).train()
    clf = model.cls
    assert clf.dropout == 0.5
    mask = clf.channel_mask(torch.zeros(64, 72, 4, 4))
    assert mask.shape == (64, 72)
    per_channel = mask.reshape(64, 8, 9)  # unfolded channel-major: 9 taps per channel
    assert torch.equal(per_channel, per_channel[..., :1].expand(-1, -1, 9))
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    assert clf.eval().channel_mask(torch.zeros(2, 72, 4, 4)) is None


def test_variant_and_option_errors():
    with pytest.raises(ValueError, match=r"variant must be one of \('condnet', 'cac'\)"):
        make_conditional(Net(), variant="CAC")
    assert VARIANTS == ("condnet", "cac")
    with pytest.raises(ValueError, match="layout='per_class' applies only to variant='condnet'"):
        make_conditional(Net(), variant="cac", layout="per_class")
    with pytest.raises(ValueError, match="init must be one of"):
        make_conditional(Net(), variant="cac", init="zeros")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        make_conditional(Net(), variant="cac", dropout=1.0)
    model = make_conditional(Net(), variant="cac")
    with pytest.raises(ValueError, match="'cls' is already a context-aware classifier"):
        make_conditional(model, "cls")
    with pytest.raises(ValueError, match="groups=1"):
        make_conditional(nn.Sequential(nn.Conv2d(4, 4, 1, groups=2)), "0", variant="cac")
    # CondNet's default layout is unchanged when layout is not given.
    assert make_conditional(Net()).cls.layout == "grouped_conv"


def test_loss_hand_over_errors():
    with pytest.raises(ValueError, match="no context-aware classifier.*guidance_loss"):
        cac_auxiliary_loss(make_conditional(Net()), label_for())
    model = make_conditional(Net(), variant="cac").train()
    with pytest.raises(ValueError, match="variant='cac' takes condnet.nn.cac_auxiliary_loss"):
        guidance_loss(model, label_for())
    with pytest.raises(ValueError, match=r"no training forward recorded for \['cls'\]"):
        cac_auxiliary_loss(model, label_for())
    with torch.no_grad():
        model(image())
    assert not model.cls.recorded
    model(image())
    with pytest.raises(ValueError, match="label holds values outside"):
        cac_auxiliary_loss(model, torch.full((2, 16, 16), 7))
    assert model.cls.recorded  # a bad label leaves the forward's outputs in place
    cac_auxiliary_loss(model, label_for()).backward()
    with pytest.raises(ValueError, match="no training forward recorded"):
        cac_auxiliary_loss(model, label_for())
    model(image())
    model.eval()
    assert not model.cls.recorded
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        cac_auxiliary_loss(lambda x: x, label_for())


def _step(model, optimizer, img, label):
    out = model(img)  # the aux head runs at image size here
    loss = F.cross_entropy(out["out"], label, ignore_index=255)
    loss = loss + 0.4 * F.cross_entropy(out["aux"], label, ignore_index=255)
    loss = loss + cac_auxiliary_loss(model, label)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_no_graph_outlives_a_step():
    model = make_conditional(Net(), variant="cac").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    img, label = image(), label_for()
    refs = []
    for _ in range(3):
        model(img)
        recorded = model.cls._recorded
        refs.append([weakref.ref(t) for t in recorded])
        del recorded
        _step(model, optimizer, img, label)
        gc.collect()
        assert all(ref() is None for step in refs for ref in step)
    assert not model.cls.recorded


def _ddp_worker(rank, world_size, store, results):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        out = {}
        for static in (False, True):
            torch.manual_seed(0)
            model = make_conditional(Net(), variant="cac").train()
            ddp = DistributedDataParallel(model, static_graph=static)
            optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
            for step in range(2):  # each rank its own images
                _step(ddp, optimizer, image(seed=10 * rank + step), label_for(seed=rank))
            out[static] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            out[f"held_{static}"] = model.cls.recorded
        torch.save(out, f"{results}/rank{rank}.pt")
        # Both ranks past their last collective before either tears down: gloo
        # can abort a process whose peer closes the connection first.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_train_in_step(tmp_path):
    """Under DistributedDataParallel (gloo, 2 processes; the default
    find_unused_parameters=False, and static_graph=True) the auxiliary losses'
    gradients (apd_proj gets gradients only from them) are reduced with the
    host's: both ranks end with the same parameters, moved from the start.
    (find_unused_parameters=True cannot work: apd_proj runs in the loss call,
    so DDP's search from the forward's outputs marks it unused, then its
    gradient arrives.)"""
    world_size = 2
    context = mp.start_processes(
        _ddp_worker,
        args=(world_size, tmp_path / "store", tmp_path),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the DDP workers did not finish within 120 s")
    torch.manual_seed(0)
    start = make_conditional(Net(), variant="cac").state_dict()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    for static in (False, True):
        assert not any(result[f"held_{static}"] for result in ranks)
        for key, value in ranks[0][static].items():
            torch.testing.assert_close(ranks[1][static][key], value, rtol=0, atol=0, msg=key)
        for key in ("cls.conv_seg.weight", "cls.proj.0.weight", "cls.apd_proj.0.weight"):
            assert not torch.equal(ranks[0][static][key], start[key]), key


def _cac_kwargs(kwargs):
    """The CondNet test's conversion options that apply to CAC (not the layout)."""
    return {k: v for k, v in kwargs.items() if k != "layout"}


def _parameters_of(model, targets):
    return [(t, n, p) for t in targets for n, p in model.get_submodule(t).named_parameters()]


@pytest.mark.parametrize("name", MODELS)
def test_host_model(name):
    _, kwargs, targets, host_loss, out_size = MODELS[name]
    plain = build(name)
    model = make_conditional(copy.deepcopy(plain), variant="cac", **_cac_kwargs(kwargs))
    assert [n for n, _ in context_aware_classifiers(model)] == targets
    for target in targets:
        conv, clf = plain.get_submodule(target), model.get_submodule(target)
        assert torch.equal(clf.conv_seg.weight.reshape(conv.weight.shape), conv.weight)
        assert torch.equal(clf.conv_seg.bias, conv.bias)
    del plain

    # One training step with the host's loss and CAC's auxiliary losses.
    img, label = data(2)
    model.train()
    before = {(t, n): p.detach().clone() for t, n, p in _parameters_of(model, targets)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = host_loss(model, img, label) + cac_auxiliary_loss(model, label)
    assert loss.isfinite()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for target, param_name, param in _parameters_of(model, targets):
        assert param.grad is not None and param.grad.abs().sum() > 0, (target, param_name)
        assert not torch.equal(param, before[target, param_name]), (target, param_name)
    assert not any(model.get_submodule(t).recorded for t in targets)

    # Eval output: shape and dtype, as the plain model's.
    model.eval()
    with torch.no_grad():
        logits = main_logits(model(img))
    assert logits.shape == (2, K, out_size, out_size) and logits.dtype == torch.float32
    assert logits.isfinite().all()

    # Strict state-dict round trip into a freshly converted, randomly initialised twin.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_conditional(MODELS[name][0](), targets, variant="cac", init="random")
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(main_logits(fresh.eval()(img)), logits)


@pytest.mark.parametrize("name", ["hf_segformer", "smp_unet"])
def test_torch_compile(name):
    """fullgraph=True: the recorded features and logits leave the compiled
    graph without a break; the losses, gradients and eval logits match eager.
    aot_eager as in test_nn_integrations (the ops' own compile tests cover the
    generated code)."""
    torch._dynamo.reset()
    _, kwargs, _, host_loss, _ = MODELS[name]
    eager = make_conditional(build(name), variant="cac", **_cac_kwargs(kwargs)).train()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    img, label = data(2)
    losses = []
    for model, fn in ((eager, eager), (compiled_model, compiled)):
        torch.manual_seed(1)  # the same dropout masks
        loss = host_loss(fn, img, label) + cac_auxiliary_loss(fn, label)
        loss.backward()
        losses.append(loss.detach())
        assert not any(m.recorded for _, m in context_aware_classifiers(model))
    torch.testing.assert_close(losses[1], losses[0])
    grads = [
        [(n, p.grad) for n, p in m.named_parameters() if p.grad is not None]
        for m in (eager, compiled_model)
    ]
    assert [n for n, _ in grads[0]] == [n for n, _ in grads[1]]
    assert any("apd_proj" in n for n, _ in grads[0])
    for (_, a), (_, b) in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        want = main_logits(eager.eval()(img))
        got = main_logits(compiled.eval()(img))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
