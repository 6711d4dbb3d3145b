"RAdam against torch.optim.RAdam and against hand-written transcriptions of the paper's and the authors' rules; the variance simulation against the paper's numbers and an independent Monte Carlo of the model."
import math, random
import pytest, torch
from fresh_python import fresh_imports
from torch import nn
from optbook import (RAdam, Optimizer, max_divergence, radam_steppers, radam_step, radam_step_paper, radam_step_skip,
                     rectified_step, simulate_adaptive_lr, sma_length, rho_inf, rectification, psi_variance,
                     psi_variance_approx, effective_warmup, first_adaptive_step)

# ---------------------------------------------------------------- the simulation and the formulas

@pytest.fixture(scope='module')
def paper_run():
    return simulate_adaptive_lr(0.999, steps=6000, n=5000, mu=0., sigma=1., seed=0)

def test_simulation_matches_the_papers_setting(paper_run):
    var, var_rect = paper_run.var, paper_run.var_rect
    assert 0.2 < var[4] < 0.28                        # about 0.24 at step 5
    assert abs(var[-1] * 2 * 1999 - 1) < 0.1          # the plateau 1/(2 rho_inf) = 2.5e-4
    assert var[99] > 10 * var[-1]                     # still far from it at step 100
    assert var_rect[:4].isnan().all()                 # no rectification while rho_t <= 4
    assert (var_rect[19:] > 2.1e-4).all() and (var_rect[19:] < 2.7e-4).all()  # flat from step 20
    assert (var_rect[4:19] < 2.7e-4).all() and var_rect[4] < 1e-4             # below the plateau before

def test_simulation_with_other_seeds():
    "Var[psi_5] is itself a noisy estimate (psi_5 has a heavy tail), hence the wide band"
    for seed in (1, 2):
        run = simulate_adaptive_lr(0.999, steps=3000, n=3000, seed=seed)
        assert 0.15 < run.var[4] < 0.4 and (run.var_rect[30:] < 2.9e-4).all() and (run.var_rect[30:] > 2.0e-4).all()

def test_simulation_reuses_given_draws_and_scales_with_sigma():
    z = torch.randn(300, 500, generator=torch.Generator().manual_seed(3))
    a = simulate_adaptive_lr(0.99, steps=300, n=500, z=z, keep=(7,))
    b = simulate_adaptive_lr(0.99, steps=300, n=500, z=z, sigma=2., keep=(7,))
    assert torch.allclose(b.var, a.var / 4, rtol=1e-10)          # psi scales as 1/sigma when mu = 0
    assert torch.allclose(b.psi, a.psi / 2, rtol=1e-10)
    # psi at step 7 by hand from the same draws
    g2 = z[:7].double() ** 2
    v = sum(0.01 * 0.99 ** (6 - k) * g2[k] for k in range(7))
    assert torch.allclose(a.psi[0], ((1 - 0.99 ** 7) / v).sqrt(), rtol=1e-12)

def test_rho_and_r_by_hand():
    for b in (0.5, 0.9, 0.99, 0.999): assert abs(sma_length(1, b).item() - 1) < 1e-9
    for b in (0.9, 0.999): assert abs(sma_length(2, b).item() - (1 + 3 * b) / (1 + b)) < 1e-9
    r = rectification(sma_length(torch.tensor([10, 100, 1000]), 0.999), rho_inf(0.999))
    assert torch.allclose(r, torch.tensor([0.049, 0.215, 0.645], dtype=torch.float64), atol=6e-4)
    assert first_adaptive_step(0.999) == 6 and first_adaptive_step(0.999, 4.) == 5
    assert first_adaptive_step(0.6, 4.) is None and first_adaptive_step(0.66) is None

def test_psi_variance_against_a_monte_carlo_of_the_model():
    "Draw psi = sqrt(rho / X), X ~ chi2(rho), directly: an independent check of the closed form"
    gen = torch.Generator().manual_seed(0)
    for rho in (5., 12., 60.):
        x = torch.distributions.Chi2(torch.tensor(rho, dtype=torch.float64)).sample((400_000,))
        psi = (rho / x).sqrt()
        assert abs(psi.var().item() / psi_variance(rho).item() - 1) < 0.05, rho
    assert abs(psi_variance(5.).item() - (5 / 3 - 40 / (9 * math.pi))) < 1e-12
    assert abs(psi_variance_approx(7.).item() - 7 / (2 * 5 * 3)) < 1e-12
    assert abs(psi_variance_approx(1999.).item() / psi_variance(1999.).item() - 1) < 0.002

