"optbook.SGD against torch.optim.SGD: random configurations in float64, checkpoints both ways, closures, bad arguments, CUDA."
import io, itertools, math, random
import pytest, torch
from torch import nn
import optbook
from optbook import SGD, Optimizer, max_divergence, maximize, l2_decay, heavy_ball, ema_momentum, descend

TOL = 1e-10
# gradient scales spanning twelve orders of magnitude; lr <= 0.1 keeps lr * curvature * scale <= 1.1, stable
SCALES = (1e-6, 10., 1e-3, 1.)

def random_hypers(rng, base=None):
    "A valid random set of SGD hyper-parameters (every option drawn independently)"
    momentum = rng.choice([0., 0.5, 0.9, 0.99, rng.uniform(0, 1)])
    dampening = rng.choice([0., 0., rng.uniform(0, 1)])
    nesterov = momentum > 0 and dampening == 0 and rng.random() < 0.5
    return dict(lr=10 ** rng.uniform(-4, -1), momentum=momentum, dampening=dampening, nesterov=nesterov,
                weight_decay=rng.choice([0., 10 ** rng.uniform(-5, -1)]), maximize=rng.random() < 0.3)

def random_groups(rng, base, n=4):
    "`n` group dicts overriding random subsets of the `base` hyper-parameters, each group valid with its defaults"
    groups = []
    for _ in range(n):
        h = random_hypers(rng)
        keys = [k for k in h if rng.random() < 0.5]
        if 'nesterov' in keys or h['nesterov']: keys = sorted(set(keys) | {'nesterov', 'momentum', 'dampening'})
        g = {k: h[k] for k in keys}
        merged = base | g
        if merged['nesterov'] and (merged['momentum'] == 0 or merged['dampening'] != 0): g['nesterov'] = False
        groups.append(g)
    return groups

def divergence(kw, groups=None, foreach=None, steps=120, skip=0., seed=0, ref_foreach=None, **kwargs):
    "max_divergence of optbook.SGD against torch.optim.SGD, after checking both runs stayed finite"
    made = []
    def ours(g): made.append(g); return SGD(g, **kw, foreach=foreach)
    def ref(g): made.append(g); return torch.optim.SGD(g, **kw, foreach=ref_foreach)
    d = max_divergence(ours, ref, steps=steps, groups=groups, skip=skip, seed=seed, scales=SCALES, **kwargs)
    for gs in made:
        for g in gs:
            for p in g['params']: assert torch.isfinite(p).all(), "a run diverged: the comparison would be void"
    return d

worst_seen = [0.]

@pytest.mark.parametrize('seed', range(24))
def test_random_configs_equal_torch(seed):
    rng = random.Random(seed)
    kw = random_hypers(rng)
    groups = random_groups(rng, kw)
    foreach = rng.choice([None, True, False])
    d = divergence(kw, groups, foreach=foreach, ref_foreach=rng.choice([None, True, False]), steps=rng.randint(100, 160),
                   skip=rng.choice([0., 0.2, 0.5]), seed=seed)
    worst_seen[0] = max(worst_seen[0], d)
    assert d <= TOL, (d, kw, groups, foreach)

@pytest.mark.parametrize('momentum,dampening,nesterov,weight_decay,maximize_',
                         [c for c in itertools.product((0., 0.9), (0., 0.5), (False, True), (0., 1e-2), (False, True))
                          if not (c[2] and (c[0] == 0 or c[1] != 0))])
@pytest.mark.parametrize('foreach', (False, True))
def test_every_option_combination(momentum, dampening, nesterov, weight_decay, maximize_, foreach):
    kw = dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay, maximize=maximize_)
    groups = [{}, {'lr': 0.01}, {'weight_decay': 0.}, {'lr': 0.1, 'maximize': not maximize_}]
    d = divergence(kw, groups, foreach=foreach, ref_foreach=foreach, steps=100, skip=0.3)
    worst_seen[0] = max(worst_seen[0], d)
    assert d <= TOL

def test_worst_difference_is_reported():
    print(f"\nworst relative difference from torch.optim.SGD so far: {worst_seen[0]:.3e}")
    assert worst_seen[0] <= TOL

def test_the_check_can_fail():
    assert divergence(dict(lr=0.01, momentum=0.9), steps=10, foreach=True) == 0.  # the same ops as torch's default foreach path: bitwise equal (the default is now the fused kernel)
    made = lambda g: SGD(g, lr=0.01, momentum=0.9, dampening=1e-3)
    assert max_divergence(made, lambda g: torch.optim.SGD(g, lr=0.01, momentum=0.9), steps=20) > 1e-9

