"Clipping against its references over random configurations: torch.nn.utils' clip_grad_norm_/clip_grad_value_/get_total_norm and timm's adaptive_clip_grad, in float64 to 1e-12."
import math, random, warnings
import pytest, torch
from torch import nn
from optbook import clip_grad_norm_, clip_grad_value_, get_total_norm, clip_grads_with_norm_, adaptive_clip_grad_, unitwise_norm

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
WORST = {}  # the largest relative difference seen per check, printed by test_report_worst

def _record(key, a, b):
    d = ((a - b).abs() / b.abs().clamp(min=1e-300)).max().item() if a.numel() else 0.
    WORST[key] = max(WORST.get(key, 0.), d)

def _problem(rng, device='cpu', dtypes=(torch.float64,)):
    "Random shapes (scalars included), gradient scales over 10 decades, some None gradients; the same tensors twice"
    n = rng.randint(1, 6)
    shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(0, 3))) for _ in range(n)]
    seed = rng.randrange(2**31)
    def make():
        gen = torch.Generator().manual_seed(seed)
        ps = []
        for i, s in enumerate(shapes):
            dtype = dtypes[i % len(dtypes)]
            p = nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype))
            g = torch.randn(s, generator=gen, dtype=torch.float64) * 10 ** ((i * 7919 + seed) % 11 - 6)
            if (seed >> i) % 5 != 0: p.grad = g.to(device, dtype)
            ps.append(p)
        return ps
    return make

def _norm_type(rng): return rng.choice([1., 2., math.inf, 'inf', rng.uniform(0.5, 6.)])

@pytest.mark.parametrize('seed', range(60))
def test_clip_grad_norm_equals_torch(seed):
    rng = random.Random(seed)
    make, norm_type, max_norm = _problem(rng), _norm_type(rng), 10 ** rng.uniform(-6, 3)
    for ours_fe in (None, False, True):
        theirs_fe = rng.choice([None, False, True])
        a, b = make(), make()
        na = clip_grad_norm_(a, max_norm, norm_type, foreach=ours_fe)
        nb = torch.nn.utils.clip_grad_norm_(b, max_norm, norm_type, foreach=theirs_fe)
        torch.testing.assert_close(na, nb, rtol=1e-12, atol=0); _record('clip_grad_norm_ norm', na, nb)
        for pa, pb in zip(a, b):
            assert (pa.grad is None) == (pb.grad is None)
            if pa.grad is not None:
                torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-12, atol=0); _record('clip_grad_norm_ grads', pa.grad, pb.grad)

@pytest.mark.parametrize('seed', range(30))
def test_total_norm_and_clip_with_norm_equal_torch(seed):
    rng = random.Random(1000 + seed)
    make, norm_type = _problem(rng), _norm_type(rng)
    a, b = make(), make()
    ga, gb = [p.grad for p in a if p.grad is not None], [p.grad for p in b if p.grad is not None]
    na, nb = get_total_norm(ga, norm_type), torch.nn.utils.get_total_norm(gb, norm_type)
    torch.testing.assert_close(na, nb, rtol=1e-12, atol=0)
    clip_grads_with_norm_(a, 1e-3, na); torch.nn.utils.clip_grads_with_norm_(b, 1e-3, nb)
    for pa, pb in zip(a, b): assert pa.grad is None or torch.equal(pa.grad, pb.grad)

ULP = {torch.float32: 2. ** -23, torch.float64: 2. ** -52}
RTOL = {torch.float32: 2 * ULP[torch.float32], torch.float64: 1e-12}  # float32 gradients: two ulps; float64: the 1e-12 of every check

