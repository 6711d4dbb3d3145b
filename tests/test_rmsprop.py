"optbook.RMSprop against torch.optim.RMSprop: random configurations in float64, checkpoints, closure, bad arguments, CUDA."
import io, math, random
import pytest, torch
from torch import nn
import optbook
from equivalence import assert_random_problem_equal, assert_mixed_dtypes_equal
from optbook.core import max_divergence, Optimizer
from optbook.rmsprop import RMSprop, rmsprop_steppers

F64 = torch.float64

def random_config(rng):
    "Keyword arguments for RMSprop drawn at random over every option that changes the result"
    kw = dict(lr=10 ** rng.uniform(-4, -1), alpha=rng.choice([0., 0.5, 0.9, 0.99, 0.999]), eps=rng.choice([1e-10, 1e-8, 1e-6, 1e-3]),
              momentum=rng.choice([0., 0., 0.5, 0.9]), centered=rng.random() < 0.4, maximize=rng.random() < 0.3)
    if kw['centered'] and kw['alpha'] == 0.: kw['alpha'] = 0.9  # alpha=0 centered divides by sqrt(0) + eps: legal but degenerate
    if rng.random() < 0.5: kw['weight_decay'] = rng.choice([1e-4, 1e-2, 0.1])
    return kw

@pytest.mark.parametrize('seed', range(12))
def test_random_configs_equal_torch(seed):
    assert_random_problem_equal(RMSprop, torch.optim.RMSprop, random_config, seed)

def test_mixed_dtypes_follow_torch():
    "A group holding float32 and float64 tensors follows torch bit for bit"
    assert_mixed_dtypes_equal(RMSprop, torch.optim.RMSprop, lr=0.01, momentum=0.9, centered=True)

def _params(): return [nn.Parameter(torch.linspace(-1, 1, 6, dtype=F64).view(2, 3)), nn.Parameter(torch.ones(4, dtype=F64))]

def _feed(opt, ps, steps, seed, start=0):
    "Gradients `start`..`steps-1` of the stream `seed`; the second tensor skips every third step"
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        gs = [torch.randn(q.shape, generator=gen, dtype=F64) for q in ps]
        if i < start: continue
        for j, (q, g) in enumerate(zip(ps, gs)): q.grad = None if (j == 1 and i % 3 == 0) else g
        opt.step()

def _roundtrip(sd):
    buf = io.BytesIO(); torch.save(sd, buf); buf.seek(0)
    return torch.load(buf, weights_only=True)

KW = dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.01)

def test_state_dict_roundtrip_is_bit_exact():
    a = _params(); oa = RMSprop(a, **KW); _feed(oa, a, 20, 0)
    b = _params(); ob = RMSprop(b, **KW); _feed(ob, b, 10, 0)
    c = [nn.Parameter(q.detach().clone()) for q in b]
    oc = RMSprop(c); oc.load_state_dict(_roundtrip(ob.state_dict()))
    assert oc.param_groups[0]['centered'] is True and oc.param_groups[0]['momentum'] == 0.9
    _feed(oc, c, 20, 0, start=10)
    for x, y in zip(a, c): assert torch.equal(x, y)

@pytest.mark.parametrize('foreach', [False, True])
def test_torch_checkpoint_loads_and_continues(foreach):
    a, b = _params(), _params()
    ta, tb = torch.optim.RMSprop(a, foreach=foreach, **KW), torch.optim.RMSprop(b, foreach=foreach, **KW)
    _feed(ta, a, 10, 0); _feed(tb, b, 10, 0)
    sd = _roundtrip(tb.state_dict())
    assert {'foreach', 'capturable', 'differentiable'} <= set(sd['param_groups'][0])
    ours = RMSprop(b); ours.load_state_dict(sd)
    assert set(ours.state[b[0]]) == {'step', 'square_avg', 'momentum_buffer', 'grad_avg'}
    _feed(ta, a, 25, 1, start=10); _feed(ours, b, 25, 1, start=10)
    for x, y in zip(a, b): assert torch.equal(x, y)
    torch.optim.RMSprop(_params(), **KW).load_state_dict(ours.state_dict())  # and back to torch

def test_closure_and_no_grad_params():
    w, frozen = nn.Parameter(torch.tensor([3.], dtype=F64)), nn.Parameter(torch.tensor([1.], dtype=F64))
    opt = RMSprop([w, frozen], lr=0.01)
    def closure():
        opt.zero_grad(); loss = (w ** 2).sum(); loss.backward(); return loss
    assert opt.step(closure).item() == 9.
    assert math.isclose(w.item(), 3 - 0.01 * 6 / (math.sqrt(0.01 * 36) + 1e-8), rel_tol=1e-14)  # first step: lr / sqrt(1 - alpha)
    assert frozen.item() == 1. and frozen not in opt.state

def test_plain_rmsprop_keeps_no_extra_state():
    p = nn.Parameter(torch.ones(2)); opt = RMSprop([p])
    p.grad = torch.ones(2); opt.step()
    assert set(opt.state[p]) == {'step', 'square_avg'}

BAD = [('lr', -1e-3, 'lr'), ('lr', float('nan'), 'lr'), ('eps', -1e-8, 'eps'), ('weight_decay', -1e-2, 'weight_decay'),
       ('weight_decay', float('nan'), 'weight_decay'), ('alpha', -0.1, 'alpha'), ('alpha', 1.5, 'alpha'), ('alpha', float('nan'), 'alpha'),
       ('momentum', -0.1, 'momentum'), ('momentum', 1.0, 'momentum'), ('centered', 1, 'centered'), ('maximize', 'no', 'maximize'),
       ('foreach', 'yes', 'foreach')]

@pytest.mark.parametrize('name,value,word', BAD)
def test_bad_argument_raises_naming_itself(name, value, word):
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word): RMSprop([p], **{name: value})
    with pytest.raises(ValueError, match=word): RMSprop([{'params': [p], name: value}])

def test_unknown_hyper_parameter_is_an_error():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match='unknown hyper-parameter.*betas'): RMSprop([p], betas=(0.9, 0.99))
    with pytest.raises(TypeError, match='alpah'): Optimizer([p], rmsprop_steppers, alpah=0.9)

def test_top_level_api():
    assert optbook.RMSprop is RMSprop

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('foreach', [False, True])
def test_cuda_equals_torch(foreach):
    for kw in [{}, KW, dict(maximize=True, weight_decay=0.1)]:
        d = max_divergence(lambda g: RMSprop(g, foreach=foreach, **kw), lambda g: torch.optim.RMSprop(g, foreach=foreach, **kw),
                           steps=100, skip=0.2, device='cuda')
        assert d < 1e-10, (kw, d)
