"optbook.LARS (and LAMB) against timm's Lars and Lamb in float64; both paths; schedulers, GradScaler, checkpoints, pickling, Lightning."
import copy, io, itertools, pickle, random, warnings
import pytest, torch
from torch import nn
import optbook
from optbook import LARS, max_divergence
from optbook.lars import lars_adapt

timm_optim = pytest.importorskip('timm.optim')  # a dev dependency, the reference; never imported by optbook
TOL = 1e-12
SCALES = (1e-3, 1., 1e3, 1.)

def lars_config(rng):
    "Random valid LARS arguments, every option drawn independently"
    momentum = rng.choice([0., 0.9, rng.uniform(0, 1)])
    dampening = rng.choice([0., 0., rng.uniform(0, 0.5)])
    return dict(lr=10 ** rng.uniform(-2, 0.5), momentum=momentum, dampening=dampening,
                nesterov=momentum > 0 and dampening == 0 and rng.random() < 0.5, weight_decay=rng.choice([0., 10 ** rng.uniform(-5, -2)]),
                trust_coeff=10 ** rng.uniform(-3, -1), eps=rng.choice([1e-8, 0., 1e-3]), trust_clip=rng.random() < 0.5,
                always_adapt=rng.random() < 0.5)

def group_overrides(rng, base, n):
    "n group dicts overriding random keys, each valid together with `base`"
    out = []
    for _ in range(n):
        h = lars_config(rng)
        g = {k: v for k, v in h.items() if k not in ('nesterov', 'momentum', 'dampening') and rng.random() < 0.5}
        out.append(g)
    return out

worst = {'LARS': 0.}

def lars_divergence(kw, foreach, ref_foreach, groups=None, **kwargs):
    made = []
    def ours(g): made.append(g); return LARS(g, foreach=foreach, **kw)
    def ref(g): made.append(g); return timm_optim.Lars(g, foreach=ref_foreach, **kw)
    d = max_divergence(ours, ref, groups=groups, **kwargs)
    for gs in made:
        for g in gs:
            for p in g['params']: assert torch.isfinite(p).all(), 'a run diverged: the comparison would be void'
    worst['LARS'] = max(worst['LARS'], d)
    return d

@pytest.mark.parametrize('momentum,dampening,nesterov', [(0., 0., False), (0.9, 0., False), (0.9, 0.3, False), (0.9, 0., True)])
@pytest.mark.parametrize('weight_decay,trust_clip,always_adapt', list(itertools.product((0., 1e-3), (False, True), (False, True))))
def test_every_combination_equals_timm(momentum, dampening, nesterov, weight_decay, trust_clip, always_adapt):
    eps = 0. if trust_clip else 1e-8  # eps 0 and 1e-3 also come up in the random configurations
    kw = dict(lr=0.7, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
              trust_coeff=0.01, eps=eps, trust_clip=trust_clip, always_adapt=always_adapt)
    groups = [{}, {'lr': 0.2}, {'weight_decay': 0.}, {'trust_coeff': 0.05, 'weight_decay': 2e-3}]
    for foreach in (False, True):
        assert lars_divergence(kw, foreach, foreach, groups=groups, steps=120, skip=0.25, scales=SCALES) < TOL

@pytest.mark.parametrize('seed', range(12))
def test_random_configs_equal_timm(seed):
    rng = random.Random(seed)
    kw = lars_config(rng)
    n = rng.randint(1, 5)
    shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    groups = group_overrides(rng, kw, n) if rng.random() < 0.6 else None
    d = lars_divergence(kw, rng.choice([None, True, False]), rng.choice([None, True, False]), groups=groups, shapes=shapes,
                        scales=[10 ** rng.uniform(-3, 3) for _ in range(n)], steps=rng.randint(100, 150), skip=rng.choice([0., 0.3]), seed=seed)
    assert d < TOL, (kw, groups, d)

def test_worst_difference_is_reported():
    print(f"\nworst relative difference from timm.optim.Lars: {worst['LARS']:.3e}")
    assert worst['LARS'] < TOL

def test_the_check_can_fail():
    kw = dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coeff=0.01)
    assert max_divergence(lambda g: LARS(g, **kw), lambda g: timm_optim.Lars(g, **(kw | {'trust_coeff': 0.0101})), steps=10) > 1e-6
    assert max_divergence(lambda g: LARS(g, **kw), lambda g: timm_optim.Lars(g, **(kw | {'eps': 1e-3})), steps=10) > 1e-9