def test_foreach_equals_per_tensor():
    for seed in range(6):
        rng = random.Random(100 + seed)
        kw = random_hypers(rng)
        groups = random_groups(rng, kw)
        d = max_divergence(lambda g: SGD(g, **kw, foreach=True), lambda g: SGD(g, **kw, foreach=False),
                           steps=100, groups=groups, skip=0.3, seed=seed, scales=SCALES)
        assert d <= 1e-12, (d, kw, groups)

def test_mixed_dtypes_in_one_group():
    "The multi-tensor path groups tensors by dtype; float32 and float64 side by side match torch"
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float32)]
    a, b = [nn.Parameter(t.clone()) for t in init], [nn.Parameter(t.clone()) for t in init]
    oa, ob = SGD(a, lr=0.05, momentum=0.9, nesterov=True, foreach=True), torch.optim.SGD(b, lr=0.05, momentum=0.9, nesterov=True, foreach=True)
    for _ in range(50):
        for x, y in zip(a, b):
            g = torch.randn(x.shape, generator=gen, dtype=x.dtype) + x.detach()
            x.grad, y.grad = g.clone(), g.clone()
        oa.step(); ob.step()
    for x, y in zip(a, b): assert torch.equal(x, y) and x.dtype == y.dtype

def test_gradient_is_not_modified_and_state_is_torchs():
    for foreach, nesterov, wd, maxim in itertools.product((False, True), (False, True), (0., 0.1), (False, True)):
        p = nn.Parameter(torch.ones(3, dtype=torch.float64))
        g = torch.tensor([1., -2., 3.], dtype=torch.float64)
        opt = SGD([p], lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=wd, maximize=maxim, foreach=foreach)
        for _ in range(3):
            p.grad = g.clone(); opt.step()
            assert torch.equal(p.grad, g)
        assert set(opt.state[p]) == {'momentum_buffer'} and opt.state[p]['momentum_buffer'] is not p.grad

def test_params_without_grad_get_no_state():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    a.grad = torch.ones(2); opt.step()
    assert 'momentum_buffer' in opt.state[a] and 'momentum_buffer' not in opt.state.get(b, {})
    assert torch.equal(b.detach(), torch.ones(2))

def test_defaults_and_signature_are_torchs():
    import inspect
    ours, theirs = inspect.signature(SGD).parameters, inspect.signature(torch.optim.SGD).parameters
    for k in ('lr', 'momentum', 'dampening', 'weight_decay', 'nesterov', 'maximize', 'foreach'):
        assert ours[k].default == theirs[k].default, k
        assert ours[k].kind == theirs[k].kind, k
    assert ours['lr'].default == 1e-3 and optbook.SGD is optbook.momentum.SGD

def _run(opt, ps, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for i, p in enumerate(ps):
            if i == 1 and torch.rand((), generator=gen) < 0.3: p.grad = None; continue  # a parameter that skips steps
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) + p.detach()
        opt.step()

def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in ((4, 3), (5,), (2, 2))]

def _groups(ps):
    return [{'params': [ps[0]]}, {'params': [ps[1]], 'lr': 0.02, 'momentum': 0.5, 'nesterov': False},
            {'params': [ps[2]], 'weight_decay': 0.1, 'dampening': 0., 'nesterov': True}]

KW = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)

def _save(obj):
    buf = io.BytesIO(); torch.save(obj, buf); buf.seek(0)
    return torch.load(buf)

@pytest.mark.parametrize('foreach', (False, True))
def test_state_dict_round_trip_is_bit_exact(foreach):
    pa = _params(); oa = SGD(_groups(pa), **KW, foreach=foreach)
    _run(oa, pa, 40, 0); _run(oa, pa, 40, 1)
    pb = _params(); ob = SGD(_groups(pb), **KW, foreach=foreach)
    _run(ob, pb, 40, 0)
    saved = _save({'params': [p.detach().clone() for p in pb], 'opt': ob.state_dict()})
    pc = [nn.Parameter(t) for t in saved['params']]
    oc = SGD(_groups(pc), lr=1., momentum=0.1)
    oc.load_state_dict(saved['opt'])
    assert [g['lr'] for g in oc.param_groups] == [0.05, 0.02, 0.05]
    _run(oc, pc, 40, 1)
    assert all(torch.equal(a, c) for a, c in zip(pa, pc))

