"Tensors laid out in memory as real code meets them, and how far two runs in a dtype may drift apart (tests/test_properties.py)."
import torch

LAYOUTS = ('contiguous', 'transposed', 'sliced', 'offset', 'channels_last')
# transposed: a 2-D tensor stored column-major (a `.t()` of a contiguous one), as `nn.Linear(...).weight.t()` or a hand-made grad;
# sliced: every other element of a larger buffer along the last dim, not dense (`x[..., ::2]`);
# offset: dense, but starting a few elements into its buffer (`buf[3:]`);
# channels_last: a 4-D tensor in NHWC order, as a conv net after `model.to(memory_format=torch.channels_last)`

def laid_out(values, layout):
    "A tensor equal to `values` stored in `layout`, and the buffer it views (whose other elements are zero)"
    if layout == 'contiguous': x = values.clone(); return x, x
    if layout == 'transposed':
        base = values.t().contiguous(); return base.t(), base
    if layout == 'channels_last':
        x = values.contiguous(memory_format=torch.channels_last); return x, x
    if layout == 'sliced':
        base = torch.zeros(*values.shape[:-1], 2 * values.shape[-1], dtype=values.dtype)
        x = base[..., ::2]; x.copy_(values); return x, base
    if layout == 'offset':
        base = torch.zeros(values.numel() + 3, dtype=values.dtype)
        x = base[3:].view(values.shape); x.copy_(values); return x, base
    raise ValueError(f"unknown layout {layout!r}; one of {LAYOUTS}")

def gaps(x, base):
    "The elements of `base` that `x` does not view (they must stay untouched)"
    mask = torch.ones(base.numel(), dtype=torch.bool)
    idx = torch.arange(base.numel()).as_strided(x.shape, x.stride(), x.storage_offset() - base.storage_offset())
    mask[idx.flatten()] = False
    return base.flatten()[mask] if base.is_contiguous() else base.t().flatten()[mask]

# Unit roundoff u of each dtype: a correctly rounded operation is off by at most u, relative.
ROUNDOFF = {torch.float64: 2. ** -53, torch.float32: 2. ** -24, torch.bfloat16: 2. ** -8, torch.float16: 2. ** -11}

# How far a correct run may drift from its reference per step, measured as |a - b| / (1 + |b|):
# - bfloat16, float16: 8 u. A for-loop rounds every intermediate (exp_avg, exp_avg_sq, its square root, the denominator)
#   to the dtype, a fused kernel keeps them in float32: each of those few roundings moves the update by u, relative, and
#   the parameter's own rounding can then land one ulp (2 u relative) apart when the exact value falls between two.
# - float32, float64: the same few roundings, magnified by what a step divides by (a norm ratio in LARS and LAMB, the
#   root of a small second moment in Adam): the floors are the measured worst cases of correct paths times about 100.
# The bugs this hunts are far above: a kernel reading a gradient in the wrong order is off by 1e-3 to 1 after a step.
PER_STEP = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 8 * ROUNDOFF[torch.bfloat16], torch.float16: 8 * ROUNDOFF[torch.float16]}

def tolerance(dtype, steps:int, tensor_lr:bool=False) -> float:
    "How far the tested run may be from the reference after `steps` steps in `dtype`: the drift adds up step by step"
    if tensor_lr: dtype = max(dtype, torch.float32, key=lambda d: PER_STEP[d])  # torch's for-loop multiplies a float32 lr tensor by its scalars in float32: the update's coefficient is float32-accurate, a kernel's double
    return PER_STEP[dtype] * steps

def divergence(a, b) -> float:
    "Largest |a - b| / (1 + |b|) over the elements, in float64 (equal infinities and NaN in the same places count as equal)"
    a, b = a.detach().double(), b.detach().double()
    d = ((a - b).abs() / (1 + b.abs())).masked_fill((a.isnan() & b.isnan()) | (a == b), 0.)
    return d.max().item() if d.numel() else 0.
