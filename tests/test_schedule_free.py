"optbook.AdamWScheduleFree and SGDScheduleFree against the schedulefree package (1.4.1) in float64: its own tests' configurations, random ones, both paths, checkpoints both ways, train()/eval(), pickling, GradScaler, torch.compile; recompute_bn_stats."
import copy, io, itertools, pickle, random, warnings
import pytest, torch
from torch import nn
import optbook
from optbook import AdamWScheduleFree, SGDScheduleFree, recompute_bn_stats
from reference_checks import clipping_first

sf = pytest.importorskip('schedulefree')  # a dev dependency, the reference; never imported by optbook
TOL = 1e-10
PAIRS = {'AdamW': (AdamWScheduleFree, sf.AdamWScheduleFree), 'SGD': (SGDScheduleFree, sf.SGDScheduleFree)}
CLOCK = ('k', 'lr_max', 'weight_sum', 'scheduled_lr', 'train_mode')
worst = {'AdamW': 0., 'SGD': 0.}

def _same(a, b): return torch.equal(a, b) if isinstance(b, torch.Tensor) else a == b

def divergence(name, kw, groups=({},), steps=30, skip=0.2, switch=True, seed=0, shapes=((4, 3), (5,), (2, 2, 2), (1,)),
               foreach=(None, True), ref_kw=None, scales=(1e-3, 1., 1e3, 1.)):
    "Largest relative difference of the parameters (after each step and after each eval()) and of every state tensor; the group clocks must be equal"
    ours, theirs = PAIRS[name]
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    pa, pb = [nn.Parameter(t.clone()) for t in init], [nn.Parameter(t.clone()) for t in init]
    grouped = lambda ps: [{'params': ps[i::len(groups)], **g} for i, g in enumerate(groups)]
    oa = ours(grouped(pa), **copy.deepcopy(kw), foreach=foreach[0])
    ob = theirs(grouped(pb), **copy.deepcopy(ref_kw or kw), foreach=foreach[1])
    rel = lambda a, b: ((a - b).abs() / (1 + b.abs())).max().item()
    d = 0.
    for _ in range(steps):
        oa.train(); ob.train()
        for i, (a, b) in enumerate(zip(pa, pb)):
            if skip and torch.rand((), generator=gen) < skip: a.grad = b.grad = None; continue
            g = scales[i % len(scales)] * (torch.randn(a.shape, generator=gen, dtype=torch.float64) + 0.1 * b.detach())
            a.grad, b.grad = g.clone(), g.clone()
        oa.step(); ob.step()
        d = max([d] + [rel(a, b) for a, b in zip(pa, pb)] + [rel(oa.state[a][k], ob.state[b][k]) for a, b in zip(pa, pb) for k in ob.state[b]])
        if switch:
            oa.eval(); ob.eval()
            d = max([d] + [rel(a, b) for a, b in zip(pa, pb)])
    for a, b in zip(pa, pb):
        assert torch.isfinite(a).all() and set(oa.state[a]) == set(ob.state[b])
    if ref_kw is None:
        for ga, gb in zip(oa.param_groups, ob.param_groups): assert all(_same(ga[k], gb[k]) for k in CLOCK), (ga, gb)
        worst[name] = max(worst[name], d)
    return d

# the package's own tests (test_schedulefree.py), on the CPU: lr 0.3, warmup 5, decay 0.5; eval()/train() between steps
@pytest.mark.parametrize('name', PAIRS)
@pytest.mark.parametrize('foreach', [(False, False), (True, True), (None, False), (False, True)])
def test_package_tests_configuration(name, foreach):
    assert divergence(name, dict(lr=0.3, warmup_steps=5, weight_decay=0.5), steps=30, foreach=foreach, skip=0., scales=(1.,)) < TOL

