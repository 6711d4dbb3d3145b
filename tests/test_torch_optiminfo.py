"""optbook against PyTorch's own optimizer test inputs.

torch ships, with every release, the configurations its optimizer tests run (`OptimizerInfo.optim_inputs_func`) and the
mistakes they must refuse (`optim_error_inputs_func`), in torch/testing/_internal/common_optimizers.py. Reading them at
test time means a new torch release's new cases are tried here automatically. Every configuration is run on optbook's
class and on torch's, fed identical gradients, and must give the same parameters; every error case must raise the same
error type with a message matching torch's."""
import sys, types, unittest, warnings, copy
import pytest, torch
from torch import nn
import optbook

def _common_optimizers():
    "torch's OptimizerInfo database, imported without torch's test-only dependencies: `expecttest` is only needed by its TestCase class"
    try: import expecttest  # noqa: F401
    except ImportError:
        stub = types.ModuleType('expecttest'); stub.TestCase = unittest.TestCase
        sys.modules['expecttest'] = stub
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        from torch.testing._internal import common_optimizers
    return common_optimizers

CO = _common_optimizers()
INFOS = {o.name: o for o in CO.optim_db}
OURS = {'SGD': optbook.SGD, 'RMSprop': optbook.RMSprop, 'Adam': optbook.Adam, 'AdamW': optbook.AdamW, 'RAdam': optbook.RAdam}

def _inputs(name):
    "Every configuration torch tests for `name`, on any device (the CUDA- and MPS-only ones too: we run them all on the CPU)"
    seen = {}
    for dev in ('cpu', 'cuda', 'mps'):
        for i in INFOS[name].optim_inputs_func(device=dev):
            if i.params is None: seen.setdefault(i.desc, i)
    return list(seen.values())

CASES = [(n, i) for n in OURS for i in _inputs(n)]

@pytest.fixture
def torch_capturable_on_cpu(monkeypatch):
    """Let torch's own capturable code run on the CPU, so that it is the reference for our capturable runs: torch only
    refuses the device there (its check lists cuda, xpu, hpu, xla); the arithmetic it would do on a GPU is the same"""
    import importlib
    for name in ('adam', 'adamw', 'radam', 'rmsprop', 'sgd'):
        mod = importlib.import_module(f'torch.optim.{name}')
        if hasattr(mod, '_get_capturable_supported_devices'):
            monkeypatch.setattr(mod, '_get_capturable_supported_devices', lambda supports_xla=True: ['cpu', 'cuda'])

def _run(make, params, steps, seed, dtype):
    opt = make(params)
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        for i, p in enumerate(params):
            if t % 4 == 3 and i == 1: p.grad = None; continue  # a tensor that skips a step
            g = torch.randn(p.shape, generator=gen, dtype=torch.complex128 if p.is_complex() else torch.float64).to(p.dtype)  # complex noise: no exact cancellations
            p.grad = g + 0.1 * p.detach()
        opt.step()
    return opt

def _params(dtype, complex_=False):
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 2)]
    ts = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    if complex_: ts = [torch.complex(t, torch.randn(t.shape, generator=gen, dtype=torch.float64)) for t in ts]
    return [nn.Parameter(t.to(dtype if not complex_ else (torch.complex128 if dtype == torch.float64 else torch.complex64))) for t in ts]

def _tensor_hyper(kw):
    return any(isinstance(v, torch.Tensor) for x in kw.values() for v in (x if isinstance(x, tuple) else (x,)))

def _paths(name, kw):
    "optbook's `foreach` values to try: each one torch accepts for this configuration"
    if 'foreach' in kw: return [kw['foreach']]
    refused = _refused_on_foreach(name, kw)
    return [None, False] if refused else [None, False, True]

def _refused_on_foreach(name, kw):
    "torch 2.14's rule: only Adam and AdamW refuse a Tensor hyper-parameter on the multi-tensor path without capturable (SGD, RMSprop, RAdam take it)"
    return _tensor_hyper(kw) and not kw.get('capturable') and name in ('Adam', 'AdamW')

