"""The engine's own promises, tested so that they fail when the engine breaks: which path ran, that the direction's
memory goes after its last reader, that steppers which disagree are refused, and that the checks reached are optbook's."""
import gc, weakref
import pytest, torch
from torch import nn
import optbook
from optbook.core import Optimizer, Stepper, Hyper, Interval, stepper, descend, maximize

def _spy():
    "A stepper that records which of its two versions ran"
    calls = []
    @stepper()
    def spy(p, g, state): calls.append('tensor')
    @spy.foreach
    def _spy_foreach(ps, gs, states): calls.append('foreach')
    return spy, calls

@pytest.mark.parametrize('foreach,expect', [(None, 'foreach'), (True, 'foreach'), (False, 'tensor')])
def test_the_path_that_ran_is_the_path_recorded(foreach, expect):
    spy, calls = _spy()
    ps = [nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))]
    for p in ps: p.grad = torch.ones_like(p)
    opt = Optimizer(ps, [spy, descend], lr=0.1, foreach=foreach); opt.step()
    assert opt.last_paths == [expect]
    assert calls == ([expect] if expect == 'foreach' else ['tensor', 'tensor'])  # once per bucket, or once per tensor

@pytest.mark.parametrize('cls', [optbook.SGD, optbook.RMSprop, optbook.Adam, optbook.AdamW, optbook.RAdam])
def test_named_optimizers_take_the_fast_path_they_say(cls):
    "The foreach-equals-loop checks elsewhere compare two paths only if the fast one really runs: here it is proved"
    ps = [nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(4))]
    for p in ps: p.grad = torch.randn_like(p)
    opt = cls(ps); opt.step()
    assert opt.last_paths in (['foreach'], ['fused'])  # chapter 11 makes its fused path the default where it needs no compile step
    opt = cls(ps, foreach=True); opt.step()
    assert opt.last_paths == ['foreach']
    opt = cls(ps, foreach=False); opt.step()
    assert opt.last_paths == ['tensor']

@pytest.mark.parametrize('foreach', [False, True])
def test_the_direction_is_freed_after_its_last_reader(foreach):
    "00_core's memory claim: a stepper that does not read the direction runs after the direction's memory is gone"
    alive = {}
    @stepper()
    def new_direction(p, g, state):
        d = g * 2; alive['d'] = weakref.ref(d); return d
    @new_direction.foreach
    def _nd(ps, gs, states):
        ds = [g * 2 for g in gs]; alive['d'] = weakref.ref(ds[0]); return ds
    @stepper()
    def update(p, g, state):
        gc.collect(); alive['at_update'] = alive['d']() is not None
    @update.foreach
    def _up(ps, gs, states):
        gc.collect(); alive['at_update'] = alive['d']() is not None
    p = nn.Parameter(torch.ones(3)); p.grad = torch.ones(3)
    update.reads_direction = False
    Optimizer([p], [new_direction, update], foreach=foreach).step()
    assert alive['at_update'] is False
    update.reads_direction = True  # the negative control: a reader keeps it alive
    Optimizer([p], [new_direction, update], foreach=foreach).step()
    assert alive['at_update'] is True

def test_steppers_that_disagree_are_refused():
    lr_a = Stepper(lambda p, g, s, lr: None, {'lr': Hyper(1e-3, Interval(0.))})
    lr_b = Stepper(lambda p, g, s, lr: None, {'lr': Hyper(1e-2, Interval(0.))})
    lr_c = Stepper(lambda p, g, s, lr: None, {'lr': Hyper(1e-3, Interval(0., 1.))})
    p = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="disagree on the default of \\['lr'\\]"): Optimizer([p], [lr_a, lr_b])
    assert Optimizer([p], [lr_a, lr_b], lr=0.5).defaults['lr'] == 0.5  # the optimizer says which it means
    with pytest.raises(ValueError, match="disagree on hyper-parameter 'lr'"): Optimizer([p], [lr_a, lr_c], lr=0.5)

def test_unknown_names_reach_optbooks_own_check():
    "The named classes forward keywords to the engine, so a misspelt keyword meets optbook's message, not Python's"
    p = nn.Parameter(torch.zeros(1))
    for cls in (optbook.SGD, optbook.RMSprop, optbook.Adam, optbook.AdamW, optbook.RAdam):
        with pytest.raises(TypeError, match=f"{cls.__name__} got unknown hyper-parameter\\(s\\) \\['weight_decy'\\]; it takes: .*weight_decay"):
            cls([p], weight_decy=0.1)

def test_a_step_refused_moves_nothing():
    "A sparse gradient in a later group is found before an earlier group is updated: no half-done step"
    a = nn.Parameter(torch.ones(2)); a.grad = torch.ones(2)
    emb = nn.Embedding(3, 2, sparse=True); emb(torch.tensor([0])).sum().backward()
    opt = optbook.SGD([{'params': [a]}, {'params': emb.parameters()}], lr=0.1)
    with pytest.raises(RuntimeError, match='sparse'): opt.step()
    assert torch.equal(a.detach(), torch.ones(2))