@pytest.mark.parametrize('name', PAIRS)
def test_package_foreach_test_three_groups_one_without_grads_one_empty(name):
    ours, theirs = PAIRS[name]
    def run(cls, foreach):
        gen = torch.Generator().manual_seed(3)
        ws = [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in [(3, 2), (1, 1), (1, 2)]]
        opt = cls([{'params': ws[:2]}, {'params': [ws[2]]}, {'params': []}], lr=0.3, warmup_steps=5, weight_decay=0.5, foreach=foreach)
        for _ in range(25):
            opt.train()
            for w in ws[:2]: w.grad = torch.rand(w.shape, generator=gen, dtype=torch.float64)
            opt.step(); opt.eval()
        return ws, opt
    for fa, fb in itertools.product((False, True), repeat=2):
        (a, oa), (b, ob) = run(ours, fa), run(theirs, fb)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert [[g[k] for k in CLOCK] for g in oa.param_groups] == [[g[k] for k in CLOCK] for g in ob.param_groups]
        assert oa.state[a[2]] == {} and ob.state[b[2]] == {}

CONFIGS = {'AdamW': [{}, dict(lr=0.01, r=1., weight_lr_power=1.), dict(lr=torch.tensor(0.02), warmup_steps=3), dict(lr=0.01, betas=(0.95, 0.99), eps=1e-6, weight_lr_power=0.),
                     dict(lr=0.), dict(lr=0.05, weight_decay=0.1, warmup_steps=40)],
           'SGD': [{}, dict(lr=0.1), dict(lr=0.05, momentum=0.5, r=2.), dict(lr=torch.tensor(0.1), weight_decay=0.01), dict(lr=0.), dict(lr=0.2, warmup_steps=40, weight_lr_power=0.)]}
CASES = [(n, kw) for n, kws in CONFIGS.items() for kw in kws]

@pytest.mark.parametrize('name,kw', CASES, ids=[f'{n}-{i}' for n, kws in CONFIGS.items() for i in range(len(kws))])
def test_configurations_two_groups_skipped_grads_both_paths(name, kw):
    groups = ({}, {'lr': 0.05, 'weight_decay': 0.02}) if not isinstance(kw.get('lr'), torch.Tensor) else ({}, {})
    for foreach in itertools.product((False, True), repeat=2):
        assert divergence(name, kw, groups=groups, steps=30, foreach=foreach) < TOL

def config(name, rng):
    kw = dict(lr=10 ** rng.uniform(-3, -1) * (30 if name == 'SGD' else 1), weight_decay=rng.choice([0., 10 ** rng.uniform(-4, -1)]),
              warmup_steps=rng.choice([0, rng.randint(1, 20)]), r=rng.choice([0., rng.uniform(0, 2)]), weight_lr_power=rng.choice([2., 0., rng.uniform(0, 3)]))
    if name == 'AdamW': kw |= dict(betas=(rng.choice([0.9, rng.uniform(0.5, 0.99)]), rng.choice([0.999, rng.uniform(0.9, 0.9999)])), eps=rng.choice([1e-8, 1e-6]))
    else: kw |= dict(momentum=rng.choice([0.9, rng.uniform(0.05, 0.99)]))
    return kw

@pytest.mark.parametrize('name', PAIRS)
@pytest.mark.parametrize('seed', range(6))
def test_random_configs(name, seed):
    rng = random.Random(seed)
    kw = config(name, rng)
    n = rng.randint(1, 3)
    groups = tuple({k: v for k, v in config(name, rng).items() if rng.random() < 0.4} for _ in range(n))
    shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(n, 5))]
    d = divergence(name, kw, groups=groups, shapes=shapes, steps=rng.randint(25, 40), skip=rng.choice([0., 0.3]), seed=seed,
                   foreach=(rng.choice([None, True, False]), rng.choice([True, False])), scales=[10 ** rng.uniform(-3, 3) for _ in shapes])
    assert d < TOL, (kw, groups, d)

def test_worst_difference_is_reported():
    print(f"\nworst relative difference from schedulefree: AdamW {worst['AdamW']:.3e}, SGD {worst['SGD']:.3e}")
    assert max(worst.values()) < TOL

