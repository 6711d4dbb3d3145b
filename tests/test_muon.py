"optbook.Muon against torch.optim.Muon in float64: torch's own test inputs, random configurations, checkpoints both ways, pickling, GradScaler, torch.compile; muon_param_groups."
import copy, io, pickle, random, warnings
import pytest, torch
from torch import nn
import optbook
from optbook import Muon, max_divergence, muon_param_groups
from test_torch_optiminfo import CO, INFOS
from reference_checks import clipping_first

TOL = 1e-10
SHAPES = ((4, 3), (3, 5), (6, 6), (1, 4))  # tall, wide, square, a row: Muon takes matrices only
worst = {'Muon': 0.}

def divergence(kw, groups=None, ref_kw=None, **kwargs):
    made = []
    def ours(g): made.append(g); return Muon(g, **copy.deepcopy(kw))
    def ref(g): made.append(g); return torch.optim.Muon(g, **copy.deepcopy(ref_kw or kw))
    d = max_divergence(ours, ref, groups=groups, **({'shapes': SHAPES, 'scales': (1e-3, 1., 1e3, 1.)} | kwargs))
    for gs in made:
        for g in gs:
            for p in g['params']: assert torch.isfinite(p).all(), 'a run diverged: the comparison would be void'
    if ref_kw is None: worst['Muon'] = max(worst['Muon'], d)
    return d

TORCH_INPUTS = [i for i in INFOS['Muon'].optim_inputs_func(device='cpu') if i.params is None]

@pytest.mark.parametrize('inp', TORCH_INPUTS, ids=[i.desc for i in TORCH_INPUTS])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
def test_torch_inputs_equal_torch(inp, dtype):
    "Every configuration torch's tests run for Muon, with two groups of their own rates and decays and skipped gradients, 30 steps"
    groups = [{}, {'lr': 0.03, 'weight_decay': 0.}, {'momentum': 0.8, 'nesterov': False}, {}]
    assert divergence(inp.kwargs, groups=groups, steps=30, skip=0.25, dtype=dtype) < (TOL if dtype == torch.float64 else 1e-6)

def test_torch_inputs_are_read():
    assert len(TORCH_INPUTS) >= 8 and any(isinstance(i.kwargs.get('lr'), torch.Tensor) for i in TORCH_INPUTS)

def muon_config(rng):
    return dict(lr=10 ** rng.uniform(-3, -1), weight_decay=rng.choice([0., 0.1, 10 ** rng.uniform(-3, 0)]), momentum=rng.choice([0., 0.95, rng.uniform(0, 1)]),
                nesterov=rng.random() < 0.5, ns_steps=rng.randint(0, 8), eps=rng.choice([1e-7, 1e-3]),
                ns_coefficients=rng.choice([optbook.JORDAN_COEFFICIENTS, (1.5, -0.5, 0.), (2., -1.5, 0.5)]),
                adjust_lr_fn=rng.choice(optbook.muon.ADJUST_LR_FNS))

@pytest.mark.parametrize('seed', range(10))
def test_random_configs_equal_torch(seed):
    rng = random.Random(seed)
    kw = muon_config(rng)
    n = rng.randint(1, 4)
    shapes = [(rng.randint(1, 7), rng.randint(1, 7)) for _ in range(n)]
    groups = [{k: v for k, v in muon_config(rng).items() if rng.random() < 0.5} for _ in range(n)] if rng.random() < 0.6 else None
    d = divergence(kw, groups=groups, shapes=shapes, scales=[10 ** rng.uniform(-3, 3) for _ in range(n)], steps=rng.randint(25, 40),
                   skip=rng.choice([0., 0.3]), seed=seed)
    assert d < TOL, (kw, groups, d)

def test_worst_difference_is_reported():
    print(f"\nworst relative difference from torch.optim.Muon: {worst['Muon']:.3e}")
    assert worst['Muon'] < TOL

def test_the_check_can_fail():
    assert divergence({}, ref_kw={'ns_steps': 4}, steps=5) > 1e-4
    assert divergence({'lr': 0.02}, ref_kw={'lr': 0.02, 'adjust_lr_fn': 'match_rms_adamw'}, steps=5) > 1e-4

