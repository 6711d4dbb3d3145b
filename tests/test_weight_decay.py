"Randomized and integration checks of optbook.weight_decay against torch.optim in float64"
import copy, random
import pytest
from fresh_python import fresh_imports
import torch
from torch import nn
from optbook.core import max_divergence, Optimizer, maximize, count_step
from optbook.adam import Adam, ema_grad, ema_sq_grad, adam_step
from optbook.momentum import SGD
from optbook.rmsprop import RMSprop
from optbook.weight_decay import (AdamW, SGDW, RMSpropW, decoupled, decoupled_decay, scheduled_decay, param_groups,
                                  ParamGroups, NORM_LAYERS)


class DecayThenStep:
    "Reference: shrink by hand with each group's lr, then step a torch optimizer built without decay"
    def __init__(self, opt, wd): self.opt, self.wd = opt, wd
    @torch.no_grad()
    def step(self):
        for g in self.opt.param_groups:
            for p in g['params']:
                if p.grad is not None: p.mul_(1 - g['lr'] * self.wd)
        self.opt.step()


def random_adam_config(rng):
    return dict(lr=10 ** rng.uniform(-4, -1), betas=(rng.uniform(0, 0.99), rng.uniform(0.9, 0.9999)),
                eps=10 ** rng.uniform(-10, -4), weight_decay=rng.choice([0., 10 ** rng.uniform(-3, 0)]),
                amsgrad=rng.random() < 0.5, maximize=rng.random() < 0.3)


@pytest.mark.parametrize('seed', range(8))
def test_adamw_random_configs_match_torch(seed):
    rng = random.Random(seed)
    kw = random_adam_config(rng)
    groups = [{}, {'lr': kw['lr'] * 3, 'weight_decay': 0.05}, {'betas': (0.5, 0.95)}, {'weight_decay': 0.}]
    foreach = rng.choice([None, True, False])
    err = max_divergence(lambda g: AdamW(g, foreach=foreach, **kw), lambda g: torch.optim.AdamW(g, foreach=foreach, **kw),
                         steps=120, skip=0.25, groups=groups, seed=seed)
    assert err < 1e-10


@pytest.mark.parametrize('seed', range(4))
def test_decoupled_adam_is_torch_adamw(seed):
    kw = random_adam_config(random.Random(100 + seed))
    err = max_divergence(lambda g: decoupled(torch.optim.Adam)(g, **kw), lambda g: torch.optim.AdamW(g, **kw),
                         steps=120, skip=0.25, seed=seed, groups=[{}, {'weight_decay': 0.3}, {}, {'lr': 0.01}])
    assert err < 1e-10
    err = max_divergence(lambda g: decoupled(Adam)(g, **kw), lambda g: torch.optim.AdamW(g, **kw), steps=120, skip=0.25, seed=seed)
    assert err < 1e-10


@pytest.mark.parametrize('name', ['NAdam', 'RAdam'])
def test_decoupled_matches_torch_decoupled_option(name):
    cls = getattr(torch.optim, name)
    err = max_divergence(lambda g: decoupled(cls)(g, lr=0.01, weight_decay=0.2),
                         lambda g: cls(g, lr=0.01, weight_decay=0.2, decoupled_weight_decay=True), steps=150, skip=0.2)
    assert err < 1e-10


@pytest.mark.parametrize('kw', [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True), dict(momentum=0.8, dampening=0.3)])
@pytest.mark.parametrize('foreach', [False, True])
def test_sgdw_and_decoupled_sgd_match_hand_recipe(kw, foreach):
    ref = lambda g: DecayThenStep(torch.optim.SGD(g, lr=0.02, foreach=foreach, **kw), 0.3)
    assert max_divergence(lambda g: SGDW(g, lr=0.02, weight_decay=0.3, foreach=foreach, **kw), ref, steps=120, skip=0.2) < 1e-10
    assert max_divergence(lambda g: decoupled(torch.optim.SGD)(g, lr=0.02, weight_decay=0.3, foreach=foreach, **kw), ref, steps=120, skip=0.2) < 1e-10
    assert max_divergence(lambda g: decoupled(SGD)(g, lr=0.02, weight_decay=0.3, foreach=foreach, **kw), ref, steps=120, skip=0.2) < 1e-10