def test_the_check_can_fail():
    assert divergence('AdamW', dict(lr=0.01, warmup_steps=3), ref_kw=dict(lr=0.01, warmup_steps=3, weight_lr_power=1.), steps=5) > 1e-6  # weights differ only while the rate changes
    assert divergence('SGD', dict(lr=0.1, warmup_steps=3), ref_kw=dict(lr=0.1, warmup_steps=4), steps=5) > 1e-6

# --- the interface: mode, errors, clock, transforms ---

@pytest.mark.parametrize('name', PAIRS)
def test_step_needs_train_mode_and_the_mode_keys_are_the_packages(name):
    ours, theirs = PAIRS[name]
    p, q = nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(3))
    a, b = ours([p]), theirs([q])
    assert set(a.param_groups[0]) >= set(b.param_groups[0]) and all(_same(a.param_groups[0][k], b.param_groups[0][k]) for k in CLOCK)
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match='train mode.*optimizer.train'): a.step()
    with pytest.raises(Exception, match='train mode'): q.grad = torch.ones(3); b.step()
    a.add_param_group({'params': [nn.Parameter(torch.zeros(2))]})
    assert a.param_groups[1]['train_mode'] is False and a.param_groups[1]['k'] == 0

@pytest.mark.parametrize('name', PAIRS)
def test_defaults_are_the_packages(name):
    import inspect
    ours, theirs = PAIRS[name]
    o, t = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    assert [n for n in o if n not in ('more', 'foreach')] == [n for n in t if n != 'foreach']
    assert all(o[n].default == t[n].default for n in t if n != 'foreach')

BAD = {'AdamW': [('lr', -1.), ('betas', (0.9, 1.)), ('betas', (0., 0.999)), ('eps', -1.), ('weight_decay', -0.1), ('warmup_steps', -1),
                 ('warmup_steps', 2.5), ('r', -1.), ('weight_lr_power', -1.), ('foreach', 'yes')],
       'SGD': [('lr', -1.), ('momentum', 0.), ('momentum', 1.), ('weight_decay', -0.1), ('warmup_steps', -1), ('r', float('nan'))]}

@pytest.mark.parametrize('name,arg,value', [(n, a, v) for n, bad in BAD.items() for a, v in bad])
def test_bad_argument_raises_naming_itself(name, arg, value):
    cls = PAIRS[name][0]
    word = 'beta' if arg == 'betas' else arg
    with pytest.raises(ValueError, match=word): cls([nn.Parameter(torch.zeros(2))], **{arg: value})
    with pytest.raises(ValueError, match=word): cls([{'params': [nn.Parameter(torch.zeros(2))], arg: value}])

@pytest.mark.parametrize('name', PAIRS)
def test_kept_numbers_are_not_arguments(name):
    cls = PAIRS[name][0]
    for k in ('k', 'lr_max', 'weight_sum'):
        with pytest.raises(TypeError, match='keeps them itself'): cls([nn.Parameter(torch.zeros(2))], **{k: 1})
    with pytest.raises(TypeError, match='warmup'): cls([nn.Parameter(torch.zeros(2))], warmup=3)

@pytest.mark.parametrize('name', PAIRS)
def test_skip_nonfinite_leaves_the_clock_and_the_gradient_is_left_alone(name):
    cls = PAIRS[name][0]
    p = nn.Parameter(torch.randn(3, dtype=torch.float64))
    opt = cls([p], lr=0.1, warmup_steps=3, skip_nonfinite=True); opt.train()
    g = torch.randn(3, dtype=torch.float64); p.grad = g.clone(); opt.step()
    assert torch.equal(p.grad, g)
    clock, before, z = {k: opt.param_groups[0][k] for k in CLOCK}, p.detach().clone(), opt.state[p]['z'].clone()
    p.grad = torch.tensor([1., float('inf'), 0.], dtype=torch.float64); opt.step()
    assert {k: opt.param_groups[0][k] for k in CLOCK} == clock and torch.equal(p.detach(), before) and torch.equal(opt.state[p]['z'], z)
    assert opt.skipped_steps == 1

