"""The fused paths of chapter 11 (optbook.fused): equal to the readable per-tensor path in float64, equal to torch's fused
optimizers, the path taken on record, GradScaler's grad_scale/found_inf consumed without unscaling, one compile under
torch.compile, and (on CUDA) a capturable step inside a CUDA graph. Every test runs on `default_device()`."""
import math
import pytest
import torch
from torch import nn
import optbook
from optbook import SGD, SGDW, Adam, AdamW, RMSprop, RMSpropW, RAdam, Optimizer, default_device
from optbook.core import descend, stepper

DEV = default_device()
F64 = torch.float64 if DEV.type != 'mps' else torch.float32

# (class, keywords, does OneCycleLR cycle its momentum?, the path a fused=True group records)
CONFIGS = [
    (SGD, dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-2), True, 'fused'),
    (SGD, dict(lr=0.01, momentum=0.9, nesterov=True, maximize=True), True, 'fused'),
    (SGD, dict(lr=0.01), False, 'fused'),
    (SGDW, dict(lr=0.01, momentum=0.9, weight_decay=1e-2), True, 'fused'),
    (Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True), True, 'fused'),
    (Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), True, 'fused'),
    (AdamW, dict(lr=0.01, weight_decay=0.1), True, 'fused'),
    (RMSprop, dict(lr=0.01, weight_decay=0.1, maximize=True), False, 'fused'),
    (RMSprop, dict(lr=0.01, centered=True, momentum=0.5), True, 'fused'),
    (RMSprop, dict(lr=0.01, centered=True, weight_decay=0.1, maximize=True), False, 'fused'),
    (RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.1), True, 'fused'),
    (RMSpropW, dict(lr=0.01, weight_decay=0.1), False, 'fused'),
    (RMSpropW, dict(lr=0.01, weight_decay=0.1, momentum=0.9, centered=True), True, 'fused'),
    (RMSpropW, dict(lr=0.01, weight_decay=0.1, momentum=0.9, maximize=True), True, 'fused'),
    (RAdam, dict(lr=0.01, weight_decay=0.1), True, 'fused'),
    (RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), True, 'fused'),
    (optbook.LARS, dict(lr=0.1, momentum=0.9, weight_decay=1e-2, trust_clip=True), True, 'fused'),
    (optbook.LARS, dict(lr=0.1, momentum=0.9, nesterov=True, always_adapt=True), True, 'fused'),
    (optbook.LARS, dict(lr=0.1, weight_decay=1e-2, dampening=0.1, momentum=0.5), True, 'fused'),
    (optbook.LARS, dict(lr=0.1, weight_decay=1e-2), False, 'fused'),
    (optbook.LAMB, dict(lr=0.01, weight_decay=0.1), True, 'fused'),
    (optbook.LAMB, dict(lr=0.01, weight_decay=0.1, grad_averaging=False, trust_clip=True, always_adapt=True, max_grad_norm=None), True, 'fused'),
    (optbook.LAMB, dict(lr=0.01, weight_decay=0.01, bias_correction=False, max_grad_norm=0.5), False, 'fused'),
]
SHAPES = [(4, 3), (3,), (2, 2, 2), (5,), (1,)]

def _groups(ps):
    return [{'params': ps[:2]}, {'params': ps[2:4], 'lr': 0.02}, {'params': ps[4:], 'weight_decay': 0.}]

