"optbook.Lion against timm's Lion in float64: every option, timm's own test configurations, random configurations, checkpoints moved both ways, Tensor lr, compile, GradScaler, pickling."
import copy, itertools, pickle, pydoc, random, warnings
import pytest, torch
from torch import nn
import optbook
from optbook import Lion, max_divergence
from optbook.lion import lion_sign
from equivalence import assert_random_problem_equal, assert_mixed_dtypes_equal
from reference_checks import moved_checkpoint_divergence, compile_recipe, train_small as _train, clones_continue_alike

timm_optim = pytest.importorskip('timm.optim')  # the reference, a dev dependency
TOL = 1e-10
GROUPS = [{}, {'lr': 3e-2}, {'weight_decay': 0.5}, {'betas': (0.5, 0.9)}]
worst = {'Lion': 0.}

def divergence(kw, foreach, ref_foreach, **more):
    made = []
    def ours(g): made.append(g); return Lion(g, foreach=foreach, **kw)
    def ref(g): made.append(g); return timm_optim.Lion(g, foreach=ref_foreach, **kw)
    d = max_divergence(ours, ref, **more)
    assert all(torch.isfinite(p).all() for gs in made for g in gs for p in g['params']), 'a run diverged: the comparison would be void'
    worst['Lion'] = max(worst['Lion'], d)
    return d

@pytest.mark.parametrize('caution,corrected,maximize', list(itertools.product((False, True), repeat=3)))
@pytest.mark.parametrize('weight_decay', (0., 0.1))
def test_every_option_equals_timm(caution, corrected, maximize, weight_decay):
    kw = dict(lr=1e-2, betas=(0.8, 0.95), weight_decay=weight_decay, caution=caution, corrected_weight_decay=corrected, maximize=maximize)
    for foreach, ref_foreach in ((False, False), (True, True), (True, False), (None, None)):
        assert divergence(kw, foreach, ref_foreach, groups=GROUPS, steps=40, skip=0.25, scales=(1e-3, 1., 1e3, 1.)) < TOL

def lion_config(rng):
    "Random valid Lion arguments"
    return dict(lr=10 ** rng.uniform(-4, -1), betas=(rng.choice([0.9, 0., rng.uniform(0, 0.99)]), rng.choice([0.99, rng.uniform(0, 0.999)])),
                weight_decay=rng.choice([0., 10 ** rng.uniform(-3, 0)]), caution=rng.random() < 0.4,
                corrected_weight_decay=rng.random() < 0.4, maximize=rng.random() < 0.3)

@pytest.mark.parametrize('seed', range(6))
def test_random_configs_equal_timm(seed):
    assert_random_problem_equal(lambda g, **kw: Lion(g, **kw), lambda g, **kw: timm_optim.Lion(g, **kw), lion_config, seed, steps=40, tol=TOL)

# timm's tests/test_optim.py runs every optimizer of its factory (`lion`, `clion`, `lionc`, `clionc`) through `_test_basic_cases`:
# four parameter layouts at lr 1e-2, a 10x5 weight and a bias (contiguous and not) on the loss sum((W x + b)^2) for 200 steps,
# and a state_dict primed for 20 steps, loaded into a fresh optimizer and continued for 20. The default suite runs every name,
# layout and contiguity for 40 steps; the 200 steps of timm's own cases run in the slow profile (`make slow`: pytest -m slow).
TIMM_NAMES = ('lion', 'clion', 'lionc', 'clionc')
TIMM_STEPS = [40, pytest.param(200, marks=pytest.mark.slow)]

def _timm_layouts(w, b, lr=1e-2):
    "timm's four: both tensors at lr; two groups (the bias at lr, the rest at lr/10); the bias alone at lr, default lr/10; the bias alone, default lr"
    return [(lambda: [w, b], dict(lr=lr)), (lambda: [{'params': [w]}, {'params': [b], 'lr': lr}], dict(lr=lr / 10)),
            (lambda: [{'params': b, 'lr': lr}], dict(lr=lr / 10)), (lambda: [{'params': b, 'lr': lr}], {})]