@pytest.mark.parametrize('foreach', (False, True))
def test_torch_checkpoint_loads_and_continues(foreach):
    pt = _params(); ot = torch.optim.SGD(_groups(pt), **KW)
    _run(ot, pt, 40, 0)
    saved = _save({'params': [p.detach().clone() for p in pt], 'opt': ot.state_dict()})
    assert {'differentiable', 'fused', 'foreach'} <= set(saved['opt']['param_groups'][0])
    po = [nn.Parameter(t) for t in saved['params']]
    oo = SGD(_groups(po), lr=1., momentum=0.1, foreach=foreach)
    oo.load_state_dict(saved['opt'])
    assert all(g['differentiable'] is False and g['fused'] is None for g in oo.param_groups)  # torch's values, kept
    _run(ot, pt, 40, 1); _run(oo, po, 40, 1)
    for a, b in zip(po, pt): torch.testing.assert_close(a, b, rtol=TOL, atol=0)

def test_optbook_checkpoint_loads_into_torch():
    po = _params(); oo = SGD(_groups(po), **KW)
    _run(oo, po, 40, 0)
    saved = _save({'params': [p.detach().clone() for p in po], 'opt': oo.state_dict()})
    pt = [nn.Parameter(t) for t in saved['params']]
    ot = torch.optim.SGD(_groups(pt), lr=1., momentum=0.1)
    ot.load_state_dict(saved['opt'])
    assert [g['lr'] for g in ot.param_groups] == [0.05, 0.02, 0.05]
    _run(ot, pt, 40, 1); _run(oo, po, 40, 1)
    for a, b in zip(po, pt): torch.testing.assert_close(a, b, rtol=TOL, atol=0)

def test_state_dicts_hold_the_same_numbers():
    po, pt = _params(), _params()
    oo, ot = SGD(_groups(po), **KW), torch.optim.SGD(_groups(pt), **KW)
    _run(oo, po, 30, 0); _run(ot, pt, 30, 0)
    so, st = oo.state_dict(), ot.state_dict()
    for i in st['state']:
        assert set(so['state'][i]) == set(st['state'][i]) == {'momentum_buffer'}
        assert torch.equal(so['state'][i]['momentum_buffer'], st['state'][i]['momentum_buffer'])
    for go, gt in zip(so['param_groups'], st['param_groups']):
        for k in ('lr', 'momentum', 'dampening', 'weight_decay', 'nesterov', 'maximize', 'params'): assert go[k] == gt[k], k

def test_closure_and_scheduler():
    ws = [nn.Parameter(torch.tensor([1., -2., 0.5], dtype=torch.float64)) for _ in range(2)]
    opts = [SGD([ws[0]], lr=0.1, momentum=0.9, nesterov=True), torch.optim.SGD([ws[1]], lr=0.1, momentum=0.9, nesterov=True)]
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=30) for o in opts]
    losses = [[], []]
    for _ in range(30):
        for i, (w, o, s) in enumerate(zip(ws, opts, scheds)):
            def closure():
                o.zero_grad()
                loss = (w ** 2).sum() + torch.sin(w).prod()
                loss.backward()
                return loss
            losses[i].append(o.step(closure).item()); s.step()
        assert opts[0].param_groups[0]['momentum'] == opts[1].param_groups[0]['momentum']  # OneCycleLR cycles momentum
    torch.testing.assert_close(ws[0], ws[1], rtol=1e-12, atol=0)
    assert losses[0] == pytest.approx(losses[1], rel=1e-12) and losses[0][-1] < losses[0][0]

def test_tensor_lr():
    d = max_divergence(lambda g: SGD(g, lr=torch.tensor(0.01), momentum=0.9),
                       lambda g: torch.optim.SGD(g, lr=torch.tensor(0.01), momentum=0.9), steps=50)
    assert d <= TOL

def test_add_param_group():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({'params': [b], 'lr': 0.5})
    assert opt.param_groups[1]['momentum'] == 0.9 and opt.param_groups[1]['lr'] == 0.5
    with pytest.raises(ValueError, match='nesterov'): opt.add_param_group({'params': [nn.Parameter(torch.ones(1))], 'nesterov': True, 'dampening': 0.5})