def _run(cls, kw, cycle, paths, steps=40, switch=None, seed=0, dtype=F64):
    """Train with `paths[0]`'s keywords, and from step `switch` on with `paths[1]`'s: the state_dict of the first
    optimizer (and of its OneCycleLR) loaded into a new one. Returns the parameters and the paths recorded per step."""
    gen = torch.Generator().manual_seed(seed)
    ps = [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype).to(DEV)) for s in SHAPES]
    curv = [torch.rand(s, generator=gen, dtype=dtype).to(DEV) + 0.1 for s in SHAPES]
    def make(path):
        opt = cls([g | path for g in _groups(ps)], **kw)  # the path flags as group keys: LARS's signature has no `fused`
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.05, 0.1, 0.02], total_steps=steps + 1, cycle_momentum=cycle)
        return opt, sched
    opt, sched = make(paths[0])
    record = []
    for t in range(steps):
        if t == switch:
            sd, ssd = opt.state_dict(), sched.state_dict()
            opt, sched = make(paths[1])
            opt.load_state_dict(sd)
            sched.load_state_dict(ssd)
            for g in opt.param_groups: g.update(paths[1])  # the saved groups carry the first path's flags
        for p, c in zip(ps, curv):
            p.grad = None if torch.rand((), generator=gen) < 0.3 else c * p.detach() + torch.randn(p.shape, generator=gen, dtype=dtype).to(DEV)
        opt.step(); sched.step()
        record.append(list(opt.last_paths))
    return [p.detach().clone() for p in ps], record

def _divergence(a, b): return max(((x - y).abs() / (1 + y.abs())).max().item() for x, y in zip(a, b))

FUSED, TENSOR = dict(fused=True, foreach=None), dict(fused=None, foreach=False)

@pytest.mark.parametrize('cls,kw,cycle,path', CONFIGS, ids=[f"{c.__name__}-{i}" for i, (c, *_) in enumerate(CONFIGS)])
def test_fused_equals_readable_path(cls, kw, cycle, path):
    "Skipped gradients, three groups, OneCycleLR changing lr (and momentum or beta1) every step, a state_dict switch mid-run both ways"
    ref, ref_paths = _run(cls, kw, cycle, (TENSOR, TENSOR))
    fused, fused_paths = _run(cls, kw, cycle, (FUSED, FUSED))
    assert all(set(r) == {'tensor'} for r in ref_paths)
    assert all(set(r) == {path} for r in fused_paths), fused_paths[:3]  # which path ran, every step, every group
    assert _divergence(fused, ref) <= 1e-12
    for paths in ((FUSED, TENSOR), (TENSOR, FUSED)):
        mixed, rec = _run(cls, kw, cycle, paths, switch=20)
        assert _divergence(mixed, ref) <= 1e-12
        assert set(rec[25]) == ({'tensor'} if paths[1] is TENSOR else {path})

BLOCKED = [c for c in CONFIGS if (c[0] in (RMSprop, RMSpropW) and c[1].get('centered')) or (c[0] is optbook.LARS and c[1].get('weight_decay', 0) != 0)]

@pytest.mark.parametrize('cls,kw,cycle,path', BLOCKED, ids=[f"{c.__name__}-{i}" for i, (c, *_) in enumerate(BLOCKED)])
def test_blocks_cut_through_tensors(monkeypatch, cls, kw, cycle, path):
    "Blocks of 5 numbers slice every tensor of more than 5 and put small ones together: still the readable path's numbers"
    import optbook.fused
    ref, _ = _run(cls, kw, cycle, (TENSOR, TENSOR), steps=15)
    monkeypatch.setattr(optbook.fused, 'BLOCK', 5)
    calls, real = [], optbook.fused.blocks
    def blocks(lists, size=None):
        out = list(real(lists, size)); calls.append([i for _, i in out]); return out
    monkeypatch.setattr(optbook.fused, 'blocks', blocks)
    fused, _ = _run(cls, kw, cycle, (FUSED, FUSED), steps=15)
    assert any(sum(k in i for i in c) > 1 for c in calls for k in range(len(SHAPES)))  # a tensor sliced over several blocks
    assert any(len(set(i)) > 1 for c in calls for i in c)  # several tensors in one block
    assert _divergence(fused, ref) <= 1e-12

LAMB_CONFIGS = [c for c in CONFIGS if c[0] is optbook.LAMB and (c[1].get('weight_decay', 0.01) != 0 or c[1].get('always_adapt'))]