class Counting:
    "Wrap a stepper's function to count its calls"
    def __init__(self, fn): self.fn, self.calls = fn, 0
    def __call__(self, *a, **k): self.calls += 1; return self.fn(*a, **k)

@pytest.mark.parametrize('foreach,dtype', [(None, torch.float32), (None, torch.float64), (True, torch.float64), (False, torch.float64)])
def test_which_path_ran(monkeypatch, foreach, dtype):
    per_tensor, multi, kernel = Counting(lars_adapt.fn), Counting(lars_adapt.foreach_fn), Counting(torch._fused_sgd_)
    monkeypatch.setattr(lars_adapt, 'fn', per_tensor); monkeypatch.setattr(lars_adapt, 'foreach_fn', multi); monkeypatch.setattr(torch, '_fused_sgd_', kernel)
    ps = [nn.Parameter(torch.randn(3, dtype=dtype)), nn.Parameter(torch.randn(2, 2, dtype=dtype))]
    opt = LARS(ps, weight_decay=1e-3, momentum=0.9, foreach=foreach)
    for p in ps: p.grad = torch.randn_like(p)
    opt.step()
    if foreach is False: assert (per_tensor.calls, multi.calls, kernel.calls) == (2, 0, 0) and opt.last_paths == ['tensor']
    elif foreach: assert (per_tensor.calls, multi.calls, kernel.calls) == (0, 1, 0) and opt.last_paths == ['foreach']
    else:  # None: chapter 11's fused path, SGD's kernel once per tensor with the ratio inside on the CPU, else once per block
        assert (per_tensor.calls, multi.calls, kernel.calls) == (0, 0, 2 if optbook.fused.host_ratios(ps[0].device) else 1) and opt.last_paths == ['fused']

def test_gradient_is_left_alone():
    p = nn.Parameter(torch.tensor([3., 4.])); g = torch.tensor([0.6, 0.8])
    for foreach in (False, True, None):
        p.grad = g.clone()
        LARS([p], weight_decay=0.1, always_adapt=True, foreach=foreach).step()
        assert torch.equal(p.grad, g)

def test_zero_tensor_moves_only_with_the_guard():
    from optbook.lars import lars_adapt_unguarded
    from optbook import heavy_ball, descend, Optimizer
    for steppers, moves in (((lars_adapt, heavy_ball, descend), True), ((lars_adapt_unguarded, heavy_ball, descend), False)):
        b = nn.Parameter(torch.zeros(3))
        opt = Optimizer([b], steppers, lr=1., momentum=0.9, weight_decay=1e-3, trust_coeff=1e-3, eps=1e-8, trust_clip=False, always_adapt=False, dampening=0., nesterov=False)
        for _ in range(5): b.grad = torch.ones(3); opt.step()
        assert bool((b != 0).all()) == moves
    b = nn.Parameter(torch.zeros(3)); opt = LARS([b], lr=0.5, weight_decay=1e-3)
    b.grad = torch.ones(3); opt.step()
    assert torch.equal(b.detach(), torch.full((3,), -0.5))  # ratio 1 at norm 0: a plain first step of lr * (g + wd * 0)

BAD = [('lr', -1., 'lr'), ('momentum', -0.1, 'momentum'), ('momentum', 1.5, 'momentum'), ('dampening', 2., 'dampening'),
       ('weight_decay', -1e-4, 'weight_decay'), ('trust_coeff', -1e-3, 'trust_coeff'), ('trust_coeff', float('nan'), 'trust_coeff'),
       ('eps', -1e-8, 'eps'), ('trust_clip', 1, 'trust_clip'), ('always_adapt', None, 'always_adapt'), ('nesterov', 'yes', 'nesterov'),
       ('foreach', 'yes', 'foreach')]

@pytest.mark.parametrize('name,value,word', BAD)
def test_bad_argument_raises_naming_itself(name, value, word):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word): LARS([p], **{name: value})
    with pytest.raises(ValueError, match=word): LARS([{'params': [p], name: value}])

def test_nesterov_needs_momentum_and_unknown_names_fail():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match='nesterov'): LARS([p], nesterov=True)
    with pytest.raises(ValueError, match='nesterov'): LARS([p], nesterov=True, momentum=0.9, dampening=0.1)
    with pytest.raises(TypeError, match='trust_coef'): LARS([p], trust_coef=1e-3)
    with pytest.raises(ValueError, match='did you mean trust_coeff'): LARS([{'params': [p], 'trust_coef': 1e-3}])  # a typo in a group
    assert LARS([{'params': [p], 'lr_scale': 0.5}]).param_groups[0]['lr_scale'] == 0.5  # other libraries' keys are kept, as torch keeps them