@pytest.mark.parametrize('kw', [dict(), dict(momentum=0.9), dict(centered=True), dict(centered=True, momentum=0.5, alpha=0.9)])
def test_rmspropw_matches_hand_recipe(kw):
    ref = lambda g: DecayThenStep(torch.optim.RMSprop(g, lr=1e-3, **kw), 0.3)
    assert max_divergence(lambda g: RMSpropW(g, lr=1e-3, weight_decay=0.3, **kw), ref, steps=120, skip=0.2) < 1e-10
    assert max_divergence(lambda g: decoupled(RMSprop)(g, lr=1e-3, weight_decay=0.3, **kw), ref, steps=120, skip=0.2) < 1e-10


def test_l2_equals_decoupled_only_without_momentum():
    sgd = max_divergence(lambda g: SGD(g, lr=0.05, weight_decay=0.2), lambda g: SGDW(g, lr=0.05, weight_decay=0.2), steps=200)
    mom = max_divergence(lambda g: SGD(g, lr=0.05, momentum=0.9, weight_decay=0.2), lambda g: SGDW(g, lr=0.05, momentum=0.9, weight_decay=0.2), steps=200)
    adam = max_divergence(lambda g: Adam(g, lr=0.05, weight_decay=0.2), lambda g: AdamW(g, lr=0.05, weight_decay=0.2), steps=200)
    assert sgd < 1e-12 and mom > 1e-3 and adam > 1e-3


def test_decoupled_under_scheduler_and_resume():
    torch.manual_seed(0)
    init = [torch.randn(5, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]

    def train(opt_cls, n_first, n_second, resume_cls=None):
        ps = [nn.Parameter(t.clone()) for t in init]
        opt = opt_cls(ps, lr=0.05, weight_decay=0.1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=n_first + n_second)
        gen = torch.Generator().manual_seed(1)
        def steps(opt, sched, n):
            for _ in range(n):
                for p in ps: p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) + p.detach()
                opt.step(); sched.step()
        steps(opt, sched, n_first)
        if resume_cls is not None:
            osd, ssd = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
            opt = resume_cls(ps, lr=1., weight_decay=0.)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=n_first + n_second)
            opt.load_state_dict(osd); sched.load_state_dict(ssd)
        steps(opt, sched, n_second)
        return ps, opt

    ref, _ = train(torch.optim.AdamW, 30, 30)
    for cls in (decoupled(torch.optim.Adam), decoupled(Adam)):
        ours, opt = train(cls, 30, 30, resume_cls=cls)
        assert opt.param_groups[0]['weight_decay'] == 0.1
        for a, b in zip(ours, ref): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ours, _ = train(AdamW, 30, 30, resume_cls=AdamW)
    for a, b in zip(ours, ref): torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_decoupled_closure_and_restores_weight_decay_on_error():
    w = nn.Parameter(torch.tensor([2.], dtype=torch.float64))
    opt = decoupled(torch.optim.SGD)([w], lr=0.1, weight_decay=0.5)
    def closure():
        opt.zero_grad(); loss = (w ** 2).sum(); loss.backward(); return loss
    assert opt.step(closure).item() == 4.
    # closure first (grad 2w = 4 at w=2), then shrink to 2*0.95 = 1.9, then the step 1.9 - 0.1*4 = 1.5
    assert torch.allclose(w.detach(), torch.tensor([1.5], dtype=torch.float64))

    class Boom(torch.optim.SGD):
        def step(self, closure=None): raise RuntimeError('boom')
    opt = decoupled(Boom)([w], lr=0.1, weight_decay=0.5)
    w.grad = torch.ones_like(w)
    with pytest.raises(RuntimeError, match='boom'): opt.step()
    assert opt.param_groups[0]['weight_decay'] == 0.5


def test_decoupled_errors():
    with pytest.raises(ValueError, match='opt_class'): decoupled(torch.optim.Rprop)
    with pytest.raises(ValueError, match='opt_class'): decoupled('Adam')
    with pytest.raises(ValueError, match='opt_class'): decoupled(nn.Linear)


def test_scheduled_decay_is_torch_decay_rescaled_by_base_lr():
    alpha, lam = 3e-3, 2e-3
    steppers = [maximize, count_step, scheduled_decay, ema_grad, ema_sq_grad, adam_step]
    class Cosine:
        "An optimizer and its cosine schedule, stepped together"
        def __init__(self, opt): self.opt, self.sched = opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, 100)
        def step(self): self.opt.step(); self.sched.step()
    cosine = lambda make: (lambda g: Cosine(make(g)))
    for foreach in (False, True):
        err = max_divergence(cosine(lambda g: Optimizer(g, steppers, lr=alpha, base_lr=alpha, decay_rate=lam, foreach=foreach)),
                             cosine(lambda g: torch.optim.AdamW(g, lr=alpha, weight_decay=lam / alpha)), steps=100, skip=0.2)
        assert err < 1e-10
    with pytest.raises(ValueError, match='base_lr'): Optimizer([nn.Parameter(torch.zeros(1))], steppers, decay_rate=0.1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.ln = nn.LayerNorm(8, elementwise_affine=True)
        self.gn = nn.GroupNorm(2, 8)
        self.out = nn.Linear(8, 3)
        self.scale = nn.Parameter(torch.ones(()))  # a 0-d parameter
        self.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)