@pytest.mark.parametrize('cls,kw,cycle,path', LAMB_CONFIGS, ids=[f"LAMB-{i}" for i in range(len(LAMB_CONFIGS))])
def test_lamb_runs_keep_tensors_whole(monkeypatch, cls, kw, cycle, path):
    "Runs of 10 numbers: small tensors share a run, a larger one has a run of its own and is never cut (its ratio needs its whole norm); still the readable path's numbers"
    import optbook.fused
    ref, _ = _run(cls, kw, cycle, (TENSOR, TENSOR), steps=15)
    monkeypatch.setattr(optbook.fused, 'BLOCK', 10)  # groups of 12 + 3 numbers (two runs) and 8 + 5 (one run of two tensors)
    calls, real = [], optbook.fused.blocks
    def blocks(lists, size=None, cut=True):
        out = list(real(lists, size, cut))
        if not cut: calls.append(([p.numel() for p in lists[0]], [idx for _, idx in out]))
        return iter(out)
    monkeypatch.setattr(optbook.fused, 'blocks', blocks)
    fused, rec = _run(cls, kw, cycle, (FUSED, FUSED), steps=15)
    assert calls and all(sorted(i for r in runs for i in r) == list(range(len(n))) for n, runs in calls)  # every tensor once, whole
    assert any(len(r) > 1 for _, runs in calls for r in runs) and any(len(runs) > 1 for _, runs in calls)  # shared runs, several runs
    assert all(set(r) == {'fused'} for r in rec) and _divergence(fused, ref) <= 1e-12

LARS_CONFIGS = [c for c in CONFIGS if c[0] is optbook.LARS]

@pytest.mark.parametrize('cls,kw,cycle,path', LARS_CONFIGS, ids=[f"LARS-{i}" for i in range(len(LARS_CONFIGS))])
def test_lars_both_ways_of_putting_the_ratio_in(monkeypatch, cls, kw, cycle, path):
    "Where the ratios can be read as numbers (the CPU) they go into SGD's kernel per tensor; elsewhere the direction is built per block: both equal the readable path"
    import optbook.fused
    ref, _ = _run(cls, kw, cycle, (TENSOR, TENSOR))
    for host in (True, False):
        monkeypatch.setattr(optbook.fused, 'host_ratios', lambda device: host)
        fused, rec = _run(cls, kw, cycle, (FUSED, FUSED))
        assert all(set(r) == {'fused'} for r in rec) and _divergence(fused, ref) <= 1e-12

def test_default_paths():
    w = [nn.Parameter(torch.zeros(3, device=DEV))]
    def path(opt):
        w[0].grad = torch.ones_like(w[0]); opt.step(); return opt.last_paths
    for cls in (SGD, SGDW, Adam, AdamW, RMSprop, RMSpropW, RAdam, optbook.LARS, optbook.LAMB): assert path(cls(w)) == ['fused'], cls
    assert path(Adam(w, foreach=True)) == ['foreach'] and path(Adam(w, fused=False)) == ['foreach'] and path(Adam(w, foreach=False)) == ['tensor']
    assert path(RMSprop(w, momentum=0.9)) == ['fused'] and path(RMSprop(w, centered=True)) == ['fused'] and path(RMSprop(w, centered=True, fused=False)) == ['foreach']
    assert path(optbook.LAMB(w, foreach=True)) == ['foreach'] and path(optbook.LAMB(w, foreach=False)) == ['tensor']
    assert path(Adam(w, capturable=True)) == ['foreach'] and path(Adam(w, lr=torch.tensor(0.01))) == ['tensor'] and path(Adam(w, capturable=True, fused=True)) == ['fused']
    assert path(RAdam(w, capturable=True, fused=True)) == ['foreach']  # its r_t is computed on the host
    assert path(optbook.LARS(w, weight_decay=1e-4)) == ['fused']
    assert path(Adam([{'params': w, 'fused': False}, {'params': [nn.Parameter(torch.ones(2, device=DEV))]}])) == ['foreach']  # the second group has no grad
    assert Adam(w)._step_supports_amp_scaling and not Adam(w, fused=False)._step_supports_amp_scaling and not hasattr(RMSprop, '_step_supports_amp_scaling')

