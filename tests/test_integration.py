"optbook's optimizers inside the rest of the PyTorch ecosystem: schedulers, GradScaler, torch.compile, pickling, Lightning."
import copy, pickle, warnings
import pytest, torch
from torch import nn
import optbook

def engine_gd(params, lr=0.1): return optbook.Optimizer(params, [optbook.maximize, optbook.descend, optbook.count_step], lr=lr)

def _exported_optimizers():
    "Every optimizer class optbook exports, found in the package (not a hand-kept list), plus classes made by its factories"
    found = {n: c for n, c in vars(optbook).items() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not optbook.Optimizer}
    found['decoupled(torch Adam)'] = optbook.decoupled(torch.optim.Adam)
    found['decoupled(optbook Adam)'] = optbook.decoupled(optbook.Adam)
    for factory in ('clipped',):  # chapter 08's wrapper for torch's optimizers, where it exists
        if hasattr(optbook, factory): found[f'{factory}(torch SGD)'] = getattr(optbook, factory)(torch.optim.SGD)
    return found

ALL_CLASSES = _exported_optimizers()
CLASSES = {n: c for n, c in ALL_CLASSES.items() if n != 'MuonAdamW'}  # a pair of optimizers over two groups: tests/test_muon.py checks its pickle, checkpoints and schedules; Lightning below
SETTINGS = {'SGD': dict(momentum=0.9, nesterov=True, weight_decay=1e-3), 'SGDW': dict(momentum=0.9, weight_decay=1e-2),
            'RMSprop': dict(centered=True, momentum=0.5), 'Adam': dict(amsgrad=True, weight_decay=1e-2),
            'decoupled(torch Adam)': dict(weight_decay=0.1), 'decoupled(optbook Adam)': dict(weight_decay=0.1)}  # non-defaults where they matter

def _make(name, lr=1e-2):
    "A factory for the class called `name` with a learning rate and its interesting settings; chapter 13's classes that are no drop-in (`drop_in = False`) get what they need: Muon the matrices only, schedule-free its train mode"
    cls = ALL_CLASSES[name]
    def make(ps):
        if name == 'Muon': ps = [p for p in ps if p.ndim == 2]  # hidden matrices only; the biases stay put
        if name == 'MuonAdamW': ps = list(ps); ps = [{'params': [p for p in ps if p.ndim == 2], 'use_muon': True}, {'params': [p for p in ps if p.ndim != 2], 'use_muon': False}]
        opt = cls(ps, lr=lr, **SETTINGS.get(name, {}))
        if hasattr(opt, 'train') and not getattr(cls, 'drop_in', True): opt.train()  # schedule-free steps in train mode
        return opt
    return make

TORCH_TWINS = {  # optbook class: its torch.optim reference with the same settings
    'SGD': lambda ps: torch.optim.SGD(ps, lr=1e-2, **SETTINGS['SGD']), 'RMSprop': lambda ps: torch.optim.RMSprop(ps, lr=1e-2, **SETTINGS['RMSprop']),
    'Adam': lambda ps: torch.optim.Adam(ps, lr=1e-2, **SETTINGS['Adam']), 'AdamW': lambda ps: torch.optim.AdamW(ps, lr=1e-2),
    'RAdam': lambda ps: torch.optim.RAdam(ps, lr=1e-2), 'decoupled(torch Adam)': lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    'decoupled(optbook Adam)': lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)}

OPTIMIZERS = {'engine': (engine_gd, lambda ps: torch.optim.SGD(ps, lr=0.1))} | {n: (_make(n), ref) for n, ref in TORCH_TWINS.items()}

def test_discovery_finds_every_optimizer_of_the_book():
    assert {'SGD', 'RMSprop', 'Adam', 'AdamW', 'RAdam', 'SGDW', 'RMSpropW'} <= set(CLASSES), sorted(CLASSES)

def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).double()

def _batches(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 2, generator=g, dtype=torch.float64)) for _ in range(n)]