@pytest.mark.parametrize('seed', range(20))
def test_mixed_float32_float64(seed):
    "A float32 and a float64 group: torch's grouping may visit them in another order (a C++ hash map), so the total can differ in its last bit and a float32 gradient by one ulp"
    rng = random.Random(2000 + seed)
    make, norm_type = _problem(rng, dtypes=(torch.float32, torch.float64)), _norm_type(rng)
    for fe in (None, False, True):
        a, b = make(), make()
        na, nb = clip_grad_norm_(a, 0.01, norm_type, foreach=fe), torch.nn.utils.clip_grad_norm_(b, 0.01, norm_type, foreach=fe)
        assert na.dtype == nb.dtype
        torch.testing.assert_close(na, nb, rtol=RTOL[na.dtype], atol=0)
        for pa, pb in zip(a, b):
            if pa.grad is not None:
                assert pa.grad.dtype == pb.grad.dtype
                torch.testing.assert_close(pa.grad, pb.grad, rtol=RTOL[pa.dtype], atol=0)

@pytest.mark.parametrize('seed', range(30))
def test_clip_grad_value_equals_torch(seed):
    rng = random.Random(3000 + seed)
    make, clip_value = _problem(rng, dtypes=rng.choice([(torch.float64,), (torch.float32, torch.float64)])), 10 ** rng.uniform(-7, 1)
    for fe in (None, False, True):
        a, b = make(), make()
        clip_grad_value_(a, clip_value, foreach=fe); torch.nn.utils.clip_grad_value_(b, clip_value, foreach=rng.choice([None, False, True]))
        for pa, pb in zip(a, b): assert pa.grad is None or torch.equal(pa.grad, pb.grad)

def test_single_tensor_and_named_parameters():
    torch.manual_seed(0)
    m1, m2 = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    m2.load_state_dict(m1.state_dict())
    for m in (m1, m2): m(torch.ones(2, 4, dtype=torch.float64)).pow(2).sum().backward()
    assert torch.equal(clip_grad_norm_(m1.named_parameters(), 0.5), torch.nn.utils.clip_grad_norm_(m2.parameters(), 0.5))
    assert torch.equal(m1.weight.grad, m2.weight.grad) and torch.equal(m1.bias.grad, m2.bias.grad)
    assert torch.equal(clip_grad_norm_(m1.weight, 0.1), torch.nn.utils.clip_grad_norm_(m2.weight, 0.1))  # one tensor
    assert torch.equal(m1.weight.grad, m2.weight.grad)

def test_torch_errors_and_warnings_reproduced():
    p, q = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    for bad in (math.nan, math.inf):
        p.grad, q.grad = torch.tensor([1., bad, 1.]), torch.tensor([1., bad, 1.])
        with pytest.raises(RuntimeError, match='non-finite') as ours: clip_grad_norm_([p], 1., error_if_nonfinite=True)
        with pytest.raises(RuntimeError, match='non-finite'): torch.nn.utils.clip_grad_norm_([q], 1., error_if_nonfinite=True)
        assert 'parameter 0 (shape (3,)) holds ' + ('NaN' if bad != bad else 'inf') in str(ours.value)
        # without the flag both scale by the non-finite norm
        na, nb = clip_grad_norm_([p], 1.), torch.nn.utils.clip_grad_norm_([q], 1.)
        assert torch.equal(na.isnan(), nb.isnan()) and torch.equal(p.grad.isnan(), q.grad.isnan())
    meta = nn.Parameter(torch.ones(2, device='meta')); meta.grad = torch.ones(2, device='meta')
    for fn in (clip_grad_norm_, torch.nn.utils.clip_grad_norm_):
        with pytest.raises(RuntimeError, match="foreach=True was passed, but can't use the foreach API on meta tensors"): fn([meta], 1., foreach=True)
    for fn in (clip_grad_value_, torch.nn.utils.clip_grad_value_):
        with pytest.raises(RuntimeError, match="can't use the foreach API on meta tensors"): fn([meta], 1., foreach=True)
    assert clip_grad_norm_([meta], 1.).device.type == 'meta'  # foreach=None falls back to the loop there, as torch does
    for fn in (clip_grad_norm_, torch.nn.utils.clip_grad_norm_):
        with pytest.warns(UserWarning, match='empty generator'): n = fn((x for x in []), 1.)
        assert n.item() == 0.
    assert clip_grad_norm_([nn.Parameter(torch.ones(2))], 1.).item() == 0.  # no gradients at all

