"optbook.Adafactor against torch.optim.Adafactor in float64: torch's own test inputs and error inputs, random configurations, checkpoints moved both ways, Tensor lr, mixed dtypes, compile, GradScaler, pickling."
import copy, pickle, pydoc, random, warnings
import pytest, torch
from torch import nn
import optbook
from optbook import Adafactor, max_divergence
from optbook.adafactor import factored_second_moment
from equivalence import assert_random_problem_equal
from reference_checks import moved_checkpoint_divergence, compile_recipe, train_small as _train, clones_continue_alike

TOL = 1e-10
SHAPES, SCALES = ((4, 3), (3,), (2, 3, 2), (5, 1), ()), (1., 1e-3, 1e3, 10., 1.)
GROUPS = [{}, {'lr': 3e-2}, {'weight_decay': 0.5, 'd': 2.}, {'eps': (1e-30, 1e-2)}, {'beta2_decay': -0.6}]
worst = {'Adafactor': 0.}

from test_torch_optiminfo import CO  # torch's OptimizerInfo database, read as that file reads it
INFO = next(o for o in CO.optim_db if o.name == 'Adafactor')
INPUTS = list({i.desc: i for dev in ('cpu', 'cuda') for i in INFO.optim_inputs_func(device=dev) if i.params is None}.values())
ERRORS = INFO.optim_error_inputs_func(device='cpu', dtype=torch.float64)

def divergence(kw, foreach, ref_foreach, **more):
    made = []
    def ours(g): made.append(g); return Adafactor(g, foreach=foreach, **kw)
    def ref(g): made.append(g); return torch.optim.Adafactor(g, foreach=ref_foreach, **kw)
    d = max_divergence(ours, ref, **more)
    assert all(torch.isfinite(p).all() for gs in made for g in gs for p in g['params']), 'a run diverged: the comparison would be void'
    worst['Adafactor'] = max(worst['Adafactor'], d)
    return d

def test_torch_inputs_are_read():
    assert len(INPUTS) >= 5 and len(ERRORS) >= 8  # a torch release that renamed the database would otherwise test nothing

@pytest.mark.parametrize('inp', INPUTS, ids=[i.desc for i in INPUTS])
def test_torch_test_inputs_equal_torch(inp):
    "Each configuration of torch's own Adafactor tests, five groups of their own settings, tensors of 0 to 3 dimensions, skipped gradients"
    for foreach, ref_foreach in ((None, None), (False, False), (True, True), (True, False)):
        assert divergence(inp.kwargs, foreach, ref_foreach, groups=GROUPS, shapes=SHAPES, scales=SCALES, steps=40, skip=0.25) < TOL

@pytest.mark.parametrize('inp', INPUTS, ids=[i.desc for i in INPUTS])
def test_torch_test_inputs_float32(inp):
    "float32, where torch reads eps1 as float32's machine epsilon: equal to float32 rounding"
    for foreach in (False, True):
        d = max_divergence(lambda g: Adafactor(g, foreach=foreach, **inp.kwargs), lambda g: torch.optim.Adafactor(g, foreach=foreach, **inp.kwargs),
                           steps=30, shapes=SHAPES, scales=SCALES, skip=0.25, dtype=torch.float32)
        assert d < 1e-5

@pytest.mark.parametrize('err', ERRORS, ids=[e.optimizer_error_input.desc for e in ERRORS])
def test_torch_error_inputs_refused_alike(err):
    inp = err.optimizer_error_input
    params = inp.params if inp.params is not None else [nn.Parameter(torch.randn(2, dtype=torch.float64))]
    expect = pytest.warns if issubclass(err.error_type, Warning) else pytest.raises
    if err.error_on == CO.OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with expect(err.error_type, match=err.error_regex): Adafactor(params, **inp.kwargs)
    else:
        opt = Adafactor(params, **inp.kwargs)
        with expect(err.error_type, match=err.error_regex): opt.step()

