"Checks shared by the chapter-13 tests: checkpoints moved between an optbook optimizer and its reference mid-run, torch's compile recipe, a reference that clips first."
import copy, io, pickle, warnings
import torch
from torch import nn

SHAPES = ((4, 3), (3,), (2, 3, 2), (1,))

def _params(shapes, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]

def _with_groups(ps, groups):
    return [{'params': [p], **g} for p, g in zip(ps, groups)] if groups else [{'params': ps}]

def _grads(shapes, steps, seed, skip, dtype=torch.float64):
    "The gradient of every tensor at every step (None where that tensor skips the step), drawn once and shared by every run"
    gen = torch.Generator().manual_seed(seed + 1)
    return [[None if skip and torch.rand((), generator=gen) < skip else torch.randn(s, generator=gen, dtype=dtype) * 10 ** (i % 3 - 1)
             for i, s in enumerate(shapes)] for _ in range(steps)]

def _run(opt, ps, grads):
    for gs in grads:
        for p, g in zip(ps, gs): p.grad = None if g is None else (g + 0.1 * p.detach())
        opt.step()

def _saved(opt):
    "`opt.state_dict()` through torch.save and torch.load, as a checkpoint travels"
    buf = io.BytesIO(); torch.save(opt.state_dict(), buf); buf.seek(0)
    return torch.load(buf)

def moved_checkpoint_divergence(ours, ref, steps:int=30, move_at:int=12, groups=None, shapes=SHAPES, skip:float=0.25, seed:int=0) -> float:
    "Largest relative difference from the reference's own run, for runs whose state_dict moves reference -> optbook and optbook -> reference at `move_at`"
    grads = _grads(shapes, steps, seed, skip)
    full = _params(shapes, seed); _run(ref(_with_groups(full, groups)), full, grads)
    worst = 0.
    for first, second in ((ref, ours), (ours, ref)):
        ps = _params(shapes, seed)
        a = first(_with_groups(ps, groups)); _run(a, ps, grads[:move_at])
        b = second(_with_groups(ps, groups)); b.load_state_dict(_saved(a))
        _run(b, ps, grads[move_at:])
        worst = max(worst, max(((p - q).abs() / (1 + q.abs())).max().item() for p, q in zip(ps, full)))
    return worst

def compile_recipe(make, n_params:int=6, steps:int=5, seed:int=0, compiled:bool=True):
    """PyTorch's "compiling the optimizer" recipe: a Tensor lr (in `make`), an LR scheduler, `torch.compile(fullgraph=False)`
    around `opt.step()`. Returns the parameters after `steps` and the number of graphs after each step (None uncompiled)"""
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    ps = _params([(4, 3) if i % 2 else (3,) for i in range(n_params)], seed)
    opt = make(ps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (t + 1))
    counter = CompileCounter()
    def step(): opt.step()
    if compiled: step = torch.compile(step, fullgraph=False, backend=counter)
    gen, frames = torch.Generator().manual_seed(seed + 1), []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for _ in range(steps):
            for p in ps: p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            step(); sched.step(); frames.append(counter.frame_count if compiled else None)
    return ps, frames

def train_small(make_opt, scaler=None, n=12):
    "A 6-8-2 tanh net trained `n` steps in float64 with `make_opt` (through `scaler` when given): its final parameters, flat, and the optimizer"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    opt, gen = make_opt(model.parameters()), torch.Generator().manual_seed(1)
    for _ in range(n):
        x, y = torch.randn(16, 6, generator=gen, dtype=torch.float64), torch.randn(16, 2, generator=gen, dtype=torch.float64)
        opt.zero_grad(); loss = nn.functional.mse_loss(model(x), y)
        if scaler: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else: loss.backward(); opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), opt

def clipping_first(make_ref, max_norm:float):
    "`make_ref` (a factory of the reference optimizer) whose step first clips the gradients of all its groups to total norm `max_norm` with torch's clip_grad_norm_: what an optbook optimizer's max_grad_norm= is"
    def make(*args, **kw):
        opt = make_ref(*args, **kw)
        inner = opt.step
        def step(closure=None):
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g['params'] if p.grad is not None], max_norm)
            return inner(closure)
        opt.step = step
        return opt
    return make

def clones_continue_alike(opt):
    "A deep copy and a pickle round trip of a stepped `opt`: the same class and groups, and one more step (all-ones gradients) equal to the original's, bit for bit"
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(clone) is type(opt) and clone.state_dict()['param_groups'] == opt.state_dict()['param_groups']
        ref = copy.deepcopy(opt)  # the original stays as it was, for the next clone
        for o in (clone, ref):
            for q in o.param_groups[0]['params']: q.grad = torch.ones_like(q)
            o.step()
        for x, y in zip(clone.param_groups[0]['params'], ref.param_groups[0]['params']): assert torch.equal(x, y)