def test_our_argument_errors():
    p = nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
    for kw, word in [(dict(max_norm=-1.), 'max_norm'), (dict(max_norm=math.nan), 'max_norm'), (dict(max_norm=1., norm_type=0), 'norm_type'),
                     (dict(max_norm=1., norm_type='fro'), 'norm_type'), (dict(max_norm=1., foreach=1), 'foreach')]:
        with pytest.raises(ValueError, match=word): clip_grad_norm_([p], **kw)
    with pytest.raises(ValueError, match='clip_value'): clip_grad_value_([p], -0.1)
    with pytest.raises(TypeError, match='item 0'): clip_grad_norm_([1., 2.], 1.)
    assert torch.equal(p.grad, torch.ones(2))  # nothing was touched

def test_nonfinite_message_names_the_culprits():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    for p in m.parameters(): p.grad = torch.ones_like(p)
    m[1].bias.grad[0] = math.inf
    m[0].weight.grad[1, 1] = math.nan
    with pytest.raises(RuntimeError) as e: clip_grad_norm_(m.named_parameters(), 1., error_if_nonfinite=True)
    msg = str(e.value)
    assert '0.weight holds NaN' in msg and '1.bias holds inf' in msg and '0.bias' not in msg and '1.weight' not in msg
    m[0].weight.grad[1, 1] = 1.; m[1].bias.grad[0] = 1.
    big = [torch.full((2,), 3e38), torch.full((2,), 3e38)]  # each norm overflows float32
    with pytest.raises(RuntimeError, match='overflows torch.float32'): get_total_norm(big, error_if_nonfinite=True)
    big = [torch.full((1,), 2e38), torch.full((1,), 2e38)]  # each norm is finite, their total is not
    with pytest.raises(RuntimeError, match='each norm is finite but their total overflows'): get_total_norm(big, error_if_nonfinite=True)

def _agc_model(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.Linear(6, 2, bias=False)).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m[3].bias.zero_()  # a bias at zero: measured against eps
    for p in m.parameters():
        unit_scale = 10 ** torch.empty(p.shape[0], dtype=torch.float64).uniform_(-5, 1, generator=gen)
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * unit_scale.reshape(-1, *[1] * (p.ndim - 1))
    return m

@pytest.mark.parametrize('seed', range(20))
def test_agc_equals_timm(seed):
    from timm.utils.agc import adaptive_clip_grad
    rng = random.Random(4000 + seed)
    kw = dict(clip_factor=10 ** rng.uniform(-3, 0), eps=rng.choice([1e-3, 1e-6, 0.1]), norm_type=rng.choice([1., 2., math.inf, 3.]))
    a, b = _agc_model(seed), _agc_model(seed)
    adaptive_clip_grad_(a.parameters(), **kw); adaptive_clip_grad(b.parameters(), **kw)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-12, atol=0); _record('adaptive_clip_grad_', pa.grad, pb.grad)

def test_agc_bounds_the_unit_ratio():
    "After AGC every unit's gradient norm is at most clip_factor * max(weight norm, eps), up to rounding"
    m = _agc_model(0)
    adaptive_clip_grad_(m.parameters(), 0.05)
    for p in m.parameters():
        assert (unitwise_norm(p.grad) <= 0.05 * unitwise_norm(p).clamp(min=1e-3) * (1 + 1e-12)).all()