def ada_config(rng):
    "Random valid Adafactor arguments"
    return dict(lr=10 ** rng.uniform(-3, -1), beta2_decay=rng.choice([-0.8, -1., rng.uniform(-1.5, -0.1)]), d=rng.choice([1., 1.5, rng.uniform(1, 5)]),
                eps=(rng.choice([None, 1e-30, 10 ** rng.uniform(-8, -2)]), rng.choice([1e-3, 0., 10 ** rng.uniform(-4, -1)])),
                weight_decay=rng.choice([0., 10 ** rng.uniform(-3, 0)]), maximize=rng.random() < 0.3)

@pytest.mark.parametrize('seed', range(6))
def test_random_configs_equal_torch(seed):
    assert_random_problem_equal(lambda g, **kw: Adafactor(g, **kw), lambda g, **kw: torch.optim.Adafactor(g, **kw), ada_config, seed, steps=40, tol=TOL)

@pytest.mark.parametrize('kw', [{}, dict(lr=3e-2, weight_decay=0.1, d=1.5), dict(beta2_decay=-1., maximize=True, eps=(1e-30, 1e-2))])
def test_checkpoint_moved_both_ways_mid_run(kw):
    d = moved_checkpoint_divergence(lambda g: Adafactor(g, **kw), lambda g: torch.optim.Adafactor(g, **kw), groups=GROUPS[:4], shapes=SHAPES[:4])
    worst['Adafactor'] = max(worst['Adafactor'], d)
    assert d < TOL

def test_state_names_are_torchs():
    ps = [nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2, 3, 4))]
    qs = [nn.Parameter(p.detach().clone()) for p in ps]
    a, b = Adafactor(ps), torch.optim.Adafactor(qs)
    for x in ps + qs: x.grad = torch.ones_like(x)
    a.step(); b.step()
    for p, q in zip(ps, qs):
        assert list(a.state[p]) == list(b.state[q]) and all(a.state[p][k].shape == b.state[q][k].shape and a.state[p][k].dtype == b.state[q][k].dtype for k in b.state[q])
    assert list(a.state[ps[2]]) == ['step', 'row_var', 'col_var'] and a.state[ps[2]]['row_var'].shape == (2, 3, 1)  # the last two dimensions factored
    assert set(b.state_dict()['param_groups'][0]) - {'params'} <= set(a.state_dict()['param_groups'][0])

def test_tensor_lr_equals_torch():
    """A float64 Tensor lr: equal to 1e-10. A float32 one (torch.tensor(0.01) by default) on float64 weights: torch computes the step size
    alpha_t in the lr's float32 (a Python float times a float32 tensor), this class in the weights' dtype, so they agree to float32 rounding"""
    kw = dict(weight_decay=0.1)
    for foreach in (None, False, True):
        for lr in (1e-2, 2.):  # below and above the 1/sqrt(t) cap
            for dtype, tol in ((torch.float64, TOL), (torch.float32, 1e-7)):
                d = max_divergence(lambda g: Adafactor(g, lr=torch.tensor(lr, dtype=dtype), foreach=foreach, **kw),
                                   lambda g: torch.optim.Adafactor(g, lr=torch.tensor(lr, dtype=dtype), **kw), steps=30, skip=0.2, shapes=SHAPES, scales=SCALES)
                if dtype == torch.float64: worst['Adafactor'] = max(worst['Adafactor'], d)
                assert d < tol, (foreach, lr, dtype, d)

def test_mixed_dtypes_read_eps1_from_the_first_parameter():
    """A group of float32 and float64 tensors with eps1=None, gradients so small that eps1 matters: torch's default loop takes eps1 from the
    first parameter with a gradient, for the whole group, and so do both our paths"""
    def run(cls, order, foreach):
        torch.manual_seed(0)
        ps = [nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(3, 2, dtype=torch.float64)), nn.Parameter(torch.randn(4, 2))]
        ps = ps[::-1] if order else ps
        opt, gen = cls(ps, foreach=foreach), torch.Generator().manual_seed(1)
        for _ in range(10):
            for p in ps: p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * 1e-9
            opt.step()
        return sorted(ps, key=lambda p: p.numel())
    for order in (0, 1):
        ref = run(torch.optim.Adafactor, order, False)
        for foreach in (False, True):
            ours = run(Adafactor, order, foreach)
            assert max(((a - b).abs() / (1 + b.abs())).max().item() for a, b in zip(ours, ref)) < 1e-6
        # the per-parameter dtype (the obvious rule) would differ: eps1 sets the step here
        own = run(lambda ps, foreach: optbook.Optimizer(ps, optbook.adafactor.adafactor_steppers, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1., weight_decay=0., maximize=False), order, False)
        assert max(((a - b).abs() / (1 + b.abs())).max().item() for a, b in zip(own, ref)) > 1e-3