@pytest.mark.parametrize('name', PAIRS)
def test_max_grad_norm_is_torchs_clip_then_the_package(name):
    ours, theirs = PAIRS[name]
    PAIRS['_clip'] = (lambda g, **kw: ours(g, max_grad_norm=0.5, **kw), clipping_first(theirs, 0.5))
    try: assert divergence('_clip', dict(lr=0.05), ref_kw=dict(lr=0.05), steps=25) < TOL
    finally: del PAIRS['_clip']

# --- the ecosystem ---

def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()

def _batches(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 2, generator=g, dtype=torch.float64)) for _ in range(n)]

def _train(make, model=None, batches=None, scaler=None, compile=False):
    model = model or _model()
    opt = make(model.parameters()); opt.train()
    def step(x, y):
        opt.zero_grad(); loss = nn.functional.mse_loss(model(x), y)
        if scaler: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else: loss.backward(); opt.step()
    if compile: step = torch.compile(step, backend='eager')
    for x, y in batches or _batches(): step(x, y)
    opt.eval()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), opt

KW = {'AdamW': dict(lr=0.02, warmup_steps=5, weight_decay=0.01), 'SGD': dict(lr=0.2, warmup_steps=5, weight_decay=0.01)}
def makers(name): return (lambda ps: PAIRS[name][0](ps, **KW[name])), (lambda ps: PAIRS[name][1](ps, **KW[name]))
def _close(a, b): torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)

@pytest.mark.parametrize('name', PAIRS)
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_state_dict_moved_mid_run_both_ways(name, mode):
    "A checkpoint (taken in eval mode, as the package advises, or in train mode) continues in the other library"
    ours, ref = makers(name)
    full = _train(ref)[0]
    bs = _batches()
    for first, second in ((ref, ours), (ours, ref), (ours, ours)):
        model = _model(); _, o1 = _train(first, model=model, batches=bs[:10])
        if mode == 'train': o1.train()
        buf = io.BytesIO(); torch.save({'model': model.state_dict(), 'opt': o1.state_dict()}, buf); buf.seek(0)
        ck = torch.load(buf)
        m2 = _model(5); m2.load_state_dict(ck['model'])
        o2 = second(m2.parameters()); o2.load_state_dict(ck['opt'])
        assert o2.param_groups[0]['train_mode'] == (mode == 'train') and o2.param_groups[0]['k'] == 10
        o2.train()
        for x, y in bs[10:]:
            o2.zero_grad(); nn.functional.mse_loss(m2(x), y).backward(); o2.step()
        o2.eval()
        _close(torch.cat([p.detach().flatten() for p in m2.parameters()]), full)

@pytest.mark.parametrize('name', PAIRS)
def test_pickle_and_deepcopy(name):
    ours, _ = makers(name)
    model = _model(); opt = ours(model.parameters()); opt.train()
    model(torch.randn(3, 6, dtype=torch.float64)).sum().backward(); opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(clone) is type(opt) and clone.param_groups[0]['k'] == 1
        for q in clone.param_groups[0]['params']: q.grad = torch.ones_like(q)
        clone.step(); clone.eval()
    for p in model.parameters(): p.grad = torch.ones_like(p)
    opt.step(); opt.eval()
    _close([q.detach() for q in clone.param_groups[0]['params']], [p.detach() for p in model.parameters()])