@CUDA
def test_cuda_matches_torch():
    rng = random.Random(7)
    for _ in range(10):
        make, norm_type = _problem(rng, device='cuda', dtypes=(torch.float32, torch.float64)), _norm_type(rng)
        for fe in (None, False, True):
            a, b = make(), make()
            na, nb = clip_grad_norm_(a, 0.01, norm_type, foreach=fe), torch.nn.utils.clip_grad_norm_(b, 0.01, norm_type, foreach=fe)
            assert na.device.type == 'cuda' and na.dtype == nb.dtype
            torch.testing.assert_close(na, nb, rtol=RTOL[na.dtype], atol=0)
            for pa, pb in zip(a, b): assert pa.grad is None or torch.allclose(pa.grad, pb.grad, rtol=RTOL[pa.dtype], atol=0)
            clip_grad_value_(a, 1e-4, foreach=fe); torch.nn.utils.clip_grad_value_(b, 1e-4, foreach=fe)
            for pa, pb in zip(a, b): assert pa.grad is None or torch.equal(pa.grad, pb.grad)

# ---------------------------------------------------------------- clipping inside the optimizer
from optbook import clipped, GradStats, decoupled

TORCH_OPTS = [(torch.optim.SGD, dict(lr=0.1, momentum=0.9)), (torch.optim.Adam, dict(lr=1e-2)), (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
              (torch.optim.RMSprop, dict(lr=1e-3, centered=True)), (torch.optim.Adagrad, dict(lr=0.1)),
              (torch.optim.NAdam, dict(lr=1e-2)), (decoupled(torch.optim.Adam), dict(lr=1e-2, weight_decay=0.1))]

def _grads_stream(ps, seed, steps, scales):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield [torch.randn(p.shape, generator=gen, dtype=p.dtype) * s for p, s in zip(ps, scales)]

@pytest.mark.parametrize('case', range(len(TORCH_OPTS)))
@pytest.mark.parametrize('seed', range(3))
def test_clipped_equals_manual_clip_then_step(case, seed):
    "clipped(cls)(..., max_grad_norm=c).step() == clip_grad_norm_(all params, c); cls.step(), over groups, None grads and foreach settings"
    cls, kw = TORCH_OPTS[case]
    rng = random.Random(seed)
    shapes = [(3, 2), (), (4,), (2, 2, 2)]
    scales = [10 ** rng.uniform(-3, 2) for _ in shapes]
    c = 10 ** rng.uniform(-2, 1)
    torch.manual_seed(seed)
    init = [torch.randn(s, dtype=torch.float64) for s in shapes]
    a, b = [nn.Parameter(t.clone()) for t in init], [nn.Parameter(t.clone()) for t in init]
    groups = lambda ps: [{'params': ps[:2]}, {'params': ps[2:], 'lr': kw['lr'] / 3}]
    oa, ob = clipped(cls)(groups(a), max_grad_norm=c, **kw), cls(groups(b), **kw)
    for i, gs in enumerate(_grads_stream(a, seed, 25, scales)):
        for pa, pb, g in zip(a, b, gs):
            drop = (i + shapes.index(tuple(pa.shape))) % 7 == 0
            pa.grad = None if drop else g.clone(); pb.grad = None if drop else g.clone()
        oa.step()
        norm = clip_grad_norm_([p for p in b if p.grad is not None], c)
        ob.step()
        torch.testing.assert_close(oa.grad_norm, norm, rtol=1e-12, atol=0)
    for pa, pb in zip(a, b): torch.testing.assert_close(pa, pb, rtol=1e-12, atol=0); _record('clipped optimizer', pa.detach(), pb.detach())

def test_clipped_under_gradscaler_equals_unscale_clip_step_also_fused():
    "For a fused AdamW (which unscales inside its own step) the in-optimizer clip still sees unscaled gradients"
    for fused in (False, True):
        models, opts, scalers = [], [], []
        for which in ('inside', 'manual'):
            torch.manual_seed(0)
            m = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
            cls = clipped(torch.optim.AdamW) if which == 'inside' else torch.optim.AdamW
            extra = dict(max_grad_norm=0.5) if which == 'inside' else {}
            models.append(m); opts.append(cls(m.parameters(), lr=1e-2, fused=fused, **extra)); scalers.append(torch.amp.GradScaler('cpu', init_scale=2. ** 10))
        gen = torch.Generator().manual_seed(1)
        for i in range(40):
            x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 1, generator=gen)
            for which, m, opt, sc in zip(('inside', 'manual'), models, opts, scalers):
                sc.scale(nn.functional.mse_loss(m(x), y)).backward()
                if i == 15: m[0].bias.grad[0] = math.inf
                if which == 'manual': sc.unscale_(opt); torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
                sc.step(opt); sc.update(); opt.zero_grad()
        for pa, pb in zip(*(m.parameters() for m in models)): torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
        assert scalers[0].get_scale() == scalers[1].get_scale() < 2. ** 10  # the inf step was seen and skipped by both