def _basic_case(make, w0, b0, x, steps=200):
    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    opt = make(w, b)
    def closure():
        opt.zero_grad(); loss = (w.mv(x) + b).pow(2).sum(); loss.backward(); return loss
    for _ in range(steps): opt.step(closure)
    return torch.cat([w.detach().flatten(), b.detach()]), opt

@pytest.mark.parametrize('steps', TIMM_STEPS)
@pytest.mark.parametrize('name', TIMM_NAMES)
def test_timm_test_configurations(name, steps):
    defaults = timm_optim.get_optimizer_info(name).defaults or {}
    gen = torch.Generator().manual_seed(0)
    for contiguous in (True, False):
        w0 = torch.randn(10, 5, generator=gen, dtype=torch.float64) if contiguous else torch.randn(10, 5, 2, generator=gen, dtype=torch.float64)[..., 0]
        b0 = torch.randn(10, generator=gen, dtype=torch.float64) if contiguous else torch.randn(10, 2, generator=gen, dtype=torch.float64)[..., 0]
        x = torch.randn(5, generator=gen, dtype=torch.float64)
        for i in range(4):
            ref_opt = lambda w, b: timm_optim.create_optimizer_v2(_timm_layouts(w, b)[i][0](), name, **_timm_layouts(w, b)[i][1])
            ours_opt = lambda w, b: Lion(_timm_layouts(w, b)[i][0](), **_timm_layouts(w, b)[i][1], **defaults)
            (a, oa), (r, orf) = _basic_case(ours_opt, w0, b0, x, steps), _basic_case(ref_opt, w0, b0, x, steps)
            assert type(orf) is timm_optim.Lion and {k: orf.param_groups[0][k] for k in defaults} == defaults
            d = ((a - r).abs() / (1 + r.abs())).max().item()
            worst['Lion'] = max(worst['Lion'], d)
            assert d < TOL, (name, contiguous, i, d)

@pytest.mark.parametrize('name', TIMM_NAMES)
def test_timm_state_dict_case(name):
    "timm's _test_state_dict: prime 20 steps, load the state into a fresh optimizer on cloned weights, the two continue alike"
    kw = (timm_optim.get_optimizer_info(name).defaults or {}) | dict(lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    w, b, x = (nn.Parameter(torch.randn(10, 5, generator=gen, dtype=torch.float64)), nn.Parameter(torch.randn(10, generator=gen, dtype=torch.float64)),
               torch.randn(5, generator=gen, dtype=torch.float64))
    def closure_for(opt, w, b):
        def closure():
            opt.zero_grad(); loss = (w.mv(x) + b).pow(2).sum(); loss.backward(); return loss
        return closure
    opt = Lion([w, b], **kw)
    for _ in range(20): opt.step(closure_for(opt, w, b))
    wc, bc = nn.Parameter(w.detach().clone()), nn.Parameter(b.detach().clone())
    for make in (Lion, timm_optim.Lion):  # our checkpoint continues in ours and in timm's
        w2, b2 = nn.Parameter(wc.detach().clone()), nn.Parameter(bc.detach().clone())
        opt2 = make([w2, b2], **kw); opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
        w1, b1 = nn.Parameter(wc.detach().clone()), nn.Parameter(bc.detach().clone())
        opt1 = Lion([w1, b1], **kw); opt1.load_state_dict(copy.deepcopy(opt.state_dict()))
        for _ in range(20):
            opt1.step(closure_for(opt1, w1, b1)); opt2.step(closure_for(opt2, w2, b2))
        torch.testing.assert_close(w1, w2, rtol=TOL, atol=TOL); torch.testing.assert_close(b1, b2, rtol=TOL, atol=TOL)

@pytest.mark.parametrize('kw', [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1, caution=True), dict(lr=1e-2, weight_decay=0.3, corrected_weight_decay=True, maximize=True)])
def test_checkpoint_moved_both_ways_mid_run(kw):
    d = moved_checkpoint_divergence(lambda g: Lion(g, **kw), lambda g: timm_optim.Lion(g, **kw), groups=GROUPS)
    worst['Lion'] = max(worst['Lion'], d)
    assert d < TOL

