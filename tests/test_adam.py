"optbook.Adam against torch.optim.Adam: random configurations in float64, checkpoints, closure, bad arguments, CUDA."
import io, math, random
import pytest, torch
from torch import nn
import optbook
from equivalence import assert_random_problem_equal, assert_mixed_dtypes_equal
from optbook.core import max_divergence, Optimizer
from optbook.adam import Adam, adam_steppers

F64 = torch.float64

def random_config(rng):
    "Keyword arguments for Adam drawn at random over every option that changes the result"
    kw = dict(lr=10 ** rng.uniform(-4, -1), betas=(rng.choice([0., 0.5, 0.9, 0.99]), rng.choice([0.9, 0.99, 0.999, 0.9999])),
              eps=rng.choice([0., 1e-8, 1e-6, 1e-3]), amsgrad=rng.random() < 0.5, maximize=rng.random() < 0.3)
    if rng.random() < 0.6: kw.update(weight_decay=rng.choice([1e-4, 1e-2, 0.1]), decoupled_weight_decay=rng.random() < 0.5)
    if kw['eps'] == 0. and kw['betas'][0] > 0: kw['eps'] = 1e-10  # 0/0 only if a gradient is exactly 0; keep it away
    return kw

@pytest.mark.parametrize('seed', range(12))
def test_random_configs_equal_torch(seed):
    assert_random_problem_equal(Adam, torch.optim.Adam, random_config, seed)

def test_float32_and_mixed_dtypes_follow_torch():
    "A group holding float32 and float64 tensors follows torch bit for bit"
    assert_mixed_dtypes_equal(Adam, torch.optim.Adam, lr=0.01, amsgrad=True)

def _params(): return [nn.Parameter(torch.linspace(-1, 1, 6, dtype=F64).view(2, 3)), nn.Parameter(torch.ones(4, dtype=F64))]

def _feed(opt, ps, steps, seed, skip_second=False):
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        for j, q in enumerate(ps):
            g = torch.randn(q.shape, generator=gen, dtype=F64)
            q.grad = None if (skip_second and j == 1 and i % 3 == 0) else g
        opt.step()

def _roundtrip(sd):
    buf = io.BytesIO(); torch.save(sd, buf); buf.seek(0)
    return torch.load(buf, weights_only=True)

KW = dict(lr=0.02, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True)

def test_state_dict_roundtrip_is_bit_exact():
    a = _params(); oa = Adam(a, **KW); _feed(oa, a, 20, 0, skip_second=True)
    b = _params(); ob = Adam(b, **KW); _feed(ob, b, 10, 0, skip_second=True)
    sd = _roundtrip(ob.state_dict())
    c = [nn.Parameter(q.detach().clone()) for q in b]
    oc = Adam(c, lr=0.5)  # different hyper-parameters: the checkpoint's win
    oc.load_state_dict(sd)
    assert oc.param_groups[0]['lr'] == 0.02 and oc.param_groups[0]['amsgrad'] is True
    gen = torch.Generator().manual_seed(0)
    for i in range(20):
        gs = [torch.randn(q.shape, generator=gen, dtype=F64) for q in c]
        if i < 10: continue
        for j, (q, g) in enumerate(zip(c, gs)): q.grad = None if (j == 1 and i % 3 == 0) else g
        oc.step()
    for x, y in zip(a, c): assert torch.equal(x, y)
    assert oc.state[c[0]]['step'].item() == 20 and oc.state[c[1]]['step'].item() < 20

@pytest.mark.parametrize('foreach', [False, True])
def test_torch_checkpoint_loads_and_continues(foreach):
    a, b = _params(), _params()
    ta, tb = torch.optim.Adam(a, foreach=foreach, **KW), torch.optim.Adam(b, foreach=foreach, **KW)
    _feed(ta, a, 10, 0); _feed(tb, b, 10, 0)
    sd = _roundtrip(tb.state_dict())
    assert {'foreach', 'fused', 'capturable', 'differentiable'} <= set(sd['param_groups'][0])
    ours = Adam(b); ours.load_state_dict(sd)
    assert ours.param_groups[0]['fused'] is None and ours.param_groups[0]['differentiable'] is False  # torch's values, kept
    _feed(ta, a, 15, 1); _feed(ours, b, 15, 1)
    for x, y in zip(a, b): assert torch.equal(x, y)
    back = torch.optim.Adam(_params(), **KW); back.load_state_dict(ours.state_dict())  # and back to torch

