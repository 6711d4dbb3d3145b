"""Property-based: every optimizer class, on whatever hypothesis draws, gives its reference's numbers at every step.

For each example hypothesis draws an optimizer class and its hyper-parameters, 1-3 parameter groups with their own
hyper-parameters, parameters of several shapes and memory layouts (contiguous, transposed, sliced so not dense,
channels_last, or offset into a larger buffer) with hand-assigned gradients whose layout differs from the
parameter's, a dtype, a path (default, foreach=True, fused=True, foreach=False), a Tensor learning rate for classes whose
reference takes one, learning-rate changes between steps, skipped gradients and mid-run `state_dict` round trips
(optbook -> reference, reference -> optbook, optbook -> optbook on another path). The reference is torch's for-loop
(`foreach=False`) for SGD, RMSprop, Adam, AdamW and RAdam; timm's Lars and Lamb (for-loop) for LARS and LAMB; optbook's
own readable per-tensor path (`foreach=False, fused=False`) for SGDW and RMSpropW, which torch lacks. After every step:
each parameter within the dtype's tolerance of the reference's (tests/layouts.py says why each), each gradient as the
reference leaves it, the buffer elements a sliced or offset parameter does not view untouched, and `last_paths` never
calling a group 'fused' while it holds a tensor no kernel can walk. A second property corrupts checkpoints (a state of
shape (1,), flattened, with an extra dim or of another parameter's shape; a missing key; a step counter of two numbers)
and expects a ValueError that names the group, the parameter, the key (and both shapes where a shape is wrong), with the
optimizer's state untouched and its next steps still the reference's. It never steps on a checkpoint that was accepted: on code without the check that could crash
the process (a state of shape (1,) in a fused kernel reads and writes out of bounds).

Profiles: `default` (the default test command: derandomized, no database, so CI sees the same examples every run) and
`slow` (`HYPOTHESIS_PROFILE=slow`, run by `make slow`: fresh random examples each run). Examples per class are in
`PROFILES`; `--hypothesis-show-statistics` prints how many ran (and how many were set aside by an `assume`)."""
import copy, inspect, math, os, re
import pytest, torch
from torch import nn
import optbook
from layouts import laid_out, gaps, LAYOUTS, tolerance, divergence

hypothesis = pytest.importorskip('hypothesis')  # a dev dependency (settings.ini), like timm
from hypothesis import given, settings, note, assume, HealthCheck, strategies as st
timm_optim = pytest.importorskip('timm.optim')

PROFILES = {'default': dict(steps=60, corrupt=20), 'slow': dict(steps=600, corrupt=200)}  # examples per class: stepped runs, corrupted checkpoints
PROFILE = os.environ.get('HYPOTHESIS_PROFILE', 'default')
RUN = PROFILES[PROFILE]

def _settings(n):
    return settings(max_examples=n, derandomize=PROFILE == 'default', database=None, deadline=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------- hyper-parameters, per class
def log_uniform(lo, hi): return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10 ** e)
unit = st.floats(0., 0.99)
decay = st.one_of(st.just(0.), log_uniform(1e-4, 1e-1))
lr_adaptive = log_uniform(1e-4, 3e-2)

@st.composite
def sgd_hypers(draw, group=False):
    "SGD's (and SGDW's) keywords; `group`: the few a parameter group overrides"
    h = dict(lr=draw(log_uniform(1e-3, 0.3)), weight_decay=draw(decay))
    if group: return h | ({'momentum': draw(st.floats(0.1, 0.99))} if draw(st.booleans()) else {})
    momentum = draw(st.sampled_from([0., 0.9]) | unit)
    dampening = draw(st.just(0.) | st.floats(0., 0.5)) if momentum else 0.
    return h | dict(momentum=momentum, dampening=dampening, nesterov=momentum > 0 and dampening == 0 and draw(st.booleans()),
                    maximize=draw(st.booleans()))