def test_clipped_skip_nonfinite_mid_run_keeps_training():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    opt = clipped(torch.optim.Adam)(m.parameters(), lr=1e-2, max_grad_norm=1., skip_nonfinite=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen, dtype=torch.float64); y = x.sum(1, keepdim=True).sin()
    losses = []
    for i in range(200):
        loss = nn.functional.mse_loss(m(x), y); loss.backward()
        if i in (50, 51, 120): next(m.parameters()).grad[0, 0] = math.nan if i != 120 else -math.inf
        before = [p.detach().clone() for p in m.parameters()]
        opt.step(); opt.zero_grad(); losses.append(loss.item())
        if i in (50, 51, 120): assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert opt.skipped_steps == 3 and all(torch.isfinite(p).all() for p in m.parameters())
    assert all(torch.isfinite(v).all() for s in opt.state.values() for v in s.values())
    assert losses[-1] < 0.2 * losses[0] and opt.state[next(m.parameters())]['step'] == 197

def test_clipped_errors_and_no_clip_is_the_class():
    with pytest.raises(ValueError, match='opt_class'): clipped(nn.Linear)
    with pytest.raises(ValueError, match='opt_class'): clipped(torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.))
    p = nn.Parameter(torch.ones(2))
    for bad in (0., -1., math.nan, 'x'):
        with pytest.raises(ValueError, match='max_grad_norm'): clipped(torch.optim.SGD)([p], lr=1., max_grad_norm=bad)
    with pytest.raises(ValueError, match='skip_nonfinite'): clipped(torch.optim.SGD)([p], lr=1., skip_nonfinite=1)
    with pytest.raises(TypeError): clipped(torch.optim.SGD)([p], lr=1., max_grad_nrm=1.)  # a typo is an error, not swallowed
    o = clipped(torch.optim.SGD)([p], lr=1.)
    with pytest.raises(ValueError, match='max_grad_norm'): o.add_param_group({'params': [nn.Parameter(torch.ones(1))], 'max_grad_norm': -2.})
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    oa, ob = clipped(torch.optim.Adam)([a], lr=0.1), torch.optim.Adam([b], lr=0.1)
    for _ in range(5):
        a.grad = torch.full((3,), 100.); b.grad = torch.full((3,), 100.); oa.step(); ob.step()
    assert torch.equal(a, b) and oa.grad_norm is None  # no max_grad_norm: the class itself, and nothing is computed

def test_clipped_pickle_state_dict_and_hooks():
    import pickle
    p = nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
    o = clipped(torch.optim.SGD)([p], lr=0.1, momentum=0.9, max_grad_norm=0.5, skip_nonfinite=True)
    calls = []
    o.register_step_pre_hook(lambda *_: calls.append('pre')); o.register_step_post_hook(lambda *_: calls.append('post'))
    o.step()
    assert calls == ['pre', 'post']  # torch's hooks run once per step, not twice
    o2 = pickle.loads(pickle.dumps(o))
    assert type(o2).__name__ == 'ClippedSGD' and o2.param_groups[0]['max_grad_norm'] == 0.5 and o2.skipped_steps == 0
    sd = o.state_dict(); assert sd['param_groups'][0]['max_grad_norm'] == 0.5 and sd['skipped_steps'] == 0
    t = torch.optim.SGD([p], lr=0.1, momentum=0.9); t.load_state_dict(sd)  # torch ignores what it does not know
    assert torch.equal(t.state[p]['momentum_buffer'], o.state[p]['momentum_buffer'])