def test_sgd_without_momentum_keeps_no_state():
    p = nn.Parameter(torch.ones(2)); p.grad = torch.ones(2)
    for foreach in (False, True):
        ours, ref = optbook.SGD([p], lr=0.1, foreach=foreach), torch.optim.SGD([p], lr=0.1, foreach=foreach)
        ours.step(); ref.step()
        assert ours.state_dict()['state'] == ref.state_dict()['state'] == {}

def test_torch_checkpoint_with_a_tensor_lr_continues():
    "A torch Adam checkpoint with a Tensor lr (foreach=None restored) loads and continues identically"
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)]
    grads = [[torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in init] for _ in range(10)]
    a, b = [nn.Parameter(t.clone()) for t in init], [nn.Parameter(t.clone()) for t in init]
    ta, tb = torch.optim.Adam(a, lr=torch.tensor(0.01)), torch.optim.Adam(b, lr=torch.tensor(0.01))
    def feed(opt, ps, gs):
        for g in gs:
            for p, x in zip(ps, g): p.grad = x.clone()
            opt.step()
    feed(ta, a, grads[:5]); feed(tb, b, grads[:5])
    ours = optbook.Adam(b); ours.load_state_dict(tb.state_dict())
    assert isinstance(ours.param_groups[0]['lr'], torch.Tensor) and ours.param_groups[0]['foreach'] is None
    feed(ta, a, grads[5:]); feed(ours, b, grads[5:])
    for x, y in zip(a, b): torch.testing.assert_close(x, y, rtol=1e-12, atol=0)

def _public_optimizer_classes():
    return {n: c for n, c in vars(optbook).items() if isinstance(c, type) and issubclass(c, optbook.Optimizer) and c is not optbook.Optimizer}

@pytest.mark.parametrize('name', sorted(_public_optimizer_classes()))
def test_help_tells_the_update_rule_and_every_argument(name):
    "What torch's docstrings tell, `help()` and IDEs see here too: the update rule, and a note for every argument"
    import inspect
    cls = _public_optimizer_classes()[name]
    doc = inspect.getdoc(cls)
    assert 'Update rule' in doc and doc.count('\n  1. ') == 1, doc
    for p in list(inspect.signature(cls.__init__).parameters)[1:]:
        line = next((l for l in doc.splitlines() if l.strip().startswith(p + '=') or l.strip().startswith(p + ':')), None)
        assert line and ':' in line and len(line.split(':', 1)[1].strip()) > 3, f"{name}: no note for {p!r}"

def _positional(cls):
    import inspect
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

def test_positional_arguments_in_the_references_order():
    "A call that passes arguments by position means the same here as in torch (timm for LARS and LAMB): RMSprop's capturable, foreach, maximize, differentiable included"
    import timm.optim
    refs = {optbook.SGD: torch.optim.SGD, optbook.SGDW: torch.optim.SGD, optbook.RMSprop: torch.optim.RMSprop, optbook.RMSpropW: torch.optim.RMSprop,
            optbook.Adam: torch.optim.Adam, optbook.AdamW: torch.optim.AdamW, optbook.RAdam: torch.optim.RAdam, optbook.LARS: timm.optim.Lars, optbook.LAMB: timm.optim.Lamb}
    for ours, ref in refs.items(): assert _positional(ours) == _positional(ref), (ours.__name__, _positional(ours), _positional(ref))
    p = nn.Parameter(torch.ones(2))
    g = optbook.RMSprop([p], 0.1, 0.9, 1e-8, 0., 0., False, False, False, True).param_groups[0]
    assert (g['capturable'], g['foreach'], g['maximize']) == (False, False, True)
    with pytest.raises(ValueError, match="Invalid caution: True; optbook's LAMB implements timm's Lamb with caution=False"):
        optbook.LAMB([p], 1e-3, True, (0.9, 0.999), 1e-6, 0.01, True, 1.0, False, False, True)

@pytest.mark.parametrize('name', ['SGD', 'RMSprop', 'RAdam'])
def test_tensor_lr_on_foreach_where_torch_takes_it(name):
    "torch 2.14 takes a Tensor lr on its multi-tensor path without capturable for SGD, RMSprop and RAdam (only Adam and AdamW refuse it): so does optbook, with torch's numbers"
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)]
    kw = dict(weight_decay=0.1, **({'momentum': 0.9} if name != 'RAdam' else {}))
    ours, ref = [nn.Parameter(t.clone()) for t in init], [nn.Parameter(t.clone()) for t in init]
    oo, ot = getattr(optbook, name)(ours, lr=torch.tensor(0.01), foreach=True, **kw), getattr(torch.optim, name)(ref, lr=torch.tensor(0.01), foreach=True, **kw)
    for _ in range(10):
        for a, b in zip(ours, ref): a.grad = torch.randn(a.shape, generator=gen, dtype=torch.float64); b.grad = a.grad.clone()
        oo.step(); ot.step()
    assert oo.last_paths == ['foreach']
    for a, b in zip(ours, ref): torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