# nesterov needs momentum > 0 in every group, so a group's own momentum is drawn in (0.1, 0.99)

@st.composite
def rmsprop_hypers(draw, group=False):
    "RMSprop's (and RMSpropW's) keywords; `group`: the few a parameter group overrides"
    h = dict(lr=draw(lr_adaptive), alpha=draw(st.floats(0.9, 0.999)), eps=draw(st.sampled_from([1e-8, 1e-6, 1e-3])), weight_decay=draw(decay))
    if group: return h
    return h | dict(momentum=draw(st.just(0.) | st.floats(0., 0.95)), centered=draw(st.booleans()), maximize=draw(st.booleans()))

betas = st.tuples(st.sampled_from([0., 0.9]) | st.floats(0., 0.99), st.sampled_from([0.999]) | st.floats(0.9, 0.9999))

@st.composite
def adam_hypers(draw, group=False, amsgrad=True, decoupled=True):
    "Adam's keywords (AdamW without `decoupled_weight_decay`, RAdam without `amsgrad`); `group`: the few a group overrides"
    h = dict(lr=draw(lr_adaptive), betas=draw(betas), eps=draw(st.sampled_from([1e-8, 1e-6, 1e-3])), weight_decay=draw(decay))
    if group: return h
    h |= dict(maximize=draw(st.booleans()))
    if amsgrad: h['amsgrad'] = draw(st.booleans())
    if decoupled: h['decoupled_weight_decay'] = draw(st.booleans())
    return h

@st.composite
def lars_hypers(draw, group=False):
    "timm's Lars keywords; `group`: the few a parameter group overrides"
    h = dict(lr=draw(log_uniform(1e-2, 3.)), weight_decay=draw(decay), trust_coeff=draw(log_uniform(1e-3, 1e-1)),
             eps=draw(st.sampled_from([1e-8, 0., 1e-3])))
    if group: return h
    momentum = draw(st.sampled_from([0., 0.9]) | unit)
    dampening = draw(st.just(0.) | st.floats(0., 0.5)) if momentum else 0.
    return h | dict(momentum=momentum, dampening=dampening, nesterov=momentum > 0 and dampening == 0 and draw(st.booleans()),
                    trust_clip=draw(st.booleans()), always_adapt=draw(st.booleans()))

@st.composite
def lamb_hypers(draw, group=False):
    "timm's Lamb keywords; `group`: the few a parameter group overrides"
    h = dict(lr=draw(lr_adaptive), betas=draw(betas), eps=draw(st.sampled_from([1e-6, 1e-8, 1e-3])), weight_decay=draw(decay))
    if group: return h
    return h | dict(bias_correction=draw(st.booleans()), grad_averaging=draw(st.booleans()), trust_clip=draw(st.booleans()),
                    always_adapt=draw(st.booleans()), max_grad_norm=draw(st.none() | st.just(1.) | log_uniform(1e-2, 1e2)))
# max_grad_norm clips over all groups: one value for the optimizer, never a group's own

def _readable(cls):
    "optbook's per-tensor path, the reference for a class torch lacks"
    return lambda groups, **kw: cls(groups, **kw, foreach=False, fused=False)

def _torch(cls): return lambda groups, **kw: cls(groups, **kw, foreach=False)