def _train(make_opt, sched=None, compile=False, scaler=None, n=20):
    model = _model()
    opt = make_opt(model.parameters())
    sch = sched(opt) if sched else None
    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        if scaler: scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else: loss.backward(); opt.step()
        return loss
    if compile: step = torch.compile(step, backend='eager')
    for x, y in _batches(n):
        step(x, y)
        if sch: sch.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_torch_lr_scheduler_drives_the_same_trajectory(name):
    ours, ref = OPTIMIZERS[name]
    sched = lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20)
    torch.testing.assert_close(_train(ours, sched), _train(ref, sched), rtol=1e-12, atol=1e-12)

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_grad_scaler_unscales_before_the_step(name):
    ours, ref = OPTIMIZERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # GradScaler warns when its device has no fp16 need
        a = _train(ours, scaler=torch.amp.GradScaler('cpu', init_scale=2.**8))
    torch.testing.assert_close(a, _train(ref), rtol=1e-12, atol=1e-12)

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_torch_compile_of_a_training_step(name):
    ours, ref = OPTIMIZERS[name]
    torch._dynamo.reset()
    # compiled, optbook's steppers read no number back from a tensor: the step counters stay tensors of the default dtype
    # (as torch.optim's compiled Adam and RAdam do), so with float64 as the default the compiled run must equal torch's eager
    # one to 1e-12 (with float32 counters 1 - beta2**t keeps 7 digits, compiled or not, in torch as in optbook)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try: torch.testing.assert_close(_train(ours, compile=True), _train(ref, compile=name == 'decoupled(torch Adam)'), rtol=1e-12, atol=1e-12)
    finally: torch.set_default_dtype(default)

@pytest.mark.parametrize('name', OPTIMIZERS)
def test_pickle_and_deepcopy(name):
    ours, _ = OPTIMIZERS[name]
    model = _model()
    opt = ours(model.parameters())
    model(torch.randn(3, 6, dtype=torch.float64)).sum().backward(); opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(clone) is type(opt) and clone.param_groups[0]['lr'] == opt.param_groups[0]['lr']
        for q in clone.param_groups[0]['params']: q.grad = torch.ones_like(q)
        clone.step()  # the clone still knows its update rule
    for p in model.parameters(): p.grad = torch.ones_like(p)
    opt.step()
    torch.testing.assert_close([q.detach() for q in clone.param_groups[0]['params']], [p.detach() for p in model.parameters()], rtol=0, atol=0)