def test_gradstats_records_without_item_calls(monkeypatch):
    "The callback reads no number back during training: Tensor.item is never called between before_fit and after_fit"
    from optbook import Learner, tensor_dls
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    stats = GradStats(max_norm=0.1)
    learn = Learner(nn.Linear(3, 1), tensor_dls(x, y, x, y, bs=16), loss_func=nn.functional.mse_loss, opt_func=torch.optim.SGD, lr=0.1,
                    metrics=(), cbs=[stats], progress=False, device='cpu')
    learn.fit(0)
    learn.create_opt(); stats.learn = learn; stats.before_fit()
    calls = []
    real_item = torch.Tensor.item
    batches = list(learn.dls.train)  # the DataLoader draws its seed with .item()
    monkeypatch.setattr(torch.Tensor, 'item', lambda self: calls.append(1) or real_item(self))
    for xb, yb in batches:
        nn.functional.mse_loss(learn.model(xb), yb).backward()
        stats.after_backward(); learn.opt.step(); stats.after_step(); learn.opt.zero_grad()
    monkeypatch.undo()
    stats.after_fit()
    assert calls == [] and len(stats.global_norm) == 4 and stats.update_ratio.shape == (4, 2)

# ---------------------------------------------------------------- every optimizer of the book takes max_grad_norm and skip_nonfinite
import inspect
import optbook
BOOK_OPTS = {name: cls for name, cls in vars(optbook).items() if inspect.isclass(cls) and issubclass(cls, optbook.Optimizer) and cls is not optbook.Optimizer}
BOOK_KW = {'SGD': dict(lr=0.1, momentum=0.9), 'SGDW': dict(lr=0.1, momentum=0.9, weight_decay=1e-2), 'Adam': dict(lr=1e-2), 'AdamW': dict(lr=1e-2),
           'RMSprop': dict(lr=1e-3), 'RMSpropW': dict(lr=1e-3, weight_decay=1e-2), 'RAdam': dict(lr=1e-2), 'LARS': dict(lr=0.1),
           'Lion': dict(lr=1e-3, weight_decay=1e-1), 'Adafactor': dict(lr=1e-2)}
# chapter 13's classes that are no drop-in (Muon takes matrices only, schedule-free steps in train mode): their clip is
# tested against clip_grad_norm_ in their own files, on inputs they accept
OWN_CLIP_TESTS = {'Muon': 'tests/test_muon.py', 'AdamWScheduleFree': 'tests/test_schedule_free.py', 'SGDScheduleFree': 'tests/test_schedule_free.py'}

OWN_CLIP = {'LAMB'}  # brings its own `max_grad_norm` transform (timm's formula, default 1.0), tested in test_lars.py

def test_every_named_optimizer_is_covered():
    assert {'SGD', 'Adam', 'AdamW', 'RMSprop', 'RAdam', 'SGDW', 'RMSpropW'} <= set(BOOK_OPTS)
    missing = sorted(set(BOOK_OPTS) - set(BOOK_KW) - OWN_CLIP - set(OWN_CLIP_TESTS))
    assert {n for n in OWN_CLIP_TESTS if n in BOOK_OPTS} == {n for n, c in BOOK_OPTS.items() if not getattr(c, 'drop_in', True)}
    assert not missing, f"add keywords for {missing} to BOOK_KW"

NO_MORE = {}  # every class of the book forwards the transforms' keywords
NAMES = [pytest.param(n, marks=pytest.mark.xfail(reason=NO_MORE[n], raises=TypeError, strict=True)) if n in NO_MORE else n for n in sorted(BOOK_KW)]