# --- the rest of the ecosystem: the same training loop with ours and timm's ---

from test_integration import _model, _batches  # the ecosystem tests' model and data, shared

def _train(make_opt, sched=None, scaler=None, compile=False, model=None, batches=None):
    model = model or _model()
    opt = make_opt(model.parameters())
    sch = sched(opt) if sched else None
    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        if scaler: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else: loss.backward(); opt.step()
    if compile: step = torch.compile(step, backend='eager')
    for x, y in batches or _batches():
        step(x, y)
        if sch: sch.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), opt

LARS_KW = dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coeff=0.02, trust_clip=True)
PAIRS = {'LARS': (lambda ps: LARS(ps, **LARS_KW), lambda ps: timm_optim.Lars(ps, **LARS_KW))}
PAIRS_LR = {'LARS': LARS_KW['lr']}

def _close(a, b): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

@pytest.mark.parametrize('name', PAIRS)
def test_one_cycle_lr_cycles_the_momentum(name):
    ours, ref = PAIRS[name]
    sched = lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1., total_steps=20, base_momentum=0.85, max_momentum=0.95)
    (a, oa), (b, ob) = _train(ours, sched), _train(ref, sched)
    _close(a, b)
    key = 'momentum' if 'momentum' in oa.param_groups[0] else 'betas'
    assert oa.param_groups[0][key] == ob.param_groups[0][key] and oa.param_groups[0][key] != LARS_KW['momentum']  # the scheduler drove it

@pytest.mark.parametrize('name', PAIRS)
def test_torch_scheduler_and_book_schedule(name):
    ours, ref = PAIRS[name]
    for sched in (lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20), lambda o: optbook.Warmup(o, 5, 20, decay='poly', power=2.)):
        _close(_train(ours, sched)[0], _train(ref, sched)[0])

@pytest.mark.parametrize('name', PAIRS)
def test_grad_scaler(name):
    ours, ref = PAIRS[name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a = _train(ours, scaler=torch.amp.GradScaler('cpu', init_scale=2.**8))[0]
    _close(a, _train(ref)[0])

@pytest.mark.parametrize('name', PAIRS)
def test_torch_compile(name):
    ours, ref = PAIRS[name]
    torch._dynamo.reset()
    _close(_train(ours, compile=True)[0], _train(ref)[0])

@pytest.mark.parametrize('name', PAIRS)
def test_state_dict_resume_and_timm_checkpoint(name):
    ours, ref = PAIRS[name]
    full = _train(ours)[0]
    bs = _batches()
    model = _model(); _, opt = _train(ours, model=model, batches=bs[:10])
    buf = io.BytesIO(); torch.save({'model': model.state_dict(), 'opt': opt.state_dict()}, buf); buf.seek(0)
    ck = torch.load(buf)
    for make in (ours, ref) if name == 'LARS' else (ours,):  # our checkpoint continues in ours (and in timm's Lars: timm's Lamb needs its own keys)
        m2 = _model(5); m2.load_state_dict(ck['model'])
        o2 = make(m2.parameters()); o2.load_state_dict(copy.deepcopy(ck['opt']))
        for x, y in bs[10:]:
            o2.zero_grad(); nn.functional.mse_loss(m2(x), y).backward(); o2.step()
        _close(torch.cat([p.detach().flatten() for p in m2.parameters()]), full)
    m3 = _model(); _, t = _train(ref, model=m3, batches=bs[:10])  # and timm's continues in ours
    o3 = ours(m3.parameters()); o3.load_state_dict(t.state_dict())
    for x, y in bs[10:]:
        o3.zero_grad(); nn.functional.mse_loss(m3(x), y).backward(); o3.step()
    _close(torch.cat([p.detach().flatten() for p in m3.parameters()]), full)

@pytest.mark.parametrize('name', PAIRS)
def test_pickle_and_deepcopy(name):
    ours, _ = PAIRS[name]
    model = _model(); opt = ours(model.parameters())
    model(torch.randn(3, 6, dtype=torch.float64)).sum().backward(); opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(clone) is type(opt)
        for q in clone.param_groups[0]['params']: q.grad = torch.ones_like(q)
        clone.step()
    for p in model.parameters(): p.grad = torch.ones_like(p)
    opt.step()
    _close([q.detach() for q in clone.param_groups[0]['params']], [p.detach() for p in model.parameters()])

@pytest.mark.parametrize('name', PAIRS)
def test_lightning(name, tmp_path):
    L = pytest.importorskip('lightning')
    ours, _ = PAIRS[name]
    class Module(L.LightningModule):
        def __init__(self):
            super().__init__(); self.net = _model().float()
        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)
        def configure_optimizers(self):
            opt = ours(self.parameters())
            return {'optimizer': opt, 'lr_scheduler': {'scheduler': torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5), 'interval': 'step'}}
    xs, ys = zip(*_batches())
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(xs).float(), torch.cat(ys).float()), batch_size=16)
    m = Module(); before = [p.detach().clone() for p in m.parameters()]
    L.Trainer(max_epochs=1, accelerator='cpu', logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(m, data)
    opt = m.trainer.optimizers[0]
    assert type(opt).__name__ == name and opt.param_groups[0]['lr'] == pytest.approx(PAIRS_LR[name] * 0.5 ** 4)
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, m.parameters()))