@pytest.mark.parametrize('name', CLASSES)
def test_every_class_scheduler_scaler_compile(name):
    """For every exported class: a torch scheduler gives the same run as setting its lr by hand, GradScaler (a power-of-two
    scale, so unscaling is exact) the same run as no scaler, and a compiled training step the same run as an eager one"""
    make = _make(name)
    sched = lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.5 ** t)
    by_hand = []
    def manual(ps):
        opt = make(ps); base = [g['lr'] for g in opt.param_groups]
        class Halving:  # sets lr = base * 0.5**t before step t, as LambdaLR does
            t = 0
            def step(self):
                self.t += 1
                for g, b in zip(opt.param_groups, base): g['lr'] = b * 0.5 ** self.t
        by_hand.append(Halving())
        return opt
    plain = _train(make, n=8)
    torch.testing.assert_close(_train(make, sched, n=8), _train(manual, lambda o: by_hand[-1], n=8), rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.testing.assert_close(_train(make, scaler=torch.amp.GradScaler('cpu', init_scale=2.**8), n=8), plain, rtol=1e-12, atol=1e-12)
    if '(torch' in name: return  # compiled, torch's own step computes its bias corrections as float32 tensors: not the eager numbers
    if name in OPTIMIZERS: return  # compiled already, with these settings, 20 steps: test_torch_compile_of_a_training_step holds it to
    # torch's eager run at 1e-12, which its eager run equals at 1e-12 (test_grad_scaler_unscales_before_the_step); a compile is seconds
    torch._dynamo.reset()
    # compiled, a step reads no number back from its counters: they stay tensors of the default dtype, float64 here, so the
    # compiled run can be held to eager's numbers at 1e-12 (with float32 counters Adam's 1 - beta2**t keeps 7 digits)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try: torch.testing.assert_close(_train(make, compile=True, n=8), _train(make, n=8), rtol=1e-12, atol=1e-12)
    finally: torch.set_default_dtype(default)

@pytest.mark.parametrize('name', CLASSES)
def test_every_class_pickles_copies_saves_and_resumes(name, tmp_path):
    "For every exported class: pickle, deepcopy and torch.save of a trained optimizer each continue exactly like the original"
    make, batches = _make(name), _batches(8)
    def run(n0, n1, cut=None):
        model = _model(); opt = make(model.parameters())
        for i, (x, y) in enumerate(batches[n0:n1]):
            opt.zero_grad(); nn.functional.mse_loss(model(x), y).backward(); opt.step()
        return model, opt
    model, opt = run(0, 4)
    straight = [p.detach().clone() for p in run(0, 8)[0].parameters()]
    for how in ('pickle', 'deepcopy', 'torch.save'):
        m2 = _model(); m2.load_state_dict(model.state_dict())
        if how == 'pickle': o2 = pickle.loads(pickle.dumps(opt)); ps = o2.param_groups[0]['params']
        elif how == 'deepcopy': o2 = copy.deepcopy(opt); ps = o2.param_groups[0]['params']
        else:
            torch.save(opt.state_dict(), tmp_path / 'opt.pt')
            o2 = make(m2.parameters()); o2.load_state_dict(torch.load(tmp_path / 'opt.pt', weights_only=True)); ps = list(m2.parameters())
        assert type(o2) is type(opt)
        held = [any(p is q for q in opt.param_groups[0]['params']) for p in model.parameters()]  # Muon holds the matrices only
        if how != 'torch.save':  # the copy owns copies of the parameters: put them in a model
            with torch.no_grad():
                for p, q in zip([p for p, h in zip(m2.parameters(), held) if h], ps): p.copy_(q)
            copies = iter(ps)
            m2_params = [next(copies) if h else p for p, h in zip(m2.parameters(), held)]
        else: m2_params = list(m2.parameters())
        for x, y in batches[4:8]:
            o2.zero_grad()
            out = torch.func.functional_call(m2, dict(zip([k for k, _ in m2.named_parameters()], m2_params)), (x,))
            nn.functional.mse_loss(out, y).backward(); o2.step()
        torch.testing.assert_close([p.detach() for p in m2_params], straight, rtol=0, atol=0, msg=lambda m: f"{how}: {m}")

@pytest.mark.parametrize('name', ALL_CLASSES)
def test_lightning_trains_with_an_optbook_optimizer(name, tmp_path):
    L = pytest.importorskip('lightning')  # a dev dependency: installed by the test command
    class Module(L.LightningModule):
        def __init__(self):
            super().__init__(); self.net = _model().float()
        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)
        def configure_optimizers(self):
            opt = _make(name, lr=0.05)(self.parameters())
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
            return {'optimizer': opt, 'lr_scheduler': {'scheduler': sched, 'interval': 'step'}}
    xs, ys = zip(*_batches())
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(xs).float(), torch.cat(ys).float()), batch_size=16)
    m = Module()
    before = [p.detach().clone() for p in m.parameters()]
    L.Trainer(max_epochs=1, accelerator='cpu', logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(m, data)
    opt = m.trainer.optimizers[0]
    assert isinstance(opt, ALL_CLASSES[name]) and all(g['lr'] == 0.05 * 0.5 ** 4 for g in opt.param_groups)
    assert all(opt.state[p]['step'].item() == 20 for p in m.parameters() if 'step' in opt.state[p])
    held = {id(p) for g in opt.param_groups for p in g['params']}
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, m.parameters()) if id(b) in held)
