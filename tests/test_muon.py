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