w = nn.Parameter(torch.zeros(2))
BAD = [
    (dict(lr=-1e-3), ['lr', '[0, inf)']), (dict(lr=float('nan')), ['lr']), (dict(lr='0.1'), ['lr']),
    (dict(lr=torch.ones(2)), ['lr', 'shape']),
    (dict(momentum=-0.1), ['momentum', '[0, 1]']), (dict(momentum=1.01), ['momentum', '[0, 1]']),
    (dict(momentum=float('inf')), ['momentum']),
    (dict(dampening=-0.5), ['dampening', '[0, 1]']), (dict(dampening=1.5), ['dampening', '[0, 1]']),
    (dict(weight_decay=-1e-4), ['weight_decay', '[0, inf)']), (dict(weight_decay=float('nan')), ['weight_decay']),
    (dict(nesterov=1), ['nesterov', 'True or False']), (dict(maximize=0), ['maximize', 'True or False']),
    (dict(foreach='yes'), ['foreach']),
    (dict(nesterov=True), ['nesterov', 'momentum > 0']),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), ['nesterov', 'dampening == 0']),
]

@pytest.mark.parametrize('kw,words', BAD, ids=[str(k) for k, _ in BAD])
def test_bad_argument_raises_and_names_itself(kw, words):
    with pytest.raises(ValueError) as e: SGD([w], **kw)
    assert all(x in str(e.value) for x in words), str(e.value)
    # the same value in a parameter group is refused too
    with pytest.raises(ValueError) as e: SGD([{'params': [w], **kw}])
    assert words[0] in str(e.value)

def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="'mommentum'.*did you mean momentum"): SGD([{'params': [w], 'mommentum': 0.9}])
    with pytest.raises(TypeError, match='unknown hyper-parameter.*mommentum'): SGD([w], lr=0.1, mommentum=0.9)
    with pytest.raises(TypeError): SGD([w], 0.1, 0.9, 0., 0., False, True)  # maximize is keyword-only

def test_torch_checkpoint_with_bad_value_is_refused():
    sd = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1, momentum=1.5).state_dict()  # torch accepts momentum > 1
    with pytest.raises(ValueError, match='momentum'): SGD([nn.Parameter(torch.zeros(2))]).load_state_dict(sd)

def test_ema_momentum_is_torch_with_scaled_lr():
    "The seed's EMA momentum with lr equals torch's buffer with lr * (1 - beta), at every step"
    for beta in (0.5, 0.9, 0.99):
        ema = lambda g: Optimizer(g, [maximize, l2_decay, ema_momentum, descend], lr=0.1, momentum=beta, weight_decay=1e-3)
        ref = lambda g: torch.optim.SGD(g, lr=0.1 * (1 - beta), momentum=beta, weight_decay=1e-3)
        assert max_divergence(ema, ref, steps=150, skip=0.2, scales=SCALES) <= TOL

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('foreach', (False, True))
def test_cuda_equals_torch_and_cpu(foreach):
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True)
    groups = [{}, {'lr': 0.01}, {'maximize': True}, {'weight_decay': 0.}]
    d = max_divergence(lambda g: SGD(g, **kw, foreach=foreach), lambda g: torch.optim.SGD(g, **kw, foreach=foreach),
                       steps=100, groups=groups, skip=0.3, scales=SCALES, device='cuda')
    assert d <= TOL
    opt = SGD([nn.Parameter(torch.ones(3, device='cuda'))], **kw, foreach=foreach)
    p = opt.param_groups[0]['params'][0]
    p.grad = torch.ones(3, device='cuda'); opt.step()
    assert opt.state[p]['momentum_buffer'].device.type == 'cuda'

def test_fast_path_never_writes_state_or_gradients_it_is_handed():
    "The multi-tensor steppers reuse only this step's temporaries: a state tensor passed on as the direction stays intact"
    for steppers, kw in (([ema_momentum, l2_decay, descend], dict(momentum=0.9, weight_decay=0.1)),
                         ([maximize, heavy_ball, l2_decay, descend], dict(momentum=0.9, weight_decay=0.1, maximize=True)),
                         ([maximize, l2_decay, heavy_ball, descend], dict(momentum=0.5, nesterov=True, weight_decay=0.1, maximize=True))):
        d = max_divergence(lambda g: Optimizer(g, steppers, lr=0.01, foreach=True, **kw),
                           lambda g: Optimizer(g, steppers, lr=0.01, foreach=False, **kw), steps=60, skip=0.2, scales=SCALES)
        assert d <= 1e-12, (steppers, d)
    p = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = Optimizer([p], [ema_momentum, l2_decay, descend], lr=0.1, momentum=0.5, weight_decay=1., foreach=True)
    p.grad = torch.full((2,), 2., dtype=torch.float64); opt.step()
    assert torch.equal(opt.state[p]['grad_avg'], torch.ones(2, dtype=torch.float64))  # 0.5 * 2, untouched by the decay
    assert torch.equal(p.grad, torch.full((2,), 2., dtype=torch.float64))