def test_old_torch_checkpoint_without_new_keys():
    "Checkpoints from older torch versions lack decoupled_weight_decay and maximize: defaults fill them"
    p = _params(); t = torch.optim.Adam(p, lr=0.1); _feed(t, p, 2, 0)
    sd = t.state_dict()
    for k in ('decoupled_weight_decay', 'maximize', 'foreach', 'fused', 'capturable', 'differentiable'): sd['param_groups'][0].pop(k)
    ours = Adam(p); ours.load_state_dict(sd)
    g = ours.param_groups[0]
    assert g['decoupled_weight_decay'] is False and g['maximize'] is False and g['lr'] == 0.1
    _feed(ours, p, 2, 1)

def test_closure_and_no_grad_params():
    w, frozen = nn.Parameter(torch.tensor([3.], dtype=F64)), nn.Parameter(torch.tensor([1.], dtype=F64))
    opt = Adam([w, frozen], lr=0.1)
    calls = []
    def closure():
        calls.append(1); opt.zero_grad()
        loss = (w ** 2).sum(); loss.backward(); return loss
    loss = opt.step(closure)
    assert loss.item() == 9. and calls == [1]
    assert math.isclose(w.item(), 3 - 0.1 * 6 / (6 + 1e-8), rel_tol=1e-14)  # first step: lr * sign(g)
    assert frozen.item() == 1. and frozen not in opt.state

def test_scheduler_changes_lr():
    p = nn.Parameter(torch.zeros(1, dtype=F64)); opt = Adam([p], lr=1.)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    p.grad = torch.ones(1, dtype=F64); opt.step(); sched.step()
    assert math.isclose(opt.param_groups[0]['lr'], 0.1)

BAD = [('lr', -1e-3, 'lr'), ('lr', float('nan'), 'lr'), ('eps', -1e-8, 'eps'), ('eps', float('nan'), 'eps'),
       ('weight_decay', -1e-2, 'weight_decay'), ('weight_decay', float('nan'), 'weight_decay'),
       ('betas', (1.0, 0.999), 'betas[0]'), ('betas', (-0.1, 0.999), 'betas[0]'), ('betas', (0.9, 1.0), 'betas[1]'),
       ('betas', (0.9, float('nan')), 'betas[1]'), ('betas', (0.9,), 'betas'), ('betas', 0.9, 'betas'),
       ('amsgrad', 'no', 'amsgrad'), ('maximize', 1, 'maximize'), ('decoupled_weight_decay', None, 'decoupled_weight_decay'),
       ('foreach', 'yes', 'foreach')]

@pytest.mark.parametrize('name,value,word', BAD)
def test_bad_argument_raises_naming_itself(name, value, word):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word.replace('[', r'\[').replace(']', r'\]')): Adam([p], **{name: value})
    with pytest.raises(ValueError, match=word.replace('[', r'\[').replace(']', r'\]')): Adam([{'params': [p], name: value}])

def test_unknown_hyper_parameter_is_an_error():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match='unknown hyper-parameter.*beta1'): Adam([p], beta1=0.9)  # optbook's check, not Python's
    with pytest.raises(TypeError, match='unknown hyper-parameter.*weight_decy'): Optimizer([p], adam_steppers, weight_decy=0.1)
    with pytest.raises(ValueError, match='did you mean weight_decay'): Adam([{'params': [p], 'weight_decy': 0.1}])
    assert Adam([{'params': [p], 'lr_scale': 0.5}]).param_groups[0]['lr_scale'] == 0.5  # other libraries' keys are kept, as torch keeps them

def test_range_messages_name_the_valid_range():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=r'\[0, 1\)'): Adam([p], betas=(0.9, 1.5))
    with pytest.raises(ValueError, match=r'\[0, inf\)'): Adam([p], lr=-1.)

def test_top_level_api():
    assert optbook.Adam is Adam

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('foreach', [False, True])
def test_cuda_equals_torch(foreach):
    for kw in [{}, KW, dict(amsgrad=True, maximize=True, weight_decay=0.1)]:
        d = max_divergence(lambda g: Adam(g, foreach=foreach, **kw), lambda g: torch.optim.Adam(g, foreach=foreach, **kw),
                           steps=100, skip=0.2, device='cuda')
        assert d < 1e-10, (kw, d)
    p = nn.Parameter(torch.ones(3, device='cuda')); opt = Adam([p], foreach=foreach)
    p.grad = torch.ones(3, device='cuda'); opt.step()
    assert opt.state[p]['exp_avg'].device.type == 'cuda' and opt.state[p]['step'].device.type == 'cpu'