ERRORS = INFOS['Muon'].optim_error_inputs_func(device='cpu', dtype=torch.float64)

@pytest.mark.parametrize('err', ERRORS, ids=[e.optimizer_error_input.desc for e in ERRORS])
def test_torch_error_inputs_refused_alike(err):
    inp = err.optimizer_error_input
    params = inp.params if inp.params is not None else [nn.Parameter(torch.randn(2, 2, dtype=torch.float64))]
    expect = pytest.warns if issubclass(err.error_type, Warning) else pytest.raises
    if err.error_on == CO.OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with expect(err.error_type, match=err.error_regex): Muon(params, **inp.kwargs)
    else:
        opt = Muon(params, **inp.kwargs)
        with expect(err.error_type, match=err.error_regex): opt.step()

def test_every_error_input_is_tried():
    assert {e.optimizer_error_input.desc for e in ERRORS} >= {'only support 2D parameters', 'unsupported adjust_lr_fn', 'does not support complex parameters'}

def test_non_matrix_refused_with_the_way_out_in_a_later_group_too():
    opt = Muon([nn.Parameter(torch.zeros(2, 2))])
    with pytest.raises(ValueError, match='only supports 2D parameters.*AdamW.*muon_param_groups'): opt.add_param_group({'params': [nn.Parameter(torch.zeros(3))]})
    assert len(opt.param_groups) == 1  # the refused group left nothing behind
    with pytest.raises(ValueError, match='torch.Size\\(\\[2, 2, 2\\]\\)'): Muon([nn.Parameter(torch.zeros(2, 2, 2))])

BAD = [('lr', -1.), ('weight_decay', -0.1), ('momentum', -0.1), ('momentum', 1.5), ('nesterov', 1), ('ns_steps', 100), ('ns_steps', -1),
       ('ns_steps', 5.), ('ns_coefficients', (1., 2.)), ('ns_coefficients', (1., 'x', 2.)), ('eps', -1e-7), ('eps', float('nan'))]

@pytest.mark.parametrize('name,value', BAD)
def test_bad_argument_raises_naming_itself(name, value):
    p = nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=name): Muon([p], **{name: value})
    with pytest.raises(ValueError, match=name): Muon([{'params': [p], name: value}])

def test_unknown_names_fail():
    p = nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(TypeError, match='ns_step'): Muon([p], ns_step=5)
    with pytest.raises(ValueError, match='did you mean ns_steps'): Muon([{'params': [p], 'ns_step': 5}])

def test_defaults_and_state_are_torchs():
    import inspect
    ours, theirs = inspect.signature(Muon).parameters, inspect.signature(torch.optim.Muon).parameters
    assert [n for n in ours if n != 'more'] == list(theirs)
    assert all(ours[n].default == theirs[n].default for n in theirs)
    p, q = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(3, 2))
    a, b = Muon([p]), torch.optim.Muon([q])
    p.grad = q.grad = torch.randn(3, 2); a.step(); b.step()
    assert set(a.state[p]) == set(b.state[q]) == {'momentum_buffer'}
    assert {k: v for k, v in a.param_groups[0].items() if k in b.defaults} == {k: v for k, v in b.param_groups[0].items() if k in b.defaults}

def test_gradient_is_left_alone_and_skip_nonfinite():
    p = nn.Parameter(torch.randn(3, 2, dtype=torch.float64)); g = torch.randn(3, 2, dtype=torch.float64)
    opt = Muon([p], nesterov=False, skip_nonfinite=True)
    p.grad = g.clone(); opt.step(); assert torch.equal(p.grad, g)
    before = p.detach().clone(); buf = opt.state[p]['momentum_buffer'].clone()
    p.grad = torch.full((3, 2), float('nan'), dtype=torch.float64); opt.step()
    assert torch.equal(p.detach(), before) and torch.equal(opt.state[p]['momentum_buffer'], buf) and opt.skipped_steps == 1