def test_a_subclass_with_other_steppers_keeps_the_foreach_path():
    "SGD's kernel computes SGD's steppers: a subclass with decoupled decay (chapter 06 builds one) must not inherit it"
    from optbook.weight_decay import decoupled_decay
    from optbook.momentum import heavy_ball
    from optbook.core import maximize
    class MySGDW(SGD):
        def __init__(self, ps, **kw): Optimizer.__init__(self, ps, [maximize, decoupled_decay, heavy_ball, descend], **kw)
    for kw in ({}, dict(fused=True)):
        a, b = [nn.Parameter(torch.ones(3, device=DEV))], [nn.Parameter(torch.ones(3, device=DEV))]
        oa, ob = MySGDW(a, lr=0.1, momentum=0.9, weight_decay=0.5, **kw), SGDW(b, lr=0.1, momentum=0.9, weight_decay=0.5)
        for _ in range(3):
            a[0].grad = torch.ones(3, device=DEV); b[0].grad = torch.ones(3, device=DEV); oa.step(); ob.step()
        assert oa.last_paths == ['foreach'] and not oa._step_supports_amp_scaling
        torch.testing.assert_close(a[0], b[0])

def test_fused_by_default_hook():
    "The engine's hook: an optimizer with a fused path but `fused_by_default` False takes it only when asked"
    @stepper()
    def count(p, g, state): state['n'] = state.get('n', 0) + 1
    class Opt(Optimizer):
        def __init__(self, ps, **kw): super().__init__(ps, [count, descend], **kw)
        def fused_step(self, group, params): self.fused_ran = True
    w = [nn.Parameter(torch.zeros(2))]; w[0].grad = torch.ones(2)
    def path(**kw):
        o = Opt(w, **kw); return o.choose_path(o.param_groups[0])
    assert path() == 'tensor'  # `count` has no foreach version
    o = Opt(w, fused=True); o.step(); assert o.fused_ran and o.last_paths == ['fused']
    Opt.fused_by_default = lambda self, group: True
    assert path() == 'fused' and path(foreach=False) == 'tensor' and path(fused=False) == 'tensor' and path(fused=True) == 'fused'

@pytest.mark.parametrize('ours,theirs,kw', [
    (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=1e-2)),
    (AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1, maximize=True))])
def test_same_numbers_as_torch_fused(ours, theirs, kw):
    "The same kernel with the same inputs: bitwise equal to torch's fused optimizer in float32, with a Tensor lr"
    gen = torch.Generator().manual_seed(1)
    a = [nn.Parameter(torch.randn(s, generator=gen).to(DEV)) for s in SHAPES]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    oa, ob = ours(a, **kw | dict(lr=torch.tensor(kw['lr'])), fused=True), theirs(b, **kw | dict(lr=torch.tensor(kw['lr'])), fused=True)
    for t in range(20):
        for x, y in zip(a, b): x.grad = torch.randn(x.shape, generator=gen).to(DEV); y.grad = x.grad.clone()
        oa.param_groups[0]['lr'].fill_(kw['lr'] * (1 + math.sin(t)) / 2); ob.param_groups[0]['lr'].fill_(kw['lr'] * (1 + math.sin(t)) / 2)
        oa.step(); ob.step()
    assert oa.last_paths == ['fused']
    assert all(torch.equal(x, y) for x, y in zip(a, b))