@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('foreach', [False, True])
def test_book_optimizer_max_grad_norm_equals_manual_clip(name, foreach):
    "cls(..., max_grad_norm=c) == clip_grad_norm_(params, c) then cls(...) without it; over two groups, None gradients, both paths"
    if name not in BOOK_OPTS: pytest.skip(f'{name} is not in this version of the book')
    cls, kw = BOOK_OPTS[name], BOOK_KW[name]
    rng = random.Random(hash(name) % 1000)
    c = 10 ** rng.uniform(-2, 0)
    torch.manual_seed(0)
    shapes = [(3, 2), (), (4,), (2, 2, 2)]
    init = [torch.randn(s, dtype=torch.float64) for s in shapes]
    a, b = [nn.Parameter(t.clone()) for t in init], [nn.Parameter(t.clone()) for t in init]
    groups = lambda ps: [{'params': ps[:2]}, {'params': ps[2:], 'lr': kw['lr'] / 2}]
    oa, ob = cls(groups(a), max_grad_norm=c, foreach=foreach, **kw), cls(groups(b), foreach=foreach, **kw)
    for i, gs in enumerate(_grads_stream(a, 1, 25, [1., 10., 0.1, 3.])):
        for j, (pa, pb, g) in enumerate(zip(a, b, gs)):
            drop = (i + j) % 6 == 0
            pa.grad = None if drop else g.clone(); pb.grad = None if drop else g.clone()
        oa.step()
        n = clip_grad_norm_(b, c)
        ob.step()
        assert torch.equal(oa.grad_norm, n)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=0); _record('book optimizer max_grad_norm', pa.detach(), pb.detach())
    assert all(g['max_grad_norm'] == c for g in oa.state_dict()['param_groups'])

@pytest.mark.parametrize('name', ['SGD', 'Adam', 'RAdam'])
def test_book_optimizer_skip_nonfinite(name):
    "NaN and inf injected mid-run: those steps leave weights and state alone, the count is right, training continues, checkpoints keep the count"
    import pickle
    cls, kw = BOOK_OPTS[name], BOOK_KW[name]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    opt = cls(m.parameters(), skip_nonfinite=True, max_grad_norm=1., **kw)
    x = torch.randn(64, 4, dtype=torch.float64); y = x.sum(1, keepdim=True).sin()
    losses = []
    for i in range(150):
        loss = nn.functional.mse_loss(m(x), y); loss.backward()
        if i in (40, 41, 90): m[2].weight.grad[0, i % 8] = math.nan if i != 90 else math.inf
        before = [p.detach().clone() for p in m.parameters()]
        state_before = {(id(p), k): v.clone() for p, s in opt.state.items() for k, v in s.items() if torch.is_tensor(v)}
        opt.step(); opt.zero_grad(); losses.append(loss.item())
        if i in (40, 41, 90):
            assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
            assert all(torch.equal(state_before[id(p), k], v) for p, s in opt.state.items() for k, v in s.items() if (id(p), k) in state_before)
    assert opt.skipped_steps == 3 and all(torch.isfinite(p).all() for p in m.parameters()) and losses[-1] < 0.8 * losses[0]  # it keeps training
    sd = opt.state_dict(); assert sd['skipped_steps'] == 3
    fresh = cls(m.parameters(), skip_nonfinite=True, max_grad_norm=1., **kw); fresh.load_state_dict(sd)
    assert fresh.skipped_steps == 3 and pickle.loads(pickle.dumps(opt)).param_groups[0]['skip_nonfinite'] is True
    t = {'SGD': torch.optim.SGD, 'Adam': torch.optim.Adam, 'RAdam': torch.optim.RAdam}[name](m.parameters(), **kw)
    t.load_state_dict(sd)  # torch ignores the count and our keys