def test_max_grad_norm_is_torchs_clip_then_torchs_muon():
    ref = clipping_first(lambda g: torch.optim.Muon(g, lr=0.02), 0.5)
    d = max_divergence(lambda g: Muon(g, lr=0.02, max_grad_norm=0.5), ref, steps=25, shapes=SHAPES, skip=0.2)
    assert d < TOL

# --- the ecosystem: checkpoints, pickling, GradScaler, compile ---

def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.Linear(8, 2, bias=False)).double()

def _batches(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 2, generator=g, dtype=torch.float64)) for _ in range(n)]

KW = dict(lr=0.02, weight_decay=0.05, momentum=0.9)
def _train(make, model=None, batches=None, scaler=None, compile=False):
    model = model or _model()
    opt = make(model.parameters())
    def step(x, y):
        opt.zero_grad(); loss = nn.functional.mse_loss(model(x), y)
        if scaler: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else: loss.backward(); opt.step()
    if compile: step = torch.compile(step, backend='eager')
    for x, y in batches or _batches(): step(x, y)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), opt

ours, ref = (lambda ps: Muon(ps, **KW)), (lambda ps: torch.optim.Muon(ps, **KW))
def _close(a, b): torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)

def test_state_dict_moved_mid_run_both_ways():
    full = _train(ref)[0]
    bs = _batches()
    for first, second in ((ref, ours), (ours, ref), (ours, ours)):
        model = _model(); _, o1 = _train(first, model=model, batches=bs[:10])
        buf = io.BytesIO(); torch.save(o1.state_dict(), buf); buf.seek(0)
        o2 = second(model.parameters()); o2.load_state_dict(torch.load(buf))
        for x, y in bs[10:]:
            o2.zero_grad(); nn.functional.mse_loss(model(x), y).backward(); o2.step()
        _close(torch.cat([p.detach().flatten() for p in model.parameters()]), full)

def test_pickle_and_deepcopy():
    model = _model(); opt = ours(model.parameters())
    model(torch.randn(3, 6, dtype=torch.float64)).sum().backward(); opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(clone) is Muon
        for q in clone.param_groups[0]['params']: q.grad = torch.ones_like(q)
        clone.step()
    for p in model.parameters(): p.grad = torch.ones_like(p)
    opt.step()
    _close([q.detach() for q in clone.param_groups[0]['params']], [p.detach() for p in model.parameters()])

def test_grad_scaler():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a = _train(ours, scaler=torch.amp.GradScaler('cpu', init_scale=2.**8))[0]
    _close(a, _train(ref)[0])

def test_torch_compile_training_step():
    torch._dynamo.reset()
    _close(_train(ours, compile=True)[0], _train(ref)[0])

def test_compile_recipe_with_a_tensor_lr():
    "PyTorch's recipe: a Tensor lr, a scheduler, torch.compile around opt.step(); no recompile from the third call, graphs as torch's, eager's numbers"
    from torch._dynamo.testing import CompileCounter
    def run(cls, compiled):
        torch._dynamo.reset()
        model = _model(); ps = list(model.parameters())
        opt = cls(ps, lr=torch.tensor(0.02), momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (t + 1))
        counter = CompileCounter()
        step, frames = (torch.compile(opt.step, backend=counter) if compiled else opt.step), []
        gen = torch.Generator().manual_seed(0)
        for _ in range(6):
            for p in ps: p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            step(); sched.step(); frames.append(counter.frame_count)
        return torch.cat([p.detach().flatten() for p in ps]), frames
    (ours_c, f_ours), (ref_c, f_ref) = run(Muon, True), run(torch.optim.Muon, True)
    _close(ours_c, ref_c)  # compiled equals compiled; both differ from eager in bfloat16's last bits, as torch's own tests note for Muon
    _close(run(Muon, False)[0], run(torch.optim.Muon, False)[0])
    assert f_ours[2:] == [f_ours[2]] * 4, f_ours  # no recompile from the third call on
    assert f_ours[-1] <= f_ref[-1] + 1, (f_ours, f_ref)