def test_param_groups_default_rules():
    m = Net()
    pg = param_groups(m, 0.1)
    assert isinstance(pg, ParamGroups) and isinstance(pg, list)
    assert set(pg.decayed) == {'emb.weight', 'fc.weight', 'out.weight', 'frozen'}
    assert set(pg.excluded) == {'fc.bias', 'bn.weight', 'bn.bias', 'ln.weight', 'ln.bias', 'gn.weight', 'gn.bias', 'out.bias', 'scale'}
    assert 'in a BatchNorm1d' in pg.excluded['bn.weight'][1] and 'ndim 0 <= 1' in pg.excluded['scale'][1]
    report = pg.report()
    assert 'weight_decay=0.1 on 4 tensors' in report and 'gn.bias' in report and repr(pg) == report
    opt = torch.optim.AdamW(pg, lr=1e-3)  # torch takes the groups as they are
    assert [g['weight_decay'] for g in opt.param_groups] == [0.1, 0.]


def test_param_groups_by_name_and_type_only():
    m = Net()
    pg = param_groups(m, 0.1, no_decay=('bias', r'^ln\.'), exclude_ndim_le=None, exclude_types=())
    assert set(pg.excluded) == {'fc.bias', 'bn.bias', 'ln.weight', 'ln.bias', 'gn.bias', 'out.bias'}
    pg = param_groups(m, 0.1, exclude_ndim_le=None, exclude_types=(nn.Embedding,))
    assert set(pg.excluded) == {'emb.weight'}
    pg = param_groups(m, 0.1, exclude_ndim_le=None, exclude_types=())
    assert len(pg) == 1 and pg[0]['weight_decay'] == 0.1 and not pg.excluded


def test_param_groups_shared_parameter_listed_once():
    m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    m[1].weight = m[0].weight  # tied input and output embeddings
    pg = param_groups(m, 0.1)
    assert sum(len(g['params']) for g in pg) == 1


def test_param_groups_errors():
    m = Net()
    with pytest.raises(ValueError, match='LayerNorm'): param_groups(m, 0.1, no_decay=('bias', 'LayerNorm'))  # matches no name
    with pytest.raises(ValueError, match='tuple'): param_groups(m, 0.1, no_decay='bias')
    with pytest.raises(ValueError, match=r'\('): param_groups(m, 0.1, no_decay=('(',))
    with pytest.raises(ValueError, match='weight_decay'): param_groups(m, float('nan'))
    with pytest.raises(ValueError, match='weight_decay'): param_groups(m, '0.1')
    with pytest.raises(ValueError, match='exclude_ndim_le'): param_groups(m, 0.1, exclude_ndim_le=True)
    with pytest.raises(ValueError, match='exclude_types'): param_groups(m, 0.1, exclude_types=(int,))
    with pytest.raises(ValueError, match='model'): param_groups([nn.Parameter(torch.zeros(1))], 0.1)


def test_steppers_declare_torch_ranges():
    p = nn.Parameter(torch.zeros(1))
    for bad in (dict(lr=-1.), dict(weight_decay=-0.1), dict(eps=-1.), dict(amsgrad=1)):
        with pytest.raises(ValueError, match=next(iter(bad))): AdamW([p], **bad)
    with pytest.raises(TypeError, match='unknown hyper-parameter.*decoupled_weight_decay'): AdamW([p], decoupled_weight_decay=True)


def test_experiment_registered_and_module_is_torch_only():
    from optbook.experiments import EXPERIMENTS  # the experiment lives there, not in optbook.weight_decay
    assert 'wd-grid' in EXPERIMENTS
    mods = fresh_imports()['modules']  # a fresh interpreter's, after `import optbook.weight_decay`
    assert 'optbook.weight_decay' in mods
    assert [m for m in ('matplotlib', 'fastcore', 'nbdev', 'mnist1d', 'sklearn', 'ipywidgets') if m in mods] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_adamw_on_cuda_matches_torch():
    assert max_divergence(lambda g: AdamW(g, weight_decay=0.1), lambda g: torch.optim.AdamW(g, weight_decay=0.1), steps=50, device='cuda') < 1e-10
