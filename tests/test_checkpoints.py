"""Issue 21, item 2: a checkpoint whose state does not fit the parameters is refused by `load_state_dict` with a message
naming the group, the parameter, the state key and both shapes, before anything changes; and no state reachable from
Python makes a kernel read or write out of bounds (a (1,) state for a (4, 3) parameter used to end in SIGSEGV/SIGABRT)."""
import subprocess, sys, textwrap
import pytest, torch
from torch import nn
import optbook

CLASSES = {'SGD': dict(lr=0.1, momentum=0.9), 'SGDW': dict(lr=0.1, momentum=0.9, weight_decay=0.1), 'Adam': dict(lr=0.1, amsgrad=True),
           'AdamW': dict(lr=0.1), 'RMSprop': dict(lr=0.1, momentum=0.9, centered=True), 'RMSpropW': dict(lr=0.1, weight_decay=0.1),
           'RAdam': dict(lr=0.1), 'LARS': dict(lr=0.1, momentum=0.9, weight_decay=0.1), 'LAMB': dict(lr=0.1)}

def _trained(name, steps=2):
    "An optimizer of class `name` over a (4, 3) and a (3,) parameter in two groups, after `steps` steps"
    gen = torch.Generator().manual_seed(0)
    ps = [nn.Parameter(torch.randn(4, 3, generator=gen)), nn.Parameter(torch.randn(3, generator=gen))]
    opt = getattr(optbook, name)([{'params': [ps[1]]}, {'params': [ps[0]]}], **CLASSES[name])
    for _ in range(steps):
        for p in ps: p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return opt, ps

def _snapshot(opt):
    return {id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for p, s in opt.state.items()}

def _same(a, b):
    return a.keys() == b.keys() and all(a[i].keys() == b[i].keys() and all(torch.equal(x, b[i][k]) if isinstance(x, torch.Tensor) else x == b[i][k]
                                                                          for k, x in a[i].items()) for i in a)

@pytest.mark.parametrize('bad_shape', [(2, 4, 3), (12,), (40, 3), (1,), ()])
@pytest.mark.parametrize('name', sorted(CLASSES))
def test_a_state_of_another_shape_is_refused_before_anything_changes(name, bad_shape):
    opt, ps = _trained(name)
    sd = opt.state_dict()
    keys = [k for k, v in sd['state'][1].items() if isinstance(v, torch.Tensor) and v.dim() > 0]
    assert keys, sd['state'][1]
    target, _ = _trained(name, steps=3)  # a different state, to see that it stays
    before, groups_before = _snapshot(target), [dict(g) for g in target.param_groups]
    for k in keys:
        bad = opt.state_dict(); bad['state'][1] = bad['state'][1] | {k: torch.zeros(bad_shape)}  # torch's state_dict shares the live state dicts
        with pytest.raises(ValueError) as e: target.load_state_dict(bad)
        msg = str(e.value)
        missing = [w for w in (repr(k), 'parameter 0 in group 1', str(tuple(bad_shape)), '(4, 3)') if w not in msg]
        assert not missing, msg
        assert _same(_snapshot(target), before) and all(g.keys() == h.keys() for g, h in zip(target.param_groups, groups_before))
    target.load_state_dict(sd)  # the good checkpoint still loads

@pytest.mark.parametrize('name', sorted(CLASSES))
def test_a_step_counter_must_be_one_number(name):
    opt, _ = _trained(name)
    bad = opt.state_dict()
    if 'step' not in bad['state'][1]: pytest.skip(f"{name} keeps no per-parameter step")
    bad['state'][1] = bad['state'][1] | {'step': torch.zeros(3)}
    with pytest.raises(ValueError, match="'step' of parameter 0 in group 1 has shape \\(3,\\); it must be one number"): opt.load_state_dict(bad)

def test_a_torch_checkpoint_of_another_model_is_refused():
    "The issue's example: a 10-class head's checkpoint loaded into a 5-class model"
    big, small = nn.Linear(4, 10), nn.Linear(4, 5)
    ref = torch.optim.Adam(big.parameters()); big(torch.ones(1, 4)).sum().backward(); ref.step()
    with pytest.raises(ValueError, match="'exp_avg' of parameter 0 in group 0 has shape \\(10, 4\\); it must be its parameter's shape \\(5, 4\\)"):
        optbook.Adam(small.parameters()).load_state_dict(ref.state_dict())

def test_state_assigned_by_hand_never_crashes():
    "State written straight into `opt.state` skips load_state_dict: a state smaller than its parameter must meet an error, not a kernel reading past its end (in a subprocess: before the fix this killed the process)"
    script = textwrap.dedent(f'''
        import torch, optbook
        from torch import nn
        CLASSES = {CLASSES!r}
        for name, kw in CLASSES.items():
            p = nn.Parameter(torch.randn(4, 3)); p.grad = torch.randn(4, 3)
            opt = getattr(optbook, name)([p], **kw); opt.step()
            for k, v in list(opt.state[p].items()):
                if not isinstance(v, torch.Tensor) or v.dim() == 0: continue
                opt = getattr(optbook, name)([p], **kw); opt.step()
                opt.state[p][k] = torch.zeros(1)
                try:
                    p.grad = torch.randn(4, 3); opt.step()
                except RuntimeError: print('refused', name, k, opt.last_paths)
                else: print('ran', name, k, opt.last_paths)
        ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) >= len(CLASSES) and not any("'fused'" in l for l in lines), lines  # never handed to a kernel

def test_a_load_post_hook_sees_the_transform_keywords_restored():
    "Issue 21, item 6: torch's load_state_dict post-hooks run after the groups are complete (a torch checkpoint lacks optbook's transform keywords) and the transforms' counters are back"
    p = nn.Parameter(torch.ones(2)); p.grad = torch.tensor([float('nan'), 1.])
    src = optbook.Adam([p], skip_nonfinite=True); src.step()
    assert src.skipped_steps == 1
    seen = []
    opt = optbook.Adam([p], max_grad_norm=0.5)
    opt.register_load_state_dict_post_hook(lambda o: seen.append((o.param_groups[0].get('max_grad_norm', 'missing'), o.param_groups[0].get('skip_nonfinite', 'missing'), o.skipped_steps)))
    opt.load_state_dict(src.state_dict())
    opt.load_state_dict(torch.optim.Adam([p]).state_dict())
    assert seen == [(None, True, 1), (0.5, False, 0)], seen  # what the torch checkpoint lacks takes this optimizer's defaults