def test_help_shows_the_rule_and_the_arguments():
    doc = Muon.__doc__
    for word in ('Jordan', 'muon_momentum', 'orthogonalize', 'decoupled_decay', 'muon_descend', 'ns_coefficients', 'adjust_lr_fn', 'match_rms_adamw'):
        assert word in doc, word

def test_cuda_equals_torch():
    if not torch.cuda.is_available(): pytest.skip('no CUDA here')
    assert max_divergence(lambda g: Muon(g, lr=0.02), lambda g: torch.optim.Muon(g, lr=0.02), steps=25, shapes=SHAPES, device='cuda') < TOL

# --- muon_param_groups ---

def test_split_of_the_tiny_transformer():
    m = optbook.tiny_transformer(vocab=11, d_model=16, n_heads=2, n_layers=3)
    s = muon_param_groups(m)
    names = {id(p): n for n, p in m.named_parameters()}
    assert [names[id(p)] for p in s.muon] == [f'blocks.{i}.{k}.weight' for i in range(3) for k in ('qkv', 'proj', 'ff.0', 'ff.2')]
    assert len(s.muon) + len(s.adamw) == len(list(m.parameters())) and not {id(p) for p in s.muon} & {id(p) for p in s.adamw}
    assert all(p.ndim == 2 for p in s.muon) and 'head.weight' in [names[id(p)] for p in s.adamw]
    Muon(s.muon); torch.optim.AdamW(s.adamw)  # both accept their share
    s2 = muon_param_groups(m, head=None)
    assert len(s2.muon) == len(s.muon) + 1  # without a head, the last linear layer is hidden too

def test_split_of_the_cnn_and_bad_arguments():
    m = optbook.mnist1d_cnn()
    s = muon_param_groups(m)
    assert all(p.ndim == 2 for p in s.muon) and all('not a matrix' in r or 'output' in r or 'Muon' in r for r in s.why.values())
    assert any('3-D' in r for r in s.why.values())  # the conv kernels stay with AdamW, as torch's Muon refuses them
    with pytest.raises(ValueError, match='head'): muon_param_groups(m, head='nope')
    with pytest.raises(ValueError, match='model'): muon_param_groups([nn.Parameter(torch.zeros(2, 2))])

def test_top_level_api():
    assert optbook.Muon is Muon and optbook.muon_param_groups is muon_param_groups


# MuonAdamW: Muon and AdamW as one optimizer object, against torch's Muon + AdamW stepped side by side

def _three_layers(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)).double()

def _pair_data(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (32,), generator=g)

def _pair_loss(m, data): return nn.functional.cross_entropy(m(data[0]), data[1])

def _linear_lr(opt): return torch.optim.lr_scheduler.LinearLR(opt, start_factor=1., end_factor=0.1, total_iters=20)

def _torch_pair(groups, **kw):
    "torch's Muon on the use_muon groups, torch's AdamW on the others, with MuonAdamW's defaults"
    muon = dict(lr=kw.get('lr', 1e-3), weight_decay=kw.get('weight_decay', 0.01), adjust_lr_fn='match_rms_adamw')
    adamw = dict(lr=kw.get('lr', 1e-3), weight_decay=kw.get('weight_decay', 0.01))
    strip = lambda g: {k: v for k, v in g.items() if k != 'use_muon'}
    return [torch.optim.Muon([strip(g) for g in groups if g['use_muon']], **muon), torch.optim.AdamW([strip(g) for g in groups if not g['use_muon']], **adamw)]

def _groups(model, style):
    split = muon_param_groups(model)
    if style == 'split': return split
    return [{'params': split.muon[:1], 'use_muon': True, 'lr': 0.02, 'momentum': 0.9}, {'params': split.adamw, 'use_muon': False, 'betas': (0.9, 0.95), 'eps': 1e-10},
            {'params': split.muon[1:], 'use_muon': True, 'weight_decay': 0.}]