def test_cuda_equals_timm():
    if not torch.cuda.is_available(): pytest.skip('no CUDA here')
    kw = dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coeff=0.02, always_adapt=True)
    for foreach in (False, True):
        d = max_divergence(lambda g: LARS(g, foreach=foreach, **kw), lambda g: timm_optim.Lars(g, foreach=foreach, **kw), steps=50, device='cuda')
        assert d < TOL

def test_top_level_api():
    assert optbook.LARS is LARS

# --- LAMB ---
from optbook import LAMB
from optbook.lars import lamb_adapt

def lamb_config(rng):
    "Random valid LAMB arguments"
    return dict(lr=10 ** rng.uniform(-3, -1.5), bias_correction=rng.random() < 0.7, betas=(rng.choice([0.9, 0., rng.uniform(0, 0.99)]), rng.choice([0.999, rng.uniform(0.9, 0.9999)])),
                eps=rng.choice([1e-6, 1e-8, 0.]), weight_decay=rng.choice([0.01, 0., 10 ** rng.uniform(-4, -1)]), grad_averaging=rng.random() < 0.7,
                max_grad_norm=rng.choice([None, 1.0, 10 ** rng.uniform(-2, 2)]), trust_clip=rng.random() < 0.5, always_adapt=rng.random() < 0.5)

worst['LAMB'] = 0.

def lamb_divergence(kw, foreach, ref_foreach, groups=None, **kwargs):
    made = []
    def ours(g): made.append(g); return LAMB(g, foreach=foreach, **kw)
    def ref(g): made.append(g); return timm_optim.Lamb(g, foreach=ref_foreach, **kw)
    d = max_divergence(ours, ref, groups=groups, **kwargs)
    for gs in made:
        for g in gs:
            for p in g['params']: assert torch.isfinite(p).all(), 'a run diverged'
    worst['LAMB'] = max(worst['LAMB'], d)
    return d

@pytest.mark.parametrize('bias_correction,grad_averaging', list(itertools.product((True, False), (True, False))))
@pytest.mark.parametrize('weight_decay,trust_clip,always_adapt', list(itertools.product((0., 0.01), (False, True), (False, True))))
@pytest.mark.parametrize('max_grad_norm', (None, 1.0))
def test_lamb_every_combination_equals_timm(bias_correction, grad_averaging, weight_decay, trust_clip, always_adapt, max_grad_norm):
    kw = dict(lr=1e-2, bias_correction=bias_correction, grad_averaging=grad_averaging, weight_decay=weight_decay,
              max_grad_norm=max_grad_norm, trust_clip=trust_clip, always_adapt=always_adapt)
    groups = [{}, {'lr': 3e-3}, {'weight_decay': 0.}, {'betas': (0.8, 0.99), 'eps': 1e-8}]
    for foreach in (False, True):
        assert lamb_divergence(kw, foreach, foreach, groups=groups, steps=80, skip=0.25, scales=SCALES) < TOL

@pytest.mark.parametrize('seed', range(12))
def test_lamb_random_configs_equal_timm(seed):
    rng = random.Random(1000 + seed)
    kw = lamb_config(rng)
    n = rng.randint(1, 5)
    shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    groups = [{k: v for k, v in lamb_config(rng).items() if k != 'max_grad_norm' and rng.random() < 0.5} for _ in range(n)] if rng.random() < 0.6 else None
    d = lamb_divergence(kw, rng.choice([None, True, False]), rng.choice([None, True, False]), groups=groups, shapes=shapes,
                        scales=[10 ** rng.uniform(-3, 3) for _ in range(n)], steps=rng.randint(100, 150), skip=rng.choice([0., 0.3]), seed=seed)
    assert d < TOL, (kw, groups, d)