# name: (optbook class, reference maker, hyper strategy, does the reference take a Tensor lr, directions of a checkpoint swap)
CLASSES = {
    'SGD': (optbook.SGD, _torch(torch.optim.SGD), sgd_hypers, True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'SGDW': (optbook.SGDW, _readable(optbook.SGDW), sgd_hypers, True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'RMSprop': (optbook.RMSprop, _torch(torch.optim.RMSprop), rmsprop_hypers, True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'RMSpropW': (optbook.RMSpropW, _readable(optbook.RMSpropW), rmsprop_hypers, True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'Adam': (optbook.Adam, _torch(torch.optim.Adam), adam_hypers, True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'AdamW': (optbook.AdamW, _torch(torch.optim.AdamW), lambda group=False: adam_hypers(group, decoupled=False), True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'RAdam': (optbook.RAdam, _torch(torch.optim.RAdam), lambda group=False: adam_hypers(group, amsgrad=False), True, ('ours>ref', 'ref>ours', 'ours>ours')),
    'LARS': (optbook.LARS, _torch(timm_optim.Lars), lars_hypers, False, ('ours>ref', 'ref>ours', 'ours>ours')),
    'LAMB': (optbook.LAMB, _torch(timm_optim.Lamb), lamb_hypers, False, ('ref>ours', 'ours>ours')),  # timm's Lamb counts steps per group, not per tensor: it cannot read ours
}
TORCH_TWIN = {'SGD': torch.optim.SGD, 'SGDW': torch.optim.SGD, 'RMSprop': torch.optim.RMSprop, 'RMSpropW': torch.optim.RMSprop,
              'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'RAdam': torch.optim.RAdam}  # whose rules on Tensor hyper-parameters a class follows
PATHS = {'default': dict(), 'foreach': dict(foreach=True), 'fused': dict(fused=True), 'tensor': dict(foreach=False)}
GROUP_FLAGS = {'default': dict(foreach=None, fused=None), 'foreach': dict(foreach=True, fused=None),
               'fused': dict(foreach=None, fused=True), 'tensor': dict(foreach=False, fused=None)}
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# LAMB's half-precision steps are not held to a fixed number of ulps from timm's loop: the loop rounds a dozen operations to
# the dtype where Adam's kernel keeps float32, and without bias correction (beta2 0.9999, eps 1e-3) the update is about
# 100 lr, so a correct fused step in float16 lands 12 to 21 u from timm's (measured 5.97e-3 and 1.02e-2 after one step)
LOW_PRECISION_OUT = {'LAMB': [torch.float64, torch.float32]}

# ---------------------------------------------------------------- parameters and their layouts
GRAD_LAYOUTS = ('same',) + LAYOUTS  # same: `torch.empty_like(p)`, the parameter's strides where it is dense (what autograd gives)
NDIM = {'transposed': 2, 'channels_last': 4}  # layouts that need that many dims
@st.composite
def tensors(draw):
    "A parameter spec: its shape, its layout, and its gradient's layout"
    layout = draw(st.sampled_from(list(LAYOUTS)))
    ndim = NDIM.get(layout) or draw(st.integers(1, 3))
    lo = 2 if layout in ('transposed', 'channels_last') else 1  # a layout that differs from the contiguous one
    shape = tuple(draw(st.integers(lo, 5 if ndim < 4 else 3)) for _ in range(ndim))
    grad_layout = draw(st.sampled_from([l for l in GRAD_LAYOUTS if NDIM.get(l, ndim) == ndim]))
    return dict(shape=shape, layout=layout, grad_layout=grad_layout)

@st.composite
def problems(draw, name):
    "Everything one example needs, drawn"
    cls, ref, hypers, tensor_lr_ok, swaps = CLASSES[name]
    dtype = draw(st.sampled_from(LOW_PRECISION_OUT.get(name, DTYPES)), label='dtype')
    kw = draw(hypers(), label='hypers')
    if dtype is torch.float16 and 'eps' in kw: kw['eps'] = max(kw['eps'], 1e-3)  # in half 1e-8 is 0 and 1e-6 a coarse subnormal: the for-loop adds that, a kernel the float32 eps
    specs = draw(st.lists(tensors(), min_size=1, max_size=4), label='tensors')
    n_groups = draw(st.integers(1, min(3, len(specs))), label='groups')
    groups = [draw(hypers(group=True)) if i and draw(st.booleans()) else {} for i in range(n_groups)]
    path = draw(st.sampled_from(list(PATHS)), label='path')
    tensor_lr = tensor_lr_ok and draw(st.booleans(), label='tensor lr')
    steps = draw(st.integers(1, 8), label='steps')
    swap = draw(st.none() | st.tuples(st.integers(1, max(1, steps - 1)), st.sampled_from(swaps), st.sampled_from(list(PATHS))), label='swap at, direction, new path')
    scale = draw(st.sampled_from([10.] if dtype is torch.float16 else [1e-3, 1., 1e2]), label='gradient scale')  # half: (1 - beta2) g^2 must stay above 6e-5, where half's numbers get coarse
    skip = draw(st.sampled_from([0., 0.3]), label='skip probability')
    lr_change = draw(st.booleans(), label='lr changes between steps')
    seed = draw(st.integers(0, 2 ** 16), label='seed')
    return dict(name=name, dtype=dtype, kw=kw, specs=specs, groups=groups, path=path, tensor_lr=tensor_lr, steps=steps,
                swap=swap, scale=scale, skip=skip, lr_change=lr_change, seed=seed)

# ---------------------------------------------------------------- one run, compared at every step
def _split(params, groups):
    "Consecutive chunks of `params`, one per group dict"
    n = len(groups); k = -(-len(params) // n)
    chunks = [params[i * k:(i + 1) * k] for i in range(n)]
    return [{'params': c, **copy.deepcopy(g)} for c, g in zip(chunks, groups) if c]

def _lr_tensors(kw, groups, on):
    "A Tensor lr (float32, as `torch.tensor(0.01)` makes it) for the optimizer and every group that sets its own"
    if not on: return kw, groups
    return kw | {'lr': torch.tensor(kw['lr'])}, [g | ({'lr': torch.tensor(g['lr'])} if 'lr' in g else {}) for g in groups]

class Run:
    "The tested optimizer and the reference, on parameters of equal values and layouts, stepped with equal gradients"
    def __init__(self, prob):
        self.prob, self.cls, self.make_ref = prob, *CLASSES[prob['name']][:2]
        gen = self.gen = torch.Generator().manual_seed(prob['seed'])
        dtype = prob['dtype']
        init = [torch.randn(s['shape'], generator=gen, dtype=torch.float64) for s in prob['specs']]
        self.curv = [torch.rand(s['shape'], generator=gen, dtype=torch.float64) + 0.1 for s in prob['specs']]
        ours = [laid_out(x.to(dtype), s['layout']) for x, s in zip(init, prob['specs'])]
        theirs = [laid_out(x.to(dtype), s['layout']) for x, s in zip(init, prob['specs'])]
        self.ours, self.bases = [nn.Parameter(x) for x, _ in ours], [b for _, b in ours]
        self.theirs = [nn.Parameter(x) for x, _ in theirs]
        for p, s in zip(self.ours, prob['specs']): assert p.stride() == laid_out(torch.zeros(s['shape']), s['layout'])[0].stride(), 'nn.Parameter kept the layout'
        self.opt, self.path = self.build(self.cls, self.ours, PATHS[prob['path']]), prob['path']
        self.ref = self.build(self.make_ref, self.theirs, {})
        self.lrs = [float(g['lr']) for g in self.ref.param_groups]  # each group's lr, changed by `change_lr`

    def build(self, make, params, path):
        kw, groups = _lr_tensors(self.prob['kw'], self.prob['groups'], self.prob['tensor_lr'])
        return make(_split(params, groups), **kw, **path)

    def grads(self):
        "The next gradients (None where skipped), each laid out as its spec says: the same values for both"
        out = []
        for p, c, s in zip(self.theirs, self.curv, self.prob['specs']):
            if self.prob['skip'] and torch.rand((), generator=self.gen) < self.prob['skip']: out.append(None); continue
            noise = torch.randn(s['shape'], generator=self.gen, dtype=torch.float64)
            out.append((self.prob['scale'] * (c * p.detach().double() + noise)).to(p.dtype))
        return out

    def assign(self, params, values):
        "Hand `values` to `params` as their gradients, each in its spec's gradient layout"
        for p, v, s in zip(params, values, self.prob['specs']):
            if v is None: p.grad = None
            elif s['grad_layout'] == 'same': p.grad = torch.empty_like(p).copy_(v)
            else: p.grad = laid_out(v, s['grad_layout'])[0]

    def change_lr(self):
        "Both optimizers' lr times a factor in [0.5, 1.5), as a scheduler would"
        f = 0.5 + torch.rand((), generator=self.gen).item()
        self.lrs = [x * f for x in self.lrs]
        for opt in (self.opt, self.ref):
            for g, x in zip(opt.param_groups, self.lrs):
                if isinstance(g['lr'], torch.Tensor): g['lr'].fill_(x)  # in place, as torch's schedulers do (idempotent if shared)
                else: g['lr'] = x

    def swap(self, direction, path):
        "Carry on from a checkpoint: the other side's state_dict loaded into a new optimizer"
        if direction == 'ours>ref':
            new = self.build(self.make_ref, self.theirs, {})
            new.load_state_dict(copy.deepcopy(self.opt.state_dict()))
            for g in new.param_groups: g.update(foreach=False, fused=False)  # the checkpoint carries our path flags
            self.ref = new
        else:
            sd = (self.ref if direction == 'ref>ours' else self.opt).state_dict()
            new = self.build(self.cls, self.ours, PATHS[path])
            new.load_state_dict(copy.deepcopy(sd))
            for g in new.param_groups: g.update(GROUP_FLAGS[path])
            self.opt, self.path = new, path

    def check_paths(self, what):
        "`last_paths` owns up to a fallback: a group holding a tensor no kernel can walk (a non-dense parameter or gradient) is never recorded as all 'fused'"
        stepped = [g for g in self.opt.param_groups if any(p.grad is not None for p in g['params'])]
        assert len(stepped) == len(self.opt.last_paths), (what, self.opt.last_paths)
        spec = {id(p): s for p, s in zip(self.ours, self.prob['specs'])}
        for g, path in zip(stepped, self.opt.last_paths):
            own_copies = self.prob['name'] == 'LAMB' and self.prob['kw'].get('max_grad_norm') is not None  # LAMB's clip steps on dense copies of the gradients
            misfits = [p for p in g['params'] if p.grad is not None and not (p.is_contiguous() and (own_copies or p.grad.is_contiguous()))
                       and 'sliced' in (spec[id(p)]['layout'], 'same' if own_copies else spec[id(p)]['grad_layout']) and p.shape[-1] > 1]  # every other element: not dense
            assert not (misfits and path == 'fused'), f"{what}: a group with a non-dense tensor of shape {tuple(misfits[0].shape) if misfits else ''} is recorded as {path!r}"

    def check(self, t, what, grads=True):
        "Parameters and gradients equal to the reference's within the dtype's tolerance; the buffers' other elements untouched"
        tol = tolerance(self.prob['dtype'], t + 1, self.prob['tensor_lr'])
        for i, (a, b) in enumerate(zip(self.ours, self.theirs)):
            assume(bool(torch.isfinite(b).all()))  # the reference itself blew up: this example says nothing
            d = divergence(a, b)
            assert d <= tol, f"{what}: parameter {i} (shape {tuple(a.shape)}, layout {self.prob['specs'][i]['layout']}, grad layout {self.prob['specs'][i]['grad_layout']}) is {d:.3g} from the reference (tolerance {tol:.3g}); paths {self.opt.last_paths}"
            if grads and ((a.grad is None) != (b.grad is None) or (a.grad is not None and divergence(a.grad, b.grad) > tol)):
                raise AssertionError(f"{what}: parameter {i}'s gradient after the step is not the reference's (torch's and timm's for-loops leave it alone)")
        for i, (x, base) in enumerate(zip(self.ours, self.bases)):
            if base is not x and base.numel() != x.numel():
                assert not gaps(x, base).any(), f"{what}: a step wrote outside parameter {i}'s view of its buffer"

def _refused_like_torch(prob, path):
    "Is this a Tensor lr on a path where torch refuses one too (Adam's foreach=True)? Then a clear refusal is right"
    twin = TORCH_TWIN.get(prob['name'])
    if not (prob['tensor_lr'] and twin and path == 'foreach'): return False
    try:
        p = nn.Parameter(torch.zeros(2)); p.grad = torch.ones(2)
        kw = {k: v for k, v in prob['kw'].items() if k in inspect.signature(twin).parameters}
        twin([p], **kw | {'lr': torch.tensor(kw['lr'])}, foreach=True).step()
    except (ValueError, RuntimeError): return True
    return False

def run_problem(prob):
    "Step both optimizers `prob['steps']` times, comparing at every step"
    try: run = Run(prob)
    except (ValueError, RuntimeError):
        if _refused_like_torch(prob, prob['path']): return
        raise
    for t in range(prob['steps']):
        if prob['swap'] and prob['swap'][0] == t:
            try: run.swap(*prob['swap'][1:])
            except (ValueError, RuntimeError):
                if _refused_like_torch(prob, prob['swap'][2]): return
                raise
        if prob['lr_change'] and t: run.change_lr()
        gs = run.grads()
        run.assign(run.ours, gs); run.assign(run.theirs, gs)
        run.opt.step(); run.ref.step()
        run.check(t, f"step {t + 1}")
        run.check_paths(f"step {t + 1}")

@pytest.mark.parametrize('name', list(CLASSES))
@_settings(RUN['steps'])
@given(data=st.data())
def test_every_step_equals_the_reference(name, data): run_problem(data.draw(problems(name), label='problem'))

# ---------------------------------------------------------------- corrupted checkpoints
CORRUPTIONS = ('shape (1,)', 'flattened', 'extra dim', "another parameter's shape", 'missing key', 'counter of shape (2,)')
NAMES_SHAPES = CORRUPTIONS[:4]  # their errors name both shapes; a missing key or a counter that is not one number: key, group and parameter say it

def _shape_text(shape):
    "The ways a message may write a shape: (4, 3), [4, 3], torch.Size([4, 3])"
    t = tuple(shape)
    return (str(t), str(list(t)))

def _same_state(a, b) -> bool:
    "Two state_dicts equal key by key, tensors bit for bit"
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)): return type(a) is type(b) and len(a) == len(b) and all(map(_same_state, a, b))
    if isinstance(a, torch.Tensor): return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return a == b or (a != a and b != b)

@st.composite
def corrupted(draw, name):
    "A short run (float32 or float64, no skipped gradients, no swap) and the choices of what to corrupt in its checkpoint"
    prob = draw(problems(name), label='problem')
    prob |= dict(dtype=draw(st.sampled_from([torch.float64, torch.float32]), label='dtype'), skip=0., swap=None, tensor_lr=False,
                 specs=[s | dict(layout='contiguous', grad_layout='same') for s in prob['specs']],  # layouts are the other test's business
                 steps=draw(st.integers(1, 3), label='steps before the checkpoint'))
    return prob, draw(st.randoms(use_true_random=False), label='choices')

def corrupt(sd, params, kind, rng):
    "A copy of `sd` with one parameter's state damaged as `kind` says; (copy, group, index in group, index, key, bad shape, good shape), or None if `kind` does not apply"
    where = {}  # state_dict index -> (group, position in the group)
    for gi, g in enumerate(sd['param_groups']):
        for j, k in enumerate(g['params']): where[k] = (gi, j)
    idx = rng.choice(sorted(sd['state']))
    p, state = params[idx], sd['state'][idx]
    per_element = sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and v.shape == p.shape)
    bad = copy.deepcopy(sd)
    if kind == 'missing key':
        if len(state) < 2: return None  # without its only entry a state is a fresh one: torch's SGD starts its buffer again
        key = rng.choice(sorted(k for k in state if not (k == 'step' and 'step' in sd['param_groups'][where[idx][0]])))  # LAMB's count lives in the group (timm's): a tensor's copy of it is rebuilt each step
        del bad['state'][idx][key]
        return bad, *where[idx], idx, key, None, tuple(p.shape)
    if kind == 'counter of shape (2,)':  # a step counter must be one number: a fused kernel reads one
        if not isinstance(state.get('step'), torch.Tensor) or 'step' in sd['param_groups'][where[idx][0]]: return None
        bad['state'][idx]['step'] = state['step'].reshape(1).repeat(2)
        return bad, *where[idx], idx, 'step', (2,), ()
    if not per_element: return None
    key, v = rng.choice(per_element), None
    x = state[key]
    if kind == 'shape (1,)': v = x.flatten()[:1].clone()
    elif kind == 'flattened': v = x.flatten().clone()
    elif kind == 'extra dim': v = x.unsqueeze(rng.randrange(x.dim() + 1)).repeat_interleave(rng.choice([1, 2]), 0).clone()
    else:
        others = [q.shape for q in params if q.shape != p.shape]
        shape = rng.choice(others) if others else (p.shape[0] + 1, *p.shape[1:])
        v = torch.randn(shape, dtype=x.dtype)
    if v.shape == p.shape: return None  # (1,) for a (1,) parameter, a 1-D parameter flattened: not a corruption
    bad['state'][idx][key] = v
    return bad, *where[idx], idx, key, tuple(v.shape), tuple(p.shape)

def run_corruption(prob, rng):
    "Every corruption of one checkpoint, each on its own copy: each refused with a ValueError that names it, nothing changed"
    run = Run(prob)
    for t in range(prob['steps']):
        gs = run.grads(); run.assign(run.ours, gs); run.assign(run.theirs, gs)
        run.opt.step(); run.ref.step()
    sd = run.opt.state_dict()
    assume(sd['state'])  # plain SGD keeps no state: nothing to corrupt
    tried = 0
    for kind in CORRUPTIONS:
        made = corrupt(sd, run.ours, kind, rng)
        if made is None: continue
        tried += 1
        bad, group, pos, idx, key, bad_shape, good_shape = made
        what = f"{kind}: group {group}, parameter {pos} of the group ({idx} of the optimizer), key {key!r}, " + ('missing' if bad_shape is None else f"shape {bad_shape} for a parameter of shape {good_shape}")
        try: run.opt.load_state_dict(bad)
        except ValueError as e: msg = str(e)
        else: raise AssertionError(f"load_state_dict accepted a checkpoint: {what}")  # never step on it: on main that may crash the process
        assert key in msg and 'group' in msg, f"{what}: the error does not name the key and the group: {msg!r}"
        assert re.search(rf'\b{group}\b', msg) and (re.search(rf'\b{pos}\b', msg) or re.search(rf'\b{idx}\b', msg)), f"{what}: the error does not name group {group} and parameter {pos} (or {idx}): {msg!r}"
        for shape in ((good_shape, bad_shape) if kind in NAMES_SHAPES else ()):
            assert any(t in msg for t in _shape_text(shape)), f"{what}: the error does not name the shape {shape}: {msg!r}"
        assert _same_state(run.opt.state_dict(), sd), f"{what}: the refused checkpoint changed the optimizer's state"
    assume(tried)
    for t in range(prob['steps'], prob['steps'] + 2):  # and it carries on as if nothing happened
        gs = run.grads(); run.assign(run.ours, gs); run.assign(run.theirs, gs)
        run.opt.step(); run.ref.step()
        run.check(t, f"step {t + 1}, after {tried} refused checkpoints", grads=False)  # the gradients are the other test's business

@pytest.mark.parametrize('name', list(CLASSES))
@_settings(RUN['corrupt'])
@given(data=st.data())
def test_a_corrupted_checkpoint_is_refused(name, data): run_corruption(*data.draw(corrupted(name), label='corrupted'))