@pytest.mark.parametrize('style', ['split', 'dicts'])
@pytest.mark.parametrize('resume', [None, 10])
def test_muon_adamw_equals_torch_muon_and_adamw(style, resume):
    "20 steps under LinearLR, equal to torch's two optimizers under two LinearLRs; with resume, a checkpoint loaded mid-run into fresh objects"
    data = _pair_data()
    ours_net, ref_net = _three_layers(), _three_layers()
    ours = optbook.MuonAdamW(_groups(ours_net, style), lr=0.01); sched = _linear_lr(ours)
    ref_groups = _groups(ref_net, style)
    refs = _torch_pair([{'params': ref_groups.muon, 'use_muon': True}, {'params': ref_groups.adamw, 'use_muon': False}] if style == 'split' else ref_groups, lr=0.01)
    ref_scheds = [_linear_lr(o) for o in refs]
    for t in range(20):
        if t == resume:
            ckpt = copy.deepcopy((ours_net.state_dict(), ours.state_dict(), sched.state_dict()))
            ours_net = _three_layers(seed=5); ours_net.load_state_dict(ckpt[0])
            ours = optbook.MuonAdamW(_groups(ours_net, style), lr=0.5, momentum=0.5); sched = _linear_lr(ours)
            ours.load_state_dict(ckpt[1]); sched.load_state_dict(ckpt[2])
        ours.zero_grad(); _pair_loss(ours_net, data).backward(); ours.step(); sched.step()
        for o in refs: o.zero_grad()
        _pair_loss(ref_net, data).backward()
        for o, s in zip(refs, ref_scheds): o.step(); s.step()
    muon_ids = {id(p) for g in ours.param_groups if g['use_muon'] for p in g['params']}
    for (name, a), b in zip(ours_net.named_parameters(), ref_net.parameters()):
        if id(a) in muon_ids: assert torch.equal(a, b), name  # Muon to the bit
        else: torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert {i for g in ours.param_groups for i in range(len(g['params']))} and ours.param_groups[0]['lr'] == pytest.approx(0.01 * 0.1 if style == 'split' else 0.02 * 0.1)