def test_lamb_worst_difference_is_reported():
    print(f"\nworst relative difference from timm.optim.Lamb: {worst['LAMB']:.3e}")
    assert worst['LAMB'] < TOL

def test_lamb_check_can_fail():
    kw = dict(lr=1e-2, max_grad_norm=1.0, eps=0.1)  # Adam's direction ignores the gradient's scale but for eps: a large eps shows the clip
    assert max_divergence(lambda g: LAMB(g, **kw), lambda g: timm_optim.Lamb(g, **(kw | {'max_grad_norm': 1.01})), steps=10, scales=(10., 10., 10., 10.)) > 1e-6
    # a per-parameter step count (Adam's) instead of the group's differs once some tensor skips a step
    per_param = lambda g: optbook.Optimizer(g, [optbook.count_step, *optbook.lars.lamb_steppers], lr=1e-2, eps=1e-6, weight_decay=0.01)
    assert max_divergence(per_param, lambda g: timm_optim.Lamb(g, lr=1e-2, max_grad_norm=None), steps=30, skip=0.3) > 1e-6

@pytest.mark.parametrize('foreach', (None, True, False))
def test_lamb_which_path_ran(monkeypatch, foreach):
    per_tensor, multi, kernel = Counting(lamb_adapt.fn), Counting(lamb_adapt.foreach_fn), Counting(torch._fused_adam_)
    monkeypatch.setattr(lamb_adapt, 'fn', per_tensor); monkeypatch.setattr(lamb_adapt, 'foreach_fn', multi); monkeypatch.setattr(torch, '_fused_adam_', kernel)
    ps = [nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2, 2))]
    opt = LAMB(ps, foreach=foreach)
    for p in ps: p.grad = torch.randn_like(p)
    opt.step()
    assert (per_tensor.calls, multi.calls, kernel.calls) == {False: (2, 0, 0), True: (0, 1, 0), None: (0, 0, 1)}[foreach]  # None: chapter 11's fused path, Adam's kernel
    assert opt.last_paths == {False: ['tensor'], True: ['foreach'], None: ['fused']}[foreach]

def test_lamb_leaves_gradients_and_counts_group_steps():
    ps = [nn.Parameter(torch.tensor([3., 4.])), nn.Parameter(torch.ones(2))]
    opt = LAMB(ps, max_grad_norm=0.1)
    g = torch.tensor([30., 40.]); ps[0].grad = g.clone()
    opt.step()
    assert torch.equal(ps[0].grad, g)  # clipped to norm 0.1 in a copy the step reads: p.grad stays the user's, as timm leaves it
    ps[0].grad = g.clone(); opt.step()
    assert opt.param_groups[0]['step'].item() == 2 and opt.state[ps[0]]['step'].item() == 2 and ps[1] not in opt.state

LAMB_BAD = [('lr', -1., 'lr'), ('eps', -1e-6, 'eps'), ('weight_decay', -1., 'weight_decay'), ('betas', (1., 0.999), r'betas\[0\]'),
            ('max_grad_norm', 0., 'max_grad_norm'), ('max_grad_norm', -1., 'max_grad_norm'), ('max_grad_norm', float('nan'), 'max_grad_norm'),
            ('bias_correction', 1, 'bias_correction'), ('grad_averaging', None, 'grad_averaging'), ('trust_clip', 'no', 'trust_clip')]

@pytest.mark.parametrize('name,value,word', LAMB_BAD)
def test_lamb_bad_argument_raises_naming_itself(name, value, word):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word): LAMB([p], **{name: value})

def test_max_grad_norm_is_one_value_for_the_optimizer():
    p, q = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match='max_grad_norm'): LAMB([{'params': [p]}, {'params': [q], 'max_grad_norm': 2.}])
    opt = LAMB([p], max_grad_norm=None)
    assert opt.param_groups[0]['max_grad_norm'] is None and 'max_grad_norm' in opt.state_dict()['param_groups'][0]  # checkpoints carry it

def test_lamb_rejects_timm_options_it_lacks():
    p = nn.Parameter(torch.zeros(2)); p.grad = torch.ones(2)
    t = timm_optim.Lamb([p], caution=True); t.step()
    with pytest.raises(ValueError, match='caution'): LAMB([p]).load_state_dict(t.state_dict())