@pytest.mark.parametrize('name', PAIRS)
def test_grad_scaler(name):
    ours, ref = makers(name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a = _train(ours, scaler=torch.amp.GradScaler('cpu', init_scale=2.**8))[0]
    _close(a, _train(ref)[0])

@pytest.mark.parametrize('name', PAIRS)
def test_torch_compile_training_step(name):
    ours, ref = makers(name)
    torch._dynamo.reset()
    _close(_train(ours, compile=True)[0], _train(ref)[0])

@pytest.mark.parametrize('name,warmup', [('AdamW', 0), ('SGD', 0), ('AdamW', 3)])
def test_compile_recipe_with_a_tensor_lr(name, warmup):
    "torch.compile around opt.step() with a Tensor lr: eager's and the package's numbers; no recompile from the third call on, or once the warmup's branch is over"
    from torch._dynamo.testing import CompileCounter
    def run(cls, compiled):
        torch._dynamo.reset()
        model = _model(); ps = list(model.parameters())
        opt = cls(ps, lr=torch.tensor(0.02), warmup_steps=warmup); opt.train()
        counter = CompileCounter()
        step, frames = (torch.compile(opt.step, backend=counter) if compiled else opt.step), []
        gen = torch.Generator().manual_seed(0)
        for _ in range(7):
            for p in ps: p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            step(); frames.append(counter.frame_count)
        opt.eval()
        return torch.cat([p.detach().flatten() for p in ps]), frames
    ours, ref = PAIRS[name]
    a, frames = run(ours, True)
    _close(a, run(ours, False)[0]); _close(a, run(ref, False)[0])
    assert len(set(frames[warmup + 1:])) == 1, frames  # the package's step runs eager under compile (no graph): ours compiles

@pytest.mark.parametrize('name', PAIRS)
def test_help_shows_the_rule_and_the_arguments(name):
    doc = PAIRS[name][0].__doc__
    for word in ('Defazio', 'sf_anchor', 'l2_decay', 'warmup_steps', 'weight_lr_power', 'r='):
        assert word in doc, word

def test_cuda_equals_the_package():
    if not torch.cuda.is_available(): pytest.skip('no CUDA here')
    for name in PAIRS:
        ours, theirs = PAIRS[name]
        ps = [nn.Parameter(torch.randn(4, 3, device='cuda', dtype=torch.float64)) for _ in range(2)]
        qs = [nn.Parameter(p.detach().clone()) for p in ps]
        a, b = ours(ps, **KW[name]), theirs(qs, **KW[name]); a.train(); b.train()
        for _ in range(25):
            for p, q in zip(ps, qs): p.grad = torch.randn_like(p); q.grad = p.grad.clone()
            a.step(); b.step()
        for p, q in zip(ps, qs): _close(p, q)

# --- batch norm ---

def test_recompute_bn_stats_is_the_average_over_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2, momentum=0.3)).double().eval()
    xs = [torch.randn(8, 3, dtype=torch.float64) for _ in range(5)]
    with torch.no_grad():  # by hand: each layer's input per batch, its mean and unbiased variance, averaged over the batches
        h = [model[0](x) for x in xs]
        mean1, var1 = torch.stack([t.mean(0) for t in h]).mean(0), torch.stack([t.var(0) for t in h]).mean(0)
    recompute_bn_stats(model, [(x, None) for x in xs])
    torch.testing.assert_close(model[1].running_mean, mean1); torch.testing.assert_close(model[1].running_var, var1)
    assert model[1].momentum == 0.1 and model[4].momentum == 0.3 and not model.training and model[1].num_batches_tracked == 5
    plain = nn.Linear(2, 2)
    assert recompute_bn_stats(plain, []) is plain

def test_top_level_api():
    assert optbook.AdamWScheduleFree is AdamWScheduleFree and optbook.SGDScheduleFree is SGDScheduleFree and optbook.recompute_bn_stats is recompute_bn_stats

def test_experiment_callbacks_switch_modes_and_score_each_fraction():
    from types import SimpleNamespace
    from optbook.experiments import _ScheduleFreeModes, _AccuracyAt
    assert _AccuracyAt(20).at == {5: 0.25, 10: 0.5, 15: 0.75, 20: 1.} and _AccuracyAt(4).at == {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.}
    p = nn.Parameter(torch.ones(2)); opt = AdamWScheduleFree([p])
    cb = _ScheduleFreeModes(); cb.learn = SimpleNamespace(opt=opt)
    cb.before_train(); assert opt.param_groups[0]['train_mode']
    p.grad = torch.ones(2); opt.step()
    cb.before_validate(); assert not opt.param_groups[0]['train_mode']