def test_the_check_can_fail():
    assert max_divergence(lambda g: Adafactor(g), lambda g: torch.optim.Adafactor(g, d=1.01), steps=20, scales=(10., 10., 10., 10.)) > 1e-6
    assert max_divergence(lambda g: Adafactor(g), lambda g: torch.optim.Adafactor(g, beta2_decay=-0.81), steps=20) > 1e-6

def test_worst_difference_is_reported():
    print(f"\nworst relative difference from torch.optim.Adafactor: {worst['Adafactor']:.3e}")
    assert worst['Adafactor'] < TOL

@pytest.mark.parametrize('foreach,path', [(None, 'tensor'), (True, 'foreach'), (False, 'tensor')])
def test_which_path_ran(foreach, path, monkeypatch):
    calls = {'fn': 0, 'foreach': 0}
    fn, ffn = factored_second_moment.fn, factored_second_moment.foreach_fn
    monkeypatch.setattr(factored_second_moment, 'fn', lambda *a, **k: (calls.__setitem__('fn', calls['fn'] + 1), fn(*a, **k))[1])
    monkeypatch.setattr(factored_second_moment, 'foreach_fn', lambda *a, **k: (calls.__setitem__('foreach', calls['foreach'] + 1), ffn(*a, **k))[1])
    ps = [nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2, 2))]
    for p in ps: p.grad = torch.randn_like(p)
    opt = Adafactor(ps, foreach=foreach); opt.step()
    assert opt.last_paths == [path] and calls == ({'fn': 2, 'foreach': 0} if path == 'tensor' else {'fn': 0, 'foreach': 1})

BAD = [('lr', -1., 'lr'), ('beta2_decay', 0.1, 'beta2_decay'), ('eps', (-1., 1e-3), 'epsilon1'), ('eps', (None, -1e-3), 'epsilon2'), ('eps', 1e-3, 'eps'),
       ('d', 0.5, 'Clipping threshold d'), ('weight_decay', -0.1, 'weight_decay'), ('maximize', 1, 'maximize'), ('foreach', 'yes', 'foreach')]

@pytest.mark.parametrize('name,value,word', BAD)
def test_bad_argument_raises_naming_itself(name, value, word):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word): Adafactor([p], **{name: value})
    with pytest.raises(ValueError, match=word): Adafactor([{'params': [p], name: value}])
    with pytest.raises(ValueError): torch.optim.Adafactor([p], **{name: value}) if name not in ('maximize', 'foreach', 'eps') or value == (None, -1e-3) or value == (-1., 1e-3) else (_ for _ in ()).throw(ValueError())

def test_refusals_say_what_to_do():
    p = nn.Parameter(torch.zeros(2, 3, dtype=torch.complex64)); p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match='view_as_real'): Adafactor([p]).step()
    q = nn.Parameter(torch.zeros(2)); q.grad = torch.ones(2).to_sparse()
    with pytest.raises(RuntimeError, match='sparse'): Adafactor([q]).step()
    with pytest.raises(TypeError, match='beta2'): Adafactor([q], beta2=0.9)
    with pytest.raises(TypeError): Adafactor([q], 1e-2, -0.8, (None, 1e-3), 1., 0., None)  # foreach is keyword-only, as torch's