def test_book_optimizer_transform_errors():
    p = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match='max_grad_norm'): optbook.SGD([p], lr=0.1, max_grad_norm=0.)
    with pytest.raises(ValueError, match='skip_nonfinite'): optbook.Adam([p], skip_nonfinite='yes')
    with pytest.raises(ValueError, match='max_grad_norm'):
        optbook.Adam([{'params': [p]}, {'params': [nn.Parameter(torch.ones(1))], 'max_grad_norm': 2.}], max_grad_norm=1.)
    with pytest.raises(ValueError, match='already'): clipped(optbook.AdamW)
    o = optbook.SGD([p], lr=0.1)
    assert o.param_groups[0]['max_grad_norm'] is None and o.grad_norm is None and o.skipped_steps == 0
    assert [t.__name__ for t in o.transforms].count('global_norm_clip') == 1 and [t.__name__ for t in o.transforms].count('nonfinite_skip') == 1

def test_book_clip_equals_clipped_torch_under_gradscaler():
    "optbook.SGD(max_grad_norm=c) under GradScaler == clipped(torch.optim.SGD) under GradScaler == unscale_, clip, step"
    # optbook on the foreach path: the same operations as torch.optim.SGD's default, so bitwise equal (its default is the fused kernel, chapter 11)
    models, opts, scalers = [], [], []
    for make in (lambda ps: optbook.SGD(ps, lr=0.1, momentum=0.9, max_grad_norm=0.5, foreach=True), lambda ps: clipped(torch.optim.SGD)(ps, lr=0.1, momentum=0.9, max_grad_norm=0.5),
                 lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
        models.append(m); opts.append(make(m.parameters())); scalers.append(torch.amp.GradScaler('cpu'))
    gen = torch.Generator().manual_seed(2)
    for i in range(40):
        x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 1, generator=gen)
        for k, (m, opt, sc) in enumerate(zip(models, opts, scalers)):
            sc.scale(nn.functional.mse_loss(m(x), y)).backward()
            if i == 7: m[2].bias.grad[0] = math.nan
            if k == 2: sc.unscale_(opt); torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            sc.step(opt); sc.update(); opt.zero_grad()
    for ps in zip(*(m.parameters() for m in models)): assert torch.equal(ps[0], ps[1]) and torch.equal(ps[1], ps[2])

def test_an_optimizer_with_its_own_clip_keeps_it():
    "LAMB reads `max_grad_norm` in its own transform: the book's global clip steps aside, so the gradients are clipped once"
    if 'LAMB' not in BOOK_OPTS: pytest.skip('no LAMB in this version of the book')
    p = nn.Parameter(torch.ones(2, dtype=torch.float64)); p.grad = torch.tensor([3., 4.], dtype=torch.float64)
    opt = BOOK_OPTS['LAMB']([p], lr=0.1, max_grad_norm=1.)
    seen, read = [], []
    opt.register_step_post_hook(lambda o, *_: seen.append(o.grad_norm))
    from optbook.core import Stepper
    first = opt.steppers[0]  # a spy on the first stepper: the gradient the step reads (LAMB gives the user's back afterwards, as timm)
    spy = Stepper(lambda q, g, s, **kw: (read.append(g.clone()), first(q, g, s, **kw))[1], first.hypers)
    spy.foreach(lambda qs, gs, ss, **kw: (read.append(gs[0].clone()), first.foreach_fn(qs, gs, ss, **kw))[1])
    opt.steppers[0] = spy
    opt.step()
    assert seen == [None] and [t.__name__ for t in opt.transforms].count('global_norm_clip') == 1
    assert torch.equal(read[0], torch.tensor([3., 4.], dtype=torch.float64) / 5.)  # timm's division by ||G||/c alone; ours first would give (3, 4) / (5 + 1e-6)
    assert torch.equal(p.grad, torch.tensor([3., 4.], dtype=torch.float64))

def test_report_worst():
    "Runs last in this file: prints the worst relative differences (pytest -s shows them)"
    print({k: f'{v:.1e}' for k, v in WORST.items()})
    assert all(v <= 1e-12 for v in WORST.values())