def test_state_names_are_timms():
    p, q = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(3, 2))
    a, b = Lion([p]), timm_optim.Lion([q])
    for x in (p, q): x.grad = torch.ones(3, 2)
    a.step(); b.step()
    assert list(a.state[p]) == list(b.state[q]) == ['exp_avg']
    assert set(b.state_dict()['param_groups'][0]) - {'params'} <= set(a.state_dict()['param_groups'][0])  # every key of timm's groups is ours

def test_tensor_lr_and_complex_equal_timm():
    kw = dict(weight_decay=0.1, caution=True)
    for foreach in (None, False, True):
        d = max_divergence(lambda g: Lion(g, lr=torch.tensor(1e-2), foreach=foreach, **kw), lambda g: timm_optim.Lion(g, lr=torch.tensor(1e-2), **kw), steps=30, skip=0.2)
        assert d < TOL
    for foreach in (False, True):  # complex parameters, as their real views, like timm
        gen = torch.Generator().manual_seed(0)
        a = nn.Parameter(torch.randn(4, 3, dtype=torch.complex128, generator=gen)); b = nn.Parameter(a.detach().clone())
        oa, ob = Lion([a], lr=1e-2, foreach=foreach, **kw), timm_optim.Lion([b], lr=1e-2, **kw)
        for _ in range(20):
            g = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
            a.grad, b.grad = g.clone(), g.clone(); oa.step(); ob.step()
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)

def test_mixed_dtypes_to_the_last_bit():
    assert_mixed_dtypes_equal(Lion, timm_optim.Lion, lr=1e-2, weight_decay=0.1)

def test_the_check_can_fail():
    assert max_divergence(lambda g: Lion(g, lr=1e-2), lambda g: timm_optim.Lion(g, lr=1e-2, betas=(0.9, 0.98)), steps=20) > 1e-6
    assert max_divergence(lambda g: Lion(g, lr=1e-2, weight_decay=0.1, corrected_weight_decay=True),
                          lambda g: timm_optim.Lion(g, lr=1e-2, weight_decay=0.1), groups=GROUPS, steps=20) > 1e-6  # the group at 3e-2 decays at 9e-2

def test_worst_difference_is_reported():
    print(f"\nworst relative difference from timm.optim.Lion: {worst['Lion']:.3e}")
    assert worst['Lion'] < TOL

@pytest.mark.parametrize('foreach,path', [(None, 'foreach'), (True, 'foreach'), (False, 'tensor')])
def test_which_path_ran(foreach, path):
    p = nn.Parameter(torch.randn(3)); p.grad = torch.randn(3)
    opt = Lion([p], foreach=foreach); opt.step()
    assert opt.last_paths == [path]
    opt = Lion([p], lr=torch.tensor(1e-3), foreach=foreach); opt.step()  # a Tensor lr keeps the multi-tensor path
    assert opt.last_paths == [path]

BAD = [('lr', -1e-4, 'lr'), ('betas', (1., 0.99), r'betas\[0\]'), ('betas', (0.9, 1.), r'betas\[1\]'), ('weight_decay', -0.1, 'weight_decay'),
       ('caution', 1, 'caution'), ('corrected_weight_decay', 'yes', 'corrected_weight_decay'), ('maximize', None, 'maximize'), ('foreach', 'yes', 'foreach')]

@pytest.mark.parametrize('name,value,word', BAD)
def test_bad_argument_raises_naming_itself(name, value, word):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word): Lion([p], **{name: value})
    with pytest.raises(ValueError, match=word): Lion([{'params': [p], name: value}])