def test_complex_parameters_as_torch():
    gen = torch.Generator().manual_seed(2)
    a = nn.Parameter(torch.randn(4, 3, dtype=torch.complex128, generator=gen).to(DEV)); b = nn.Parameter(a.detach().clone())
    oa, ob = Adam([a], lr=0.01, fused=True), torch.optim.Adam([b], lr=0.01, foreach=False)
    for _ in range(10):
        a.grad = torch.randn(4, 3, dtype=torch.complex128, generator=gen).to(DEV); b.grad = a.grad.clone()
        oa.step(); ob.step()
    assert oa.last_paths == ['fused'] and oa.state[a]['exp_avg'].is_complex()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)

def test_rmsprop_kernel_leaves_the_gradient_alone():
    gen = torch.Generator().manual_seed(3)
    p = nn.Parameter(torch.randn(1000, generator=gen).to(DEV)); g = torch.randn(1000, generator=gen).to(DEV)
    opt = RMSprop([p], lr=0.01)
    for _ in range(3):
        p.grad = g.clone(); opt.step()
        assert opt.last_paths == ['fused'] and torch.equal(p.grad, g)
    assert set(opt.state[p]) == {'step', 'square_avg'} and opt.state[p]['step'].item() == 3

def _scaler_step(make, grads, scale=1024.):
    "One GradScaler step of a fresh Linear(3, 1) whose gradients are `grads` times the scale; returns model, optimizer, scaler"
    torch.manual_seed(0)
    model = nn.Linear(3, 1).to(DEV)
    opt, scaler = make(model.parameters()), torch.amp.GradScaler(DEV.type, init_scale=scale)
    opt.seen = []  # what the step was handed: GradScaler sets grad_scale/found_inf on a fused optimizer for the step
    opt.register_step_pre_hook(lambda o, args, kwargs: o.seen.append((getattr(o, 'grad_scale', None), getattr(o, 'found_inf', None))))
    scaler.scale(model(torch.ones(2, 3, device=DEV)).sum() * 0).backward()  # the scaler sees a backward pass
    for p, g in zip(model.parameters(), grads): p.grad = g.to(DEV) * scale
    scaler.step(opt); scaler.update()
    return model, opt, scaler

@pytest.mark.parametrize('ours,theirs', [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW), (SGD, torch.optim.SGD)])
def test_grad_scaler_consumes_scale_and_found_inf(ours, theirs):
    kw = dict(lr=0.1, momentum=0.9) if ours is SGD else dict(lr=0.1)
    grads = [torch.tensor([[0.5, -1., 2.]]), torch.tensor([0.25])]
    m, o, s = _scaler_step(lambda ps: ours(ps, **kw), grads)
    mt, ot, st = _scaler_step(lambda ps: theirs(ps, **kw, fused=True), grads)
    assert o.last_paths == ['fused'] and all(torch.equal(a, b) for a, b in zip(m.parameters(), mt.parameters()))
    assert [(a.item(), b.item()) for a, b in o.seen] == [(1024., 0.)]  # the step got the scale and found_inf, as torch's fused optimizers do
    bad = [torch.tensor([[0.5, float('inf'), 2.]]), torch.tensor([0.25])]
    torch.manual_seed(0); before = [p.detach().clone() for p in nn.Linear(3, 1).to(DEV).parameters()]
    m, o, s = _scaler_step(lambda ps: ours(ps, **kw), bad)
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters())) and s.get_scale() == 512.
    assert [b.item() for _, b in o.seen] == [1.]  # the step ran and the kernel skipped: no host-side decision
    if ours is not SGD: assert o.state[m.weight]['step'].item() == 0 and o.state[m.weight]['exp_avg'].abs().sum() == 0