def test_muon_adamw_groups_and_state_are_the_inner_optimizers():
    net = _three_layers()
    opt = optbook.MuonAdamW(_groups(net, 'dicts'))
    assert [g['use_muon'] for g in opt.param_groups] == [True, False, True]
    assert opt.param_groups[0] is opt.inner[True].param_groups[0] and opt.param_groups[2] is opt.inner[True].param_groups[1]
    assert opt.param_groups[1] is opt.inner[False].param_groups[0]
    assert opt.inner[True].state is opt.state is opt.inner[False].state
    g = opt.param_groups[0]
    assert (g['lr'], g['momentum'], g['weight_decay'], g['adjust_lr_fn'], g['nesterov'], g['eps']) == (0.02, 0.9, 0.01, 'match_rms_adamw', True, 1e-7)
    g = opt.param_groups[1]
    assert (g['lr'], g['betas'], g['eps'], g['weight_decay'], g['amsgrad']) == (1e-3, (0.9, 0.95), 1e-10, 0.01, False)
    _pair_loss(net, _pair_data()).backward(); opt.step()
    assert all(p.grad is not None for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    sd = opt.state_dict()
    assert len(sd['state']) == 6 and [len(g['params']) for g in sd['param_groups']] == [1, 4, 1]

def test_muon_adamw_add_param_group_routes_and_checks():
    net, extra_w, extra_b = _three_layers(), nn.Parameter(torch.zeros(3, 3, dtype=torch.float64)), nn.Parameter(torch.zeros(3, dtype=torch.float64))
    split = muon_param_groups(net)
    opt = optbook.MuonAdamW([{'params': split.adamw, 'use_muon': False}])  # AdamW only: Muon is built when a group needs it
    assert opt.inner[True] is None and opt.optimizers() == [opt.inner[False]]
    opt.add_param_group({'params': split.muon, 'use_muon': True})
    opt.add_param_group({'params': extra_b, 'use_muon': False})
    assert [g['use_muon'] for g in opt.param_groups] == [False, True, False] and opt.inner[True].state is opt.state
    with pytest.raises(ValueError, match=r"tensor 0 of group 3 \(use_muon=True\): shape \(3,\).*use_muon=False.*muon_param_groups"):
        opt.add_param_group({'params': [extra_b.detach().clone().requires_grad_()], 'use_muon': True})
    with pytest.raises(ValueError, match='more than one parameter group'): opt.add_param_group({'params': [split.muon[0]], 'use_muon': True})
    with pytest.raises(ValueError, match='use_muon'): opt.add_param_group({'params': [extra_w]})
    assert len(opt.param_groups) == 3 and len(opt.inner[True].param_groups) == 1

@pytest.mark.parametrize('bad,match', [
    (lambda net: list(net.parameters()), r'entry 0 is not a parameter-group dict.*muon_param_groups'),
    (lambda net: [{'params': list(net.parameters())}], r'entry 0 is a dict without a bool use_muon'),
    (lambda net: [{'params': list(net.parameters()), 'use_muon': 1}], r'use_muon'),
    (lambda net: next(net.parameters()), r'a Tensor.*muon_param_groups'),
    (lambda net: [{'params': list(net.parameters()), 'use_muon': True}], r'tensor 1 of group 0 \(use_muon=True\): shape \(8,\) is not a 2-D matrix'),
])
def test_muon_adamw_bad_params_raise(bad, match):
    with pytest.raises(ValueError, match=match): optbook.MuonAdamW(bad(_three_layers()))

@pytest.mark.parametrize('name,value', [('lr', -1.), ('momentum', 1.5), ('betas', (0.9, 1.5)), ('weight_decay', -0.1), ('ns_steps', 100), ('eps', -1.), ('ns_eps', -1.), ('adjust_lr_fn', 'x')])
def test_muon_adamw_bad_argument_names_itself(name, value):
    with pytest.raises(ValueError, match='eps' if name == 'ns_eps' else ('Adjust learning rate' if name == 'adjust_lr_fn' else name)):
        optbook.MuonAdamW(muon_param_groups(_three_layers()), **{name: value})

def test_muon_adamw_load_state_dict_is_all_or_nothing():
    data, net = _pair_data(), _three_layers()
    opt = optbook.MuonAdamW(muon_param_groups(net), lr=0.01)
    _pair_loss(net, data).backward(); opt.step()
    good = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(good)
    last_adamw = bad['param_groups'][1]['params'][-1]
    bad['state'][last_adamw]['exp_avg'] = torch.zeros(7, dtype=torch.float64)  # the AdamW half is refused after the Muon half loaded
    fresh_net = _three_layers(); fresh = optbook.MuonAdamW(muon_param_groups(fresh_net), lr=0.5)
    before = copy.deepcopy(fresh.state_dict())
    with pytest.raises(ValueError, match='exp_avg'): fresh.load_state_dict(bad)
    after = fresh.state_dict()
    assert after['param_groups'] == before['param_groups'] and after['state'] == {}
    assert fresh.param_groups[0] is fresh.inner[True].param_groups[0] and fresh.inner[True].state is fresh.state
    with pytest.raises(ValueError, match='use_muon'): fresh.load_state_dict({'state': {}, 'param_groups': good['param_groups'][::-1]})
    fresh.load_state_dict(good)
    assert fresh.param_groups[0]['lr'] == 0.01 and set(fresh.state[list(fresh_net.parameters())[-1]]) == {'step', 'exp_avg', 'exp_avg_sq'}

def test_muon_adamw_stepped_optimizer_loads_and_restores():
    "The rate finder's save and restore: a stepped optimizer (state in both halves) loads its own earlier checkpoint; a refused one leaves it whole"
    data, net = _pair_data(), _three_layers()
    opt = optbook.MuonAdamW(muon_param_groups(net), lr=0.01)
    _pair_loss(net, data).backward(); opt.step()
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(net.state_dict())
    for _ in range(2): opt.zero_grad(); _pair_loss(net, data).backward(); opt.step()
    bad = copy.deepcopy(saved); bad['state'][bad['param_groups'][1]['params'][-1]]['exp_avg'] = torch.zeros(7, dtype=torch.float64)
    kept = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match='exp_avg'): opt.load_state_dict(bad)
    got = opt.state_dict()
    assert all(torch.equal(got['state'][i][k], kept['state'][i][k]) for i in kept['state'] for k in kept['state'][i])  # refused: unchanged
    opt.load_state_dict(copy.deepcopy(saved)); net.load_state_dict(weights)  # copies: torch's load keeps the checkpoint's tensors as the state
    twin_net = _three_layers(); twin_net.load_state_dict(weights)
    twin = optbook.MuonAdamW(muon_param_groups(twin_net), lr=0.01); twin.load_state_dict(copy.deepcopy(saved))
    for o, n in ((opt, net), (twin, twin_net)): o.zero_grad(); _pair_loss(n, data).backward(); o.step()
    for a, b in zip(net.parameters(), twin_net.parameters()): assert torch.equal(a, b)  # restored = loaded fresh

