"""Issue 21, item 1: the default path equals torch's for-loop on every memory layout torch's default path handles. A fused
kernel walks memory in order, so a tensor whose gradient or state is laid out otherwise (a transposed weight with a
hand-assigned contiguous gradient, a non-dense slice, a state loaded with other strides) must leave the kernel for the
multi-tensor path in the same step; channels_last weights stay on the kernel, with LARS's and LAMB's scratch buffers laid
out as the weight. Each case failed before the fix (relative errors 1e-3 to 1.3 after 6 steps)."""
import pytest, torch
from torch import nn
import optbook
from optbook import default_device

DEV = default_device()
F64 = torch.float64 if DEV.type != 'mps' else torch.float32
TORCH_TWIN = {'SGD': torch.optim.SGD, 'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'RMSprop': torch.optim.RMSprop, 'RAdam': torch.optim.RAdam}
CLASSES = [('SGD', dict(lr=0.1, momentum=0.9, weight_decay=1e-2)), ('SGD', dict(lr=0.1)), ('SGDW', dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
           ('Adam', dict(lr=0.1, amsgrad=True)), ('AdamW', dict(lr=0.1)), ('RMSprop', dict(lr=0.01)), ('RMSprop', dict(lr=0.01, momentum=0.9, weight_decay=0.1)),
           ('RMSprop', dict(lr=0.01, centered=True)), ('RMSpropW', dict(lr=0.01, weight_decay=0.1)), ('RAdam', dict(lr=0.1, weight_decay=0.1)),
           ('LARS', dict(lr=0.1, momentum=0.9, weight_decay=1e-2)), ('LARS', dict(lr=0.1, weight_decay=1e-2)), ('LAMB', dict(lr=0.01)),
           ('LAMB', dict(lr=0.01, weight_decay=0.))]

def _layouts(gen):
    "Parameters of every layout, with the layout of the gradient autograd or a user would give them"
    t = lambda *s: torch.randn(*s, generator=gen, dtype=F64).to(DEV)
    return {
        'transposed': (t(3, 4).t(), lambda p: t(4, 3)),  # a contiguous gradient for a transposed parameter
        'sliced': (t(4, 6)[:, ::2], lambda p: t(4, 3)),  # a non-dense leaf: autograd's gradient is contiguous
        'channels_last': (t(6, 3, 2, 2).contiguous(memory_format=torch.channels_last), lambda p: t(6, 3, 2, 2).contiguous(memory_format=torch.channels_last)),
        'channels_last_contiguous_grad': (t(6, 3, 2, 2).contiguous(memory_format=torch.channels_last), lambda p: t(6, 3, 2, 2)),
        'contiguous': (t(5, 2), lambda p: t(5, 2)),
    }

def _train(make, names, steps=6, seed=0):
    "Parameters of the `names` layouts in one group, trained `steps` steps on the same gradients; returns them and the paths recorded"
    gen = torch.Generator().manual_seed(seed)
    lay = _layouts(gen)
    ps = [nn.Parameter(_copy_like(lay[n][0])) for n in names]
    opt, paths = make(ps), []
    g2 = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for p, n in zip(ps, names): p.grad = _copy_like(_grad(lay[n], g2))
        opt.step(); paths.append(list(getattr(opt, 'last_paths', [])))
    return [p.detach() for p in ps], paths

def _copy_like(t):
    "A copy of `t` with its strides (a slice stays a non-dense slice of a larger tensor)"
    if t.numel() * t.element_size() == t.untyped_storage().nbytes():  # it fills its storage: dense
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)
    big = torch.zeros(t.shape[0], 2 * t.shape[1], dtype=t.dtype, device=t.device)
    out = big[:, ::2]; out.copy_(t); return out

def _grad(entry, gen):
    p, make = entry
    g = torch.randn(p.shape, generator=gen, dtype=F64).to(DEV)
    like = make(p)
    return torch.empty_strided(like.shape, like.stride(), dtype=F64, device=DEV).copy_(g)

def _reference(name, kw):
    "torch's for-loop where torch has the class, else optbook's readable per-tensor path"
    if name in TORCH_TWIN: return lambda ps: TORCH_TWIN[name](ps, foreach=False, **kw)
    return lambda ps: getattr(optbook, name)(ps, foreach=False, **kw)

def _worst(a, b):
    assert all(x.numel() and x.shape == y.shape for x, y in zip(a, b))
    return max(((x - y).abs() / (1 + y.abs())).max().item() for x, y in zip(a, b))

@pytest.mark.parametrize('layout', ['transposed', 'sliced', 'channels_last', 'channels_last_contiguous_grad'])
@pytest.mark.parametrize('name,kw', CLASSES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CLASSES)])
def test_default_path_equals_the_loop_on_every_layout(name, kw, layout):
    "One group holding a contiguous tensor and a tensor of `layout`: the kernel takes what fits, the rest takes the multi-tensor path"
    names = ['contiguous', layout]
    ref, _ = _train(_reference(name, kw), names)
    ours, paths = _train(lambda ps: getattr(optbook, name)(ps, **kw), names)
    assert _worst(ours, ref) < 1e-12, (name, layout, _worst(ours, ref))
    fits = layout == 'channels_last'
    assert set(p for step in paths for p in step) == ({'fused'} if fits else {'fused+foreach'}), paths

def test_a_state_with_other_strides_leaves_the_kernel():
    "A momentum buffer laid out otherwise than its parameter (a checkpoint from a contiguous twin loaded into a channels_last one)"
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3, 2, 2, generator=gen, dtype=F64).to(DEV).contiguous(memory_format=torch.channels_last))
    twin = nn.Parameter(w.detach().contiguous())
    ours, ref = optbook.SGD([w], lr=0.1, momentum=0.9), torch.optim.SGD([twin], lr=0.1, momentum=0.9, foreach=False)
    for step in range(4):
        g = torch.randn(w.shape, generator=gen, dtype=F64).to(DEV)
        w.grad, twin.grad = g.contiguous(memory_format=torch.channels_last), g.clone()
        if step == 1: ours.state[w]['momentum_buffer'] = ours.state[w]['momentum_buffer'].contiguous()
        ours.step(); ref.step()
    assert ours.last_paths == ['foreach'] and _worst([w], [twin]) < 1e-12

def test_grad_scaler_unscales_when_a_tensor_leaves_the_kernel():
    "The kernel consumes GradScaler's scale only when every tensor takes it; a transposed weight makes the scaler unscale first"
    w = nn.Parameter(torch.randn(3, 4).t().to(DEV)); twin = nn.Parameter(w.detach().clone())
    opt, scaler = optbook.Adam([w], lr=0.1), torch.amp.GradScaler(DEV.type, init_scale=1024.)
    ref = torch.optim.Adam([twin], lr=0.1, foreach=False)
    scaler.scale((w * 0).sum()).backward()
    g = torch.randn(4, 3).to(DEV)
    w.grad, twin.grad = g * 1024., g.clone()
    assert not opt._step_supports_amp_scaling
    scaler.step(opt); ref.step()
    assert opt.last_paths == ['foreach']
    torch.testing.assert_close(w.detach(), twin.detach())