def test_effective_warmup_near_ma_yarats_rule_of_thumb():
    for b in (0.99, 0.999): assert abs(effective_warmup(b) / (2 / (1 - b)) - 1) < 0.1

# ---------------------------------------------------------------- RAdam against torch.optim.RAdam

def random_config(rng):
    kw = dict(lr=rng.choice([1e-3, 1e-2, 0.1]), betas=(rng.choice([0., 0.5, 0.9]), rng.choice([0.9, 0.99, 0.999])),
              eps=rng.choice([1e-8, 1e-4]), weight_decay=rng.choice([0., 1e-2, 0.1]),
              decoupled_weight_decay=rng.random() < 0.5, maximize=rng.random() < 0.3)
    groups = [{}, {'lr': kw['lr'] * 3}, {'weight_decay': 0.05, 'betas': (0.8, 0.95)}, {}]
    return kw, groups

@pytest.mark.parametrize('seed', range(6))
def test_equal_to_torch_radam(seed):
    rng = random.Random(seed)
    kw, groups = random_config(rng)
    for foreach in (False, True):
        d = max_divergence(lambda g: RAdam(g, foreach=foreach, **kw), lambda g: torch.optim.RAdam(g, foreach=foreach, **kw),
                           steps=120, skip=0.25, groups=groups, seed=seed)
        assert d < 1e-10, (kw, foreach, d)

def test_the_comparison_can_fail():
    assert max_divergence(lambda g: RAdam(g, lr=1e-2), lambda g: torch.optim.RAdam(g, lr=1e-2, eps=1e-3), steps=20) > 1e-6

def test_defaults_and_signature_match_torch():
    import inspect
    ours, theirs = inspect.signature(RAdam).parameters, inspect.signature(torch.optim.RAdam).parameters
    for name in ('lr', 'betas', 'eps', 'weight_decay', 'decoupled_weight_decay', 'maximize', 'foreach'):
        assert ours[name].default == theirs[name].default and ours[name].kind == theirs[name].kind, name
    p = nn.Parameter(torch.zeros(2))
    g = RAdam([p]).param_groups[0]
    assert (g['lr'], g['betas'], g['eps'], g['weight_decay'], g['decoupled_weight_decay'], g['maximize']) == (1e-3, (0.9, 0.999), 1e-8, 0, False, False)

def test_checkpoints_interchange_with_torch():
    kw = dict(lr=1e-2, weight_decay=0.1)
    def run(first, second, split):
        p = nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64))
        gen = torch.Generator().manual_seed(0)
        opt = first([p])
        for i in range(30):
            if i == split:
                nxt = second([p]); nxt.load_state_dict(opt.state_dict()); opt = nxt
            p.grad = torch.randn(6, generator=gen, dtype=torch.float64) + p.detach()
            opt.step()
        return p.detach()
    ref = run(lambda ps: torch.optim.RAdam(ps, **kw), lambda ps: torch.optim.RAdam(ps, **kw), 99)
    assert torch.allclose(run(lambda ps: torch.optim.RAdam(ps, **kw), lambda ps: RAdam(ps, **kw), 3), ref, rtol=0, atol=1e-12)
    assert torch.allclose(run(lambda ps: RAdam(ps, **kw), lambda ps: torch.optim.RAdam(ps, **kw), 12), ref, rtol=0, atol=1e-12)

