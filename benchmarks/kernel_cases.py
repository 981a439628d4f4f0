"""What the kernel benchmark runs: shapes, ops, modes, random inputs, and the
work model (bytes and FLOPs) each row is judged against.

Shapes are (B, C, K, H, W): batch, channels, classes, height, width. The
named shapes are where the released heads (DeepLabV3+ with the stride-4
skip, UPerNet) run the classifier: on the stride-4 map of the training crop,
at the per-GPU batch the released models were trained with.

    ade          B=2, C=512, K=150, 128x128   ADE20K, 512x512 crops, 2 per GPU
    ade-b8       B=8, C=512, K=150, 128x128   the same on one GPU, 8 images
    pc59         B=4, C=512, K=59, 120x120    Pascal Context, 480x480 crops
    cityscapes   B=2, C=512, K=19, 128x256    Cityscapes, 512x1024 crops
    sweep-k      K in 19, 59, 150, 256, 512, 1024, the rest as ade
    sweep-n      N = H*W in 32^2, 64^2, 128^2, 256^2, the rest as ade
    B=..,C=..,K=..,H=..,W=..   any explicit shape

``--quick`` shrinks the named shapes and the sweeps to C=32 and at most 32x32
pixels, keeping each named shape's B, K and aspect ratio (explicit shapes
are kept as given).

Precisions (``--dtype``): float32, bfloat16, float16, float64 run everything
in that dtype; amp-bfloat16 and amp-float16 are mixed-precision training as
users run it: features (x, class features, per-image weights) in the 16-bit
dtype, parameters (the guide and the projection) float32 master weights, the
call under ``torch.autocast``.

Ops (``--ops``): the three CondNet steps (class_pool, dynamic_classify,
project), the whole CondNet ``classifier``, and ``cac``, the whole CAC
classifier (context pooling, the per-image generator, cosine logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OPS = ("class_pool", "dynamic_classify", "project", "classifier", "cac")
MODES = ("fwd", "fwd_bwd")
DTYPES = ("float32", "bfloat16", "float16", "float64", "amp-bfloat16", "amp-float16")
AMP_PREFIX = "amp-"

# name -> (B, C, K, H, W): each dataset's classifier shape (the stride-4 map
# of its training crop) at the released per-GPU batch; ade-b8 at one GPU's.
SHAPES = {
    "ade": (2, 512, 150, 128, 128),
    "ade-b8": (8, 512, 150, 128, 128),
    "pc59": (4, 512, 59, 120, 120),
    "cityscapes": (2, 512, 19, 128, 256),
}
# The sweeps vary one dimension of ade and keep the others.
SWEEP_BASE = "ade"
SWEEPS = ("sweep-k", "sweep-n")
SWEEP_K = (19, 59, 150, 256, 512, 1024)
SWEEP_SIDES = (32, 64, 128, 256)  # sweep-n: square images of side**2 pixels
QUICK_SWEEP_K = (19, 59, 150)
QUICK_SWEEP_SIDES = (8, 16, 32)
QUICK_C = 32
QUICK_SIDE = 16
SPEC_KEYS = "BCKHW"


def split_shape_specs(text: str) -> list[str]:
    """``"ade,B=2,C=512,K=150,H=64,W=64"`` -> ``["ade", "B=2,C=512,K=150,H=64,W=64"]``.

    Consecutive key=value items form one explicit shape; a key seen again
    starts the next one.
    """
    specs: list[list[str]] = []
    keys: set[str] = set()
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if "=" not in item:
            specs.append([item])
            keys = set()
            continue
        key = item.split("=", 1)[0].strip()
        if not keys or key in keys:
            specs.append([])
            keys = set()
        specs[-1].append(item)
        keys.add(key)
    return [",".join(spec) for spec in specs]


def _explicit(spec: str) -> tuple[int, ...]:
    fields: dict[str, int] = {}
    for item in spec.split(","):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in SPEC_KEYS:
            raise ValueError(
                f"--shapes: unknown field {key!r} in {spec!r}; fields are B, C, K, H, W"
            )
        try:
            fields[key] = int(value)
        except ValueError:
            raise ValueError(f"--shapes: {key}={value!r} in {spec!r} is not an integer") from None
        if fields[key] <= 0:
            raise ValueError(f"--shapes: {key} must be positive in {spec!r}")
    missing = [k for k in SPEC_KEYS if k not in fields]
    if missing:
        raise ValueError(f"--shapes: {spec!r} lacks {', '.join(missing)} (give B, C, K, H and W)")
    return tuple(fields[k] for k in SPEC_KEYS)


def named_shape(name: str, quick: bool) -> tuple[int, ...]:
    """SHAPES[name]; under quick C and the pixels shrink, B, K and the aspect
    ratio stay."""
    B, C, K, H, W = SHAPES[name]
    if quick:
        C, H, W = QUICK_C, QUICK_SIDE, QUICK_SIDE * W // H
    return B, C, K, H, W


def expand_shape(spec: str, quick: bool) -> list[tuple[str, tuple[int, ...]]]:
    """One --shapes item -> [(label, (B, C, K, H, W)), ...]; a sweep gives several."""
    if "=" in spec:
        return [(spec, _explicit(spec))]
    if spec in SHAPES:
        return [(spec, named_shape(spec, quick))]
    B, C, K, H, W = named_shape(SWEEP_BASE, quick)
    if spec == "sweep-k":
        return [(spec, (B, C, k, H, W)) for k in (QUICK_SWEEP_K if quick else SWEEP_K)]
    if spec == "sweep-n":
        sides = QUICK_SWEEP_SIDES if quick else SWEEP_SIDES
        return [(spec, (B, C, K, s, s)) for s in sides]
    names = ", ".join([*SHAPES, *SWEEPS])
    raise ValueError(
        f"--shapes: {spec!r} is not one of {names} nor of the form B=..,C=..,K=..,H=..,W=.."
    )


@dataclass
class Case:
    """One row group. ``dtype`` is the features' dtype; under ``amp`` the
    parameters are float32 and the call runs under torch.autocast."""

    op: str
    mode: str
    dims: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    label: str = ""
    amp: bool = False

    @property
    def param_dtype(self) -> torch.dtype:
        return torch.float32 if self.amp else self.dtype

    @property
    def precision(self) -> str:
        """The --dtype name of the case: "float32", "amp-bfloat16", ..."""
        name = str(self.dtype).removeprefix("torch.")
        return AMP_PREFIX + name if self.amp else name


def precision(name: str) -> tuple[torch.dtype, bool]:
    """A --dtype name -> (features' dtype, autocast with float32 parameters)."""
    amp = name.startswith(AMP_PREFIX)
    return getattr(torch, name.removeprefix(AMP_PREFIX)), amp


def generator_dims(C: int) -> tuple[int, int]:
    """CAC's generator (2C -> Hd -> C, Hd = C/2, as released): (in, hidden)."""
    return 2 * C, C // 2


def parameter_bytes(case: Case) -> int:
    """The whole classifier's parameters in their dtype (float32 master
    weights under amp): CondNet's projection, (C*K + K) x C with its bias
    (the guide's K x C is not counted: it is small beside it); CAC's static
    classifier (K x C and K) and generator (Hd x 2C, C x Hd and C), all of
    them, since here they are the only weights."""
    B, C, K, H, W = case.dims
    size = torch.finfo(case.param_dtype).bits // 8
    if case.op == "cac":
        d_in, hidden = generator_dims(C)
        return (K * C + K + hidden * d_in + C * hidden + C) * size
    return (C * K + K) * C * size


def work(case: Case) -> tuple[float, float]:
    """(bytes, FLOPs) that a fused implementation cannot avoid: every tensor
    read or written once from device memory, and every product computed.

    For the classifier this includes the projection: its (C*K + K, C) weight
    is read in the forward, read again and its gradient written in the
    backward. At C=512, K=150 in float32 that is 158 MB each time: more than
    x (67 MB in float32, 34 MB in bfloat16) at ade's B=2, 128x128, less than
    x at ade-b8 in float32 (268 MB); benchmarks/NOTES.md has the table.
    """
    if case.op == "cac":
        return _cac_work(case)
    B, C, K, H, W = case.dims
    N, s = H * W, torch.finfo(case.dtype).bits // 8
    x, g, y = B * C * N * s, B * K * N * s, B * K * N * s
    mac = 2.0 * B * K * C * N  # FLOPs of one (K x C) by (C x N) product per image
    # The projection's weight in its own dtype (float32 master weights under amp).
    proj_bytes = parameter_bytes(case)
    proj_flops = 2.0 * B * K * (C + 1) * C
    feats, theta = B * K * C * s, B * K * (C + 1) * s
    fwd = {
        "class_pool": (x + g, 2 * mac),
        "dynamic_classify": (x + y, mac),
        "project": (proj_bytes + feats + theta, proj_flops),
        "classifier": (2 * x + g + y + proj_bytes, 3 * mac + proj_flops),
    }[case.op]
    if case.mode == "fwd":
        return fwd
    # Backward: read x, the saved logits and the upstream gradients, write dx.
    # The classifier needs two passes over x: class_pool's backward needs the
    # class-feature gradient, which needs dynamic_classify's full dw first.
    bwd = {
        "class_pool": (2 * x + 2 * g, 4 * mac),
        "dynamic_classify": (2 * x + y, 2 * mac),
        # read A, write dA; read dtheta and f, write df
        "project": (2 * proj_bytes + theta + 2 * feats, 2 * proj_flops),
        "classifier": (3 * x + 2 * g + 2 * y + 2 * proj_bytes, 6 * mac + 2 * proj_flops),
    }[case.op]
    return fwd[0] + bwd[0], fwd[1] + bwd[1]


def _cac_work(case: Case) -> tuple[float, float]:
    """CAC's whole classifier (benchmarks/NOTES.md, "CAC's work model").

    Forward: two passes over x, as for CondNet: the context pooling (static
    logits g, softmax, centres and masses) must see every pixel before the
    generator can run, and the cosine logits need the generated classifiers;
    it writes g and the logits y. Backward: one pass reads x and dy for the
    classifiers' gradient dv (needed by the generator's backward, whose
    centre gradient the second pass needs); the second reads x, g, dg and dy
    again and writes dx once (the static logits' and the pooling's terms and
    the cosine term, whose norm part is <v^T dy, x>, so y need not be read).
    The parameters (parameter_bytes) are read in the forward, read again
    and their gradients written in the backward.

    FLOPs: the products, each 2 B K C N: the static logits, the pooling and
    the cosine logits forward; dv, the softmax's dP = dM x, and dx's three
    terms (W^T ds, dM^T P, v^T dy) and dW = ds x^T backward, six; the
    generator's two layers, 2 B K (2C Hd + Hd C) forward and twice that
    backward. Softmaxes, norms and other per-element work (under 1% of the
    FLOPs at C=512) are not counted."""
    B, C, K, H, W = case.dims
    N, s = H * W, torch.finfo(case.dtype).bits // 8
    x, g, y = B * C * N * s, B * K * N * s, B * K * N * s
    mac = 2.0 * B * K * C * N
    d_in, hidden = generator_dims(C)
    gen_flops = 2.0 * B * K * (d_in * hidden + hidden * C)
    params = parameter_bytes(case)
    fwd = (2 * x + g + y + params, 3 * mac + gen_flops)
    if case.mode == "fwd":
        return fwd
    bwd = (3 * x + 2 * g + 2 * y + 2 * params, 6 * mac + 2 * gen_flops)
    return fwd[0] + bwd[0], fwd[1] + bwd[1]


# The inputs each op takes; x always comes first so it is the same tensor
# (same seed, same values) for every op and provider.
INPUTS = {
    "class_pool": ("x", "guide_weight", "guide_bias"),
    "dynamic_classify": ("x", "weight", "bias"),
    "project": ("class_feats", "class_weight", "class_bias"),
    "classifier": ("x", "guide_weight", "guide_bias", "proj_weight", "proj_bias"),
    "cac": (
        "x",
        "seg_weight",
        "seg_bias",
        "proj_in_weight",
        "proj_out_weight",
        "proj_out_bias",
    ),
}
# Parameters: float32 master weights under amp. The rest are activations.
PARAMETERS = {
    "guide_weight",
    "guide_bias",
    "proj_weight",
    "proj_bias",
    "class_weight",
    "class_bias",
    "seg_weight",
    "seg_bias",
    "proj_in_weight",
    "proj_out_weight",
    "proj_out_bias",
}


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs (never zeros) scaled like a trained head's; leaves that
    require grad in fwd_bwd mode."""
    B, C, K, H, W = case.dims
    d_in, hidden = generator_dims(C)
    shapes = {
        "x": ((B, C, H, W), 1.0),
        "guide_weight": ((K, C), C**-0.5),
        "guide_bias": ((K,), 0.1),
        "weight": ((B, K, C), C**-0.5),
        "bias": ((B, K), 0.1),
        "proj_weight": ((C * K + K, C, 1, 1), C**-0.5),
        "proj_bias": ((C * K + K,), 0.1),
        # the projection in its per-class layout, for the project op
        "class_feats": ((B, K, C), 0.1),
        "class_weight": ((K, C + 1, C), C**-0.5),
        "class_bias": ((K, C + 1), 0.1),
        # CAC: conv_seg and the generator, of the order of nn.Linear's initial weights
        "seg_weight": ((K, C), C**-0.5),
        "seg_bias": ((K,), 0.1),
        "proj_in_weight": ((hidden, d_in), d_in**-0.5),
        "proj_out_weight": ((C, hidden), hidden**-0.5),
        "proj_out_bias": ((C,), hidden**-0.5),
    }
    gen = torch.Generator(device="cpu").manual_seed(seed)
    inputs = {}
    for name in INPUTS[case.op]:
        shape, scale = shapes[name]
        t = torch.randn(*shape, generator=gen).mul_(scale)
        dtype = case.param_dtype if name in PARAMETERS else case.dtype
        t = t.to(device=case.device, dtype=dtype)
        inputs[name] = t.requires_grad_(case.mode == "fwd_bwd")
    return inputs