def test_muon_adamw_pickle_keeps_the_inner_optimizers():
    net = _three_layers(); opt = optbook.MuonAdamW(muon_param_groups(net), lr=0.01)
    _pair_loss(net, _pair_data()).backward(); opt.step()
    net2, opt2 = pickle.loads(pickle.dumps((net, opt)))
    assert opt2.param_groups[0] is opt2.inner[True].param_groups[0] and opt2.param_groups[1] is opt2.inner[False].param_groups[0]
    assert opt2.inner[False].state is opt2.state and opt2.param_groups[0]['params'][0] is list(net2.parameters())[0]
    for o, n in ((opt, net), (opt2, net2)): o.zero_grad(); _pair_loss(n, _pair_data()).backward(); o.step()
    for a, b in zip(net.parameters(), net2.parameters()): assert torch.equal(a, b)

def test_muon_adamw_in_the_learner_with_one_cycle():
    "opt_func=MuonAdamW, splitter=muon_param_groups; fit_one_cycle cycles Muon's momentum and AdamW's beta1 alike"
    from optbook.data import tensor_dls
    from optbook.learner import Learner, Recorder
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    seen = []
    class Watch(optbook.Callback):
        def before_step(self): seen.append([(gr['use_muon'], gr['lr'], gr['momentum'] if gr['use_muon'] else gr['betas'][0]) for gr in self.learn.opt.param_groups])
    learn = Learner(net, tensor_dls(x[:32], y[:32], x[32:], y[32:], bs=8), opt_func=optbook.MuonAdamW, splitter=muon_param_groups, lr=0.01,
                    cbs=[Watch()], device='cpu', progress=False)
    learn.fit_one_cycle(2, max_lr=0.01)
    assert isinstance(learn.opt, optbook.MuonAdamW) and len(seen) == 8
    for step in seen: assert step[0][1:] == step[1][1:]  # both halves at the same rate and momentum at every step
    rates, moms = [s[0][1] for s in seen], [s[0][2] for s in seen]
    assert max(rates) > 5 * rates[0] and min(moms) < 0.9 < moms[0]
    assert all(torch.isfinite(p).all() for p in net.parameters())

def test_muon_experiment_reads_steps_to_target():
    "The experiment's reading of a curve: the first check at or below the target, else the budget + 1; registered under 'muon'"
    from optbook.experiments import EXPERIMENTS, steps_to_target, valid_curve
    curve = [(25, 2.0), (50, 0.5), (75, 0.1)]
    assert [steps_to_target(curve, t) for t in (3., 0.5, 0.3, 0.1, 0.05)] == [25, 50, 75, 75, 76]
    rows = [dict(task='t', method='m', schedule='constant', budget=1, lr=0.01, seed=0, split='valid', metric=f'loss@{s}', value=v) for s, v in reversed(curve)]
    rows.append(dict(rows[0], metric='loss', value=0.1))
    assert valid_curve(rows, ('t', 'm', 'constant', 1), 0.01, 0) == curve and valid_curve(rows, ('t', 'm', 'constant', 1), 0.01, 1) == []
    assert 'muon' in EXPERIMENTS and EXPERIMENTS['muon'].minutes