def test_refusals_say_what_to_do():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match='peak lr'): Lion([p], lr=0., corrected_weight_decay=True)  # timm refuses it too
    with pytest.raises(ValueError): timm_optim.Lion([p], lr=0., corrected_weight_decay=True)
    with pytest.raises(TypeError, match='beta'): Lion([p], beta=(0.9, 0.99))
    with pytest.raises(ValueError, match='did you mean caution'): Lion([{'params': [p], 'cautio': True}])
    p.grad = torch.ones(2).to_sparse()
    with pytest.raises(RuntimeError, match='sparse'): Lion([p]).step()

def test_transform_keywords():
    "max_grad_norm: torch's clip_grad_norm_ before timm's step; skip_nonfinite: a NaN gradient leaves everything as it was"
    gen = torch.Generator().manual_seed(0)
    a = [nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64)), nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    kw = dict(lr=1e-2, weight_decay=0.1)
    oa, ob = Lion(a, max_grad_norm=0.5, **kw), timm_optim.Lion(b, **kw)
    for _ in range(20):
        gs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) * 3 for p in a]
        for p, q, g in zip(a, b, gs): p.grad, q.grad = g.clone(), g.clone()
        torch.nn.utils.clip_grad_norm_(b, 0.5); oa.step(); ob.step()
    for p, q in zip(a, b): torch.testing.assert_close(p, q, rtol=TOL, atol=TOL)
    o = Lion(a, skip_nonfinite=True, **kw); before = [p.detach().clone() for p in a]
    for p in a: p.grad = torch.full_like(p, float('nan'))
    o.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before)) and o.skipped_steps == 1 and not o.state

def test_grad_scaler():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a = _train(lambda ps: Lion(ps, lr=1e-2, weight_decay=0.1), scaler=torch.amp.GradScaler('cpu', init_scale=2. ** 8))[0]
    torch.testing.assert_close(a, _train(lambda ps: timm_optim.Lion(ps, lr=1e-2, weight_decay=0.1))[0], rtol=1e-12, atol=1e-12)

def test_pickle_and_deepcopy_continue_alike():
    _, opt = _train(lambda ps: Lion(ps, lr=1e-2, weight_decay=0.1, caution=True))
    clones_continue_alike(opt)

def test_torch_compile_recipe():
    "A Tensor lr and a scheduler: the compiled step gives eager's numbers; no recompile from the third call on"
    make = lambda ps: Lion(ps, lr=torch.tensor(1e-2), weight_decay=0.1)
    eager, _ = compile_recipe(make, compiled=False)
    compiled, frames = compile_recipe(make)
    for a, b in zip(compiled, eager): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    _, timm_frames = compile_recipe(lambda ps: timm_optim.Lion(ps, lr=torch.tensor(1e-2), weight_decay=0.1))
    print(f"\ngraphs after each compiled step: optbook.Lion {frames}, timm's Lion {timm_frames}")
    assert frames[1] == frames[-1] and 0 < frames[-1] <= timm_frames[-1] + 2

def test_help_shows_the_docstring():
    text = pydoc.render_doc(Lion)
    assert 'timm.optim.Lion' in text and 'lion_sign' in text and 'corrected_weight_decay=False' in text
    assert optbook.Lion is Lion and 'Lion' in optbook.__all__

def test_cuda_equals_timm():
    if not torch.cuda.is_available(): pytest.skip('no CUDA here')
    kw = dict(lr=1e-2, weight_decay=0.1, caution=True)
    for foreach in (False, True):
        d = max_divergence(lambda g: Lion(g, foreach=foreach, **kw), lambda g: timm_optim.Lion(g, foreach=foreach, **kw), steps=40, groups=GROUPS, skip=0.25, device='cuda')
        assert d < TOL

@pytest.mark.parametrize('name', ['fused', 'capturable', 'differentiable'])
def test_keywords_timm_lacks_are_refused_alike(name):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError): timm_optim.Lion([p], **{name: False})
    with pytest.raises(TypeError, match=name): Lion([p], **{name: False})