def test_works_with_a_torch_scheduler():
    p = nn.Parameter(torch.ones(2))
    opt = RAdam([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2)
    p.grad = torch.ones(2); opt.step(); sched.step()
    assert abs(opt.param_groups[0]['lr'] - 0.075) < 1e-12

@pytest.mark.parametrize('kw,words', [
    (dict(lr=-1.), ('lr', '[0, inf)')), (dict(betas=(1., 0.999)), ('betas[0]', '[0, 1)')),
    (dict(betas=(0.9, 1.5)), ('betas[1]', '[0, 1)')), (dict(eps=-1e-8), ('eps', '[0, inf)')),
    (dict(weight_decay=-1.), ('weight_decay', '[0, inf)')), (dict(maximize='yes'), ('maximize', 'True or False')),
    (dict(decoupled_weight_decay=None), ('decoupled_weight_decay', 'True or False'))])
def test_bad_arguments_name_themselves(kw, words):
    with pytest.raises(ValueError) as e: RAdam([nn.Parameter(torch.zeros(1))], **kw)
    assert all(w in str(e.value) for w in words), str(e.value)

def test_unknown_names_are_errors():
    with pytest.raises(TypeError, match='unknown hyper-parameter.*beta'): RAdam([nn.Parameter(torch.zeros(1))], beta=(0.9, 0.99))
    with pytest.raises(ValueError, match='threshold'): rectified_step(2.)
    with pytest.raises(ValueError, match='below'): rectified_step(5., below='sgd')

# ---------------------------------------------------------------- the threshold conventions against transcriptions

class Transcribed(torch.optim.Optimizer):
    "RAdam written out from the paper's Algorithm 2 (`threshold=4`, momentum below) and the authors' code (`threshold=5`, no update below)"
    def __init__(self, params, lr, betas, eps, threshold, update_below):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.threshold, self.update_below = threshold, update_below
    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group['betas']
            r_inf = 2 / (1 - b2) - 1
            for p in group['params']:
                if p.grad is None: continue
                st = self.state[p]
                if not st: st.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                st['t'] += 1; t = st['t']
                st['m'] = b1 * st['m'] + (1 - b1) * p.grad
                st['v'] = b2 * st['v'] + (1 - b2) * p.grad ** 2
                m_hat = st['m'] / (1 - b1 ** t)
                r_t = r_inf - 2 * t * b2 ** t / (1 - b2 ** t)
                if r_t > self.threshold:
                    l_t = math.sqrt(1 - b2 ** t) / (st['v'].sqrt() + group['eps'])
                    rect = math.sqrt((r_t - 4) * (r_t - 2) * r_inf / ((r_inf - 4) * (r_inf - 2) * r_t))
                    p -= group['lr'] * rect * m_hat * l_t
                elif self.update_below: p -= group['lr'] * m_hat

@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('stepper,threshold,update_below', [(radam_step_paper, 4., True), (radam_step_skip, 5., False), (radam_step, 5., True)])
def test_conventions_equal_their_transcriptions(stepper, threshold, update_below, foreach):
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    ours = lambda g: Optimizer(g, radam_steppers[:-1] + [stepper], foreach=foreach, **kw)
    ref = lambda g: Transcribed(g, threshold=threshold, update_below=update_below, **kw)
    assert max_divergence(ours, ref, steps=100, skip=0.3) < 1e-10

def test_conventions_differ_from_each_other():
    kw = dict(lr=1e-2)
    make = lambda s: (lambda g: Optimizer(g, radam_steppers[:-1] + [s], **kw))
    assert max_divergence(make(radam_step_paper), make(radam_step), steps=10) > 1e-4
    assert max_divergence(make(radam_step_skip), make(radam_step), steps=10) > 1e-4

# ---------------------------------------------------------------- widgets without a browser

def test_widgets_module_imports_nothing_optional():
    mods = fresh_imports()['modules']  # a fresh interpreter's, after `import optbook.widgets`
    assert 'optbook.widgets' in mods and [m for m in ('matplotlib', 'ipywidgets') if m in mods] == []

def test_missing_ipywidgets_is_a_clear_error():
    out = fresh_imports()['without_ipywidgets']  # variance_explorer()'s ImportError, ipywidgets made unimportable
    assert out and 'ipywidgets' in out and 'optbook[viz]' in out, out

def test_explorer_redraws_when_a_slider_moves():
    pytest.importorskip('ipywidgets'); pytest.importorskip('matplotlib')
    from optbook.widgets import variance_explorer
    ex = variance_explorer(steps=300, n_max=600)
    png = bytes(ex.image.value)
    assert png.startswith(b'\x89PNG') and 'r<sub>t</sub> = 0.049' in ex.info.value
    ex.sliders['t'].value = 3
    assert bytes(ex.image.value) != png and 'undefined' in ex.info.value
    png = bytes(ex.image.value)
    ex.sliders['mu'].value = 5.
    assert bytes(ex.image.value) != png