def test_grad_scaler_unscales_first_when_the_optimizer_clips():
    "max_grad_norm (chapter 08) clips inside the step: it must see unscaled gradients, so the kernel does not get the scale"
    grads = [torch.tensor([[0.5, -1., 2.]]), torch.tensor([0.25])]
    m, o, s = _scaler_step(lambda ps: Adam(ps, lr=0.1, max_grad_norm=0.5), grads)
    mt, _, _ = _scaler_step(lambda ps: Adam(ps, lr=0.1, fused=False, max_grad_norm=0.5), grads)
    assert o.last_paths == ['fused'] and o.seen[0][0] is None  # no grad_scale handed over: already unscaled
    assert not Adam([nn.Parameter(torch.zeros(1))], max_grad_norm=1.)._step_supports_amp_scaling
    for a, b in zip(m.parameters(), mt.parameters()): torch.testing.assert_close(a, b)

def test_grad_scaler_with_a_group_off_the_fused_path():
    "Then GradScaler unscales and decides on the host, as for any optimizer, and the numbers are still right"
    grads = [torch.tensor([[0.5, -1., 2.]]), torch.tensor([0.25])]
    m, o, s = _scaler_step(lambda ps: Adam(ps, lr=0.1, fused=False), grads)
    mt, _, _ = _scaler_step(lambda ps: torch.optim.Adam(ps, lr=0.1, foreach=False), grads)
    assert o.last_paths == ['foreach'] and o.seen == [(None, None)] and torch.equal(m.weight.grad, grads[0].to(DEV))  # unscaled by the scaler first
    for a, b in zip(m.parameters(), mt.parameters()): torch.testing.assert_close(a, b)

@pytest.mark.parametrize('cls,kw', [(Adam, dict(weight_decay=1e-2)), (AdamW, {}), (SGD, dict(momentum=0.9))])
def test_compile_once(cls, kw):
    "torch.compile of the fused step: one graph for the first step (it creates the state), one for the rest, none after"
    from torch._dynamo.testing import CompileCounter  # a backend that counts graphs and runs them eagerly: seconds, not inductor's minutes
    torch._dynamo.reset(); torch._dynamo.utils.counters.clear()
    ps = [nn.Parameter(torch.randn(4, 3, device=DEV)), nn.Parameter(torch.randn(3, device=DEV))]
    opt, counter = cls(ps, lr=torch.tensor(0.01), **kw, fused=True), CompileCounter()  # a Tensor lr: the default is foreach, ask for the kernel
    step, frames = torch.compile(opt.step, backend=counter), []
    for t in range(6):
        for p in ps: p.grad = torch.randn_like(p)
        opt.param_groups[0]['lr'].fill_(0.01 / (t + 1))  # a scheduler changing a Tensor lr changes a value, not the graph
        step(); frames.append(counter.frame_count)
    assert frames[1:] == [frames[1]] * 5 and frames[1] <= 2, frames
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == frames[-1]

@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a GPU')
@pytest.mark.parametrize('cls,kw', [(Adam, dict(lr=torch.tensor(0.01), weight_decay=1e-2)), (AdamW, dict(lr=torch.tensor(0.01))), (SGD, dict(lr=torch.tensor(0.01), momentum=0.9))])
def test_capturable_step_in_a_cuda_graph(cls, kw):
    "capturable=True: no host sync in the step, so a CUDA graph captures it; replays equal eager steps"
    gen = torch.Generator(device='cuda').manual_seed(0)
    ps = [nn.Parameter(torch.randn(64, 32, device='cuda', generator=gen)), nn.Parameter(torch.randn(32, device='cuda', generator=gen))]
    qs = [nn.Parameter(p.detach().clone()) for p in ps]
    kw = kw | dict(lr=kw['lr'].cuda())
    opt, ref = cls(ps, **kw, capturable=True, fused=True), cls(qs, **kw | dict(lr=kw['lr'].clone()), capturable=True, fused=True)
    for p, q in zip(ps, qs): p.grad = torch.randn(p.shape, device='cuda', generator=gen); q.grad = p.grad.clone()
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): opt.step(); ref.step()  # warm up: state allocated outside the graph
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph): opt.step()
    for _ in range(5):
        graph.replay(); ref.step()
    torch.cuda.synchronize()
    for p, q in zip(ps, qs): torch.testing.assert_close(p, q)
