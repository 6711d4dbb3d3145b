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

def test_report_worst():
    "Runs last in this file: prints the worst relative differences (pytest -s shows them)"
    print({k: f'{v:.1e}' for k, v in WORST.items()})
    assert all(v <= 1e-12 for v in WORST.values())