def _worst(xs, ys):
    real = lambda t: torch.view_as_real(t.detach()) if t.is_complex() else t.detach()
    return max(((real(a) - real(b)).abs() / (1 + real(b).abs())).max().item() for a, b in zip(xs, ys))

@pytest.mark.parametrize('complex_', [False, True], ids=['real', 'complex'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
@pytest.mark.parametrize('name,inp', CASES, ids=[f'{n}-{i.desc}' for n, i in CASES])
def test_torch_config_same_numbers(name, inp, dtype, complex_, torch_capturable_on_cpu):
    """optbook's class against torch's on the path it took (torch's multi-tensor path where ours took the multi-tensor
    path): float64 equal to 1e-12 relative, float32 to 1e-6 relative"""
    kw = {k: v for k, v in inp.kwargs.items() if k != 'foreach'}
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for foreach in _paths(name, inp.kwargs):
        ours = _params(dtype, complex_)
        opt = _run(lambda ps: OURS[name](ps, **copy.deepcopy(kw), foreach=foreach), ours, 12, 1, dtype)
        assert set(opt.last_paths) <= {'tensor', 'foreach', 'fused'} and len(set(opt.last_paths)) == 1, opt.last_paths
        if foreach is False: assert opt.last_paths == ['tensor']
        if foreach: assert opt.last_paths == ['foreach']
        path = opt.last_paths[0]  # chapter 11's fused path (the default where its kernels apply) is checked against torch's multi-tensor path where torch accepts the configuration there
        ref_foreach = path == 'foreach' or (path == 'fused' and not _refused_on_foreach(name, kw))
        ref = _params(dtype, complex_)
        _run(lambda ps: getattr(torch.optim, name)(ps, **copy.deepcopy(kw), foreach=ref_foreach), ref, 12, 1, dtype)
        err = _worst(ours, ref)
        assert err <= tol, f"{name} {inp.desc} foreach={foreach} ({path} path): relative difference {err:.2e} > {tol:g}"

FUSED_CASES = [(n, i) for n, i in CASES if n in ('SGD', 'Adam', 'AdamW')]

@pytest.mark.parametrize('name,inp', FUSED_CASES, ids=[f'{n}-{i.desc}' for n, i in FUSED_CASES])
def test_torch_config_fused_same_numbers(name, inp):
    "optbook's fused=True against torch's fused=True on every configuration torch's fused kernel accepts: the same kernel, equal to 1e-12 in float64"
    kw = {k: v for k, v in inp.kwargs.items() if k not in ('foreach', 'fused')}
    ref = _params(torch.float64)
    try: _run(lambda ps: getattr(torch.optim, name)(ps, **copy.deepcopy(kw), fused=True), ref, 12, 1, torch.float64)
    except (RuntimeError, ValueError) as e: pytest.skip(f"torch's fused path refuses it: {e}")
    ours = _params(torch.float64)
    opt = _run(lambda ps: OURS[name](ps, **copy.deepcopy(kw), fused=True), ours, 12, 1, torch.float64)
    assert opt.last_paths == ['fused']
    assert _worst(ours, ref) <= 1e-12

ERRORS = [(n, e) for n in OURS for e in INFOS[n].optim_error_inputs_func(device='cpu', dtype=torch.float64)]

@pytest.mark.parametrize('name,err', ERRORS, ids=[f'{n}-{e.optimizer_error_input.desc}' for n, e in ERRORS])
def test_torch_error_inputs_refused_alike(name, err):
    inp = err.optimizer_error_input
    params = inp.params if inp.params is not None else [nn.Parameter(torch.randn(2, dtype=torch.float64))]
    cls, expect = OURS[name], pytest.warns if issubclass(err.error_type, Warning) else pytest.raises
    if err.error_on == CO.OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with expect(err.error_type, match=err.error_regex): cls(params, **inp.kwargs)
    else:
        opt = cls(params, **inp.kwargs)
        with expect(err.error_type, match=err.error_regex): opt.step()

def test_every_torch_input_is_tried():
    "The database is read, not empty: a torch release that renamed it would otherwise pass by testing nothing"
    counts = {n: len(_inputs(n)) for n in OURS}
    assert all(c >= 3 for c in counts.values()), counts
    assert len(ERRORS) >= 20