def test_transform_keywords():
    gen = torch.Generator().manual_seed(0)
    a = [nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64)), nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    oa, ob = Adafactor(a, max_grad_norm=0.5, weight_decay=0.1), torch.optim.Adafactor(b, weight_decay=0.1)
    for _ in range(20):
        gs = [torch.randn(p.shape, generator=gen, dtype=torch.float64) * 3 for p in a]
        for p, q, g in zip(a, b, gs): p.grad, q.grad = g.clone(), g.clone()
        torch.nn.utils.clip_grad_norm_(b, 0.5); oa.step(); ob.step()
    for p, q in zip(a, b): torch.testing.assert_close(p, q, rtol=TOL, atol=TOL)
    o = Adafactor(a, skip_nonfinite=True); before = [p.detach().clone() for p in a]
    for p in a: p.grad = torch.full_like(p, float('inf'))
    o.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before)) and o.skipped_steps == 1 and not o.state

def test_grad_scaler():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a = _train(lambda ps: Adafactor(ps, weight_decay=0.1), scaler=torch.amp.GradScaler('cpu', init_scale=2. ** 8))[0]
    torch.testing.assert_close(a, _train(lambda ps: torch.optim.Adafactor(ps, weight_decay=0.1))[0], rtol=1e-12, atol=1e-12)

def test_pickle_and_deepcopy_continue_alike():
    _, opt = _train(lambda ps: Adafactor(ps, weight_decay=0.1, d=1.5))
    clones_continue_alike(opt)

def test_torch_compile_recipe():
    "A Tensor lr and a scheduler: as torch's, the step runs eagerly inside the compiled function (no graph, no recompile) and gives eager's numbers"
    make = lambda ps: Adafactor(ps, lr=torch.tensor(1e-2), weight_decay=0.1)
    eager, _ = compile_recipe(make, compiled=False)
    compiled, frames = compile_recipe(make)
    for a, b in zip(compiled, eager): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    _, torch_frames = compile_recipe(lambda ps: torch.optim.Adafactor(ps, lr=torch.tensor(1e-2), weight_decay=0.1))
    print(f"\ngraphs after each compiled step: optbook.Adafactor {frames}, torch's Adafactor {torch_frames}")
    assert frames == torch_frames == [0] * len(frames)

def test_help_shows_the_docstring():
    text = pydoc.render_doc(Adafactor)
    assert 'torch.optim.Adafactor' in text and 'factored_second_moment' in text and 'beta2_decay=-0.8' in text
    assert optbook.Adafactor is Adafactor and 'Adafactor' in optbook.__all__

def test_the_experiment_is_registered_with_the_methods_it_names():
    import optbook.experiments as ex
    assert 'lion-adafactor' in ex.EXPERIMENTS and ex.EXPERIMENTS['lion-adafactor'].minutes
    p = [nn.Parameter(torch.zeros(2))]
    made = {m: make(p, 1e-3) for m, (make, grid) in ex.AFTER_ADAM_METHODS.items()}
    assert {m: type(o).__name__ for m, o in made.items()} == {'AdamW': 'AdamW', 'Lion': 'Lion', 'Adam': 'Adam', 'Adafactor': 'Adafactor'}
    assert made['Lion'].defaults['weight_decay'] == 10 * made['AdamW'].defaults['weight_decay'] and made['Adam'].defaults['weight_decay'] == 0
    assert all(len(grid) >= 3 and list(grid) == sorted(grid) for _, grid in ex.AFTER_ADAM_METHODS.values())

def test_cuda_equals_torch():
    if not torch.cuda.is_available(): pytest.skip('no CUDA here')
    for kw in [i.kwargs for i in INPUTS]:
        for foreach in (False, True):
            d = max_divergence(lambda g: Adafactor(g, foreach=foreach, **kw), lambda g: torch.optim.Adafactor(g, foreach=foreach, **kw),
                               steps=40, groups=GROUPS, shapes=SHAPES, scales=SCALES, skip=0.25, device='cuda')
            assert d < TOL

@pytest.mark.parametrize('name', ['fused', 'capturable', 'differentiable'])
def test_keywords_torch_lacks_are_refused_alike(name):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError): torch.optim.Adafactor([p], **{name: False})
    with pytest.raises(TypeError, match=name): Adafactor([p], **{name: False})