LAMB_KW = dict(lr=2e-2, weight_decay=0.01, max_grad_norm=1.0, trust_clip=True)
PAIRS['LAMB'] = (lambda ps: LAMB(ps, **LAMB_KW), lambda ps: timm_optim.Lamb(ps, **LAMB_KW))
PAIRS_LR['LAMB'] = LAMB_KW['lr']

def test_top_level_lamb():
    assert optbook.LAMB is LAMB

# --- the large-batch experiment's machinery (the claims are asserted in the chapter's slow cells) ---

def test_large_batch_experiment_is_registered_and_runs_a_step():
    import optbook.experiments as ex
    assert 'large-batch' in ex.EXPERIMENTS and ex.EXPERIMENTS['large-batch'].minutes
    assert ex.lb_lr(0.05, 'linear', 4000) == 2. and ex.lb_lr(0.05, 'sqrt', 1600) == pytest.approx(0.2)
    with pytest.raises(ValueError, match='rule'): ex.lb_lr(0.05, 'cubic', 400)
    assert ex.lb_batch(ex.lb_schedule(3500)) == 3500
    rec = ex._LBTrustRatios()
    out = ex.lb_run(ex.Run('mnist1d_cnn', 'LARS', ex.lb_schedule(3500), 1, 10., 0), cbs=[rec])  # one epoch at the full batch: one step
    acc = dict(((s, m), v) for s, m, v in out)
    assert 0 <= acc['valid', 'accuracy'] <= 1 and 0 <= acc['test', 'accuracy'] <= 1
    assert set(rec.ratios) == {n for n, _ in optbook.mnist1d_cnn().named_parameters()}
    assert all(len(r) == 1 and r[0] > 0 for r in rec.ratios.values())

def test_lars_takes_chapter_08s_transform_keywords():
    "max_grad_norm: torch's clip_grad_norm_ before timm's Lars step; skip_nonfinite: a NaN gradient leaves everything as it was"
    gen = torch.Generator().manual_seed(0)
    a = [nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64)), nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    kw = dict(lr=0.5, momentum=0.9, weight_decay=1e-3, trust_coeff=0.02, always_adapt=True)
    oa, ob = LARS(a, max_grad_norm=0.5, **kw), timm_optim.Lars(b, **kw)
    for _ in range(20):
        gs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) * 3 for p in a]
        for p, q, g in zip(a, b, gs): p.grad, q.grad = g.clone(), g.clone()
        torch.nn.utils.clip_grad_norm_(b, 0.5); oa.step(); ob.step()
    _close([p.detach() for p in a], [q.detach() for q in b])
    with pytest.raises(TypeError, match='max_grad_nrom'): LARS(a, max_grad_nrom=1.)  # no swallowed typos
    o = LARS(a, skip_nonfinite=True, **kw); before = [p.detach().clone() for p in a]
    for p in a: p.grad = torch.full_like(p, float('nan'))
    o.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before)) and o.skipped_steps == 1

def test_lamb_takes_skip_nonfinite_and_keeps_its_own_clip():
    p = nn.Parameter(torch.tensor([3., 4.], dtype=torch.float64)); q = nn.Parameter(p.detach().clone())
    oa, ob = LAMB([p], max_grad_norm=1.0, skip_nonfinite=True), timm_optim.Lamb([q], max_grad_norm=1.0)
    for g in (torch.tensor([30., 40.]), torch.tensor([float('inf'), 1.]), torch.tensor([0.3, -0.4])):
        p.grad = g.double().clone(); oa.step()
        if torch.isfinite(g).all(): q.grad = g.double().clone(); ob.step()  # timm has no skip: step it only where ours steps
    _close(p.detach(), q.detach())
    assert oa.skipped_steps == 1


def test_lamb_step_hooks_run_once_after_a_plain_optimizer():
    "torch wraps a class's `step` with the hooks on its first instance; LAMB's step calls the engine's, wrapped too once a plain `Optimizer` exists: hooks must still run once per step"
    from optbook.core import Optimizer, descend
    Optimizer([nn.Parameter(torch.ones(1))], [descend], lr=0.1)  # wraps the engine's own `step`
    assert getattr(Optimizer.step, 'hooked', False)
    p = nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
    opt, pre, post = optbook.LAMB([p], lr=0.1), [], []
    opt.register_step_pre_hook(lambda o, *_: pre.append(1)); opt.register_step_post_hook(lambda o, *_: post.append(1))
    opt.step(); opt.step()
    assert pre == post == [1, 1] and opt.param_groups[0]['step'].item() == 2
