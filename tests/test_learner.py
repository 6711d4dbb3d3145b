"The Learner: order of events, the recorder's contents, cancelling, schedules, and checkpoints that resume bit-exactly."
import math, subprocess, sys
from functools import partial
import pytest, torch
from torch import nn
import torch.nn.functional as F
from optbook.data import tensor_dls
from optbook.learner import (EVENTS, Callback, Learner, Recorder, SchedulerCallback, accuracy, set_seed, CancelFitException,
                             CancelEpochException, CancelBatchException, CancelStepException)


class Log(Callback):
    def __init__(self): self.events = []
for _ev in EVENTS: setattr(Log, _ev, lambda self, ev=_ev: self.events.append(ev))


def _data(n=12, n_valid=6, d=5, seed=0, bs=4):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n + n_valid, d, generator=g), torch.randint(0, 3, (n + n_valid,), generator=g)
    return tensor_dls(x[:n], y[:n], x[n:], y[n:], bs=bs, seed=seed)


def _learner(cbs=(), **kw):
    torch.manual_seed(0)
    return Learner(nn.Linear(5, 3), kw.pop('dls', None) or _data(), cbs=cbs, device='cpu', progress=False, **kw)


BATCH = ['before_batch', 'after_pred', 'after_loss', 'after_backward', 'before_step', 'after_step', 'after_batch']


def test_event_order():
    log = Log()
    _learner([log]).fit(2)  # 12 items, batches of 4: 3 batches per epoch
    epoch = ['before_epoch', 'before_train', *BATCH * 3, 'after_train', 'before_validate', 'after_validate', 'after_epoch']
    assert log.events == ['before_fit', *epoch * 2, 'after_fit']
    assert set(log.events) == set(EVENTS)


def test_callback_order_attribute_and_learn_state():
    seen = []
    class Late(Callback):
        order = 5
        def before_fit(self): seen.append('late')
    class Early(Callback):
        order = -5
        def before_fit(self): seen.append('early')
        def after_pred(self): seen.append((self.learn.training, self.learn.iter, self.learn.n_iter, self.learn.epoch, tuple(self.learn.pred.shape)))
    learn = _learner([Late(), Early])  # an instance and a class
    learn.fit(1)
    assert seen[:2] == ['early', 'late'] and seen[2:] == [(True, i, 3, 0, (4, 3)) for i in range(3)]
    assert isinstance(learn.cbs[0], Recorder)  # the recorder runs first
    learn.remove_cb(Late)
    assert not any(type(c).__name__ == 'Late' for c in learn.cbs)


@pytest.mark.parametrize('exc,expected', [
    (CancelBatchException, lambda ev: ev.count('after_batch') == 3 and ev.count('after_loss') == 0),
    (CancelEpochException, lambda ev: 'after_epoch' in ev and 'before_validate' not in ev and ev.count('before_batch') == 1),
    (CancelFitException, lambda ev: ev[-1] == 'after_fit' and 'after_epoch' not in ev),
])
def test_cancel(exc, expected):
    class Raise(Callback):
        def after_pred(self): raise exc()
    log = Log()
    _learner([Raise(), log]).fit(1)
    assert expected(log.events), log.events


def test_cancel_step_keeps_weights_and_zeroes_grads():
    class NoStep(Callback):
        def before_step(self): raise CancelStepException()
    learn = _learner([NoStep()], opt_func=torch.optim.SGD, lr=1.)
    w = [p.detach().clone() for p in learn.model.parameters()]
    learn.fit(1)
    assert all(torch.equal(a, b) for a, b in zip(w, learn.model.parameters()))
    assert all(p.grad is None or (p.grad == 0).all() for p in learn.model.parameters())


def test_recorder_contents():
    learn = _learner(opt_func=partial(torch.optim.SGD, momentum=0.5), lr=0.1)
    learn.fit(3)
    r = learn.recorder
    assert len(r.losses) == len(r.lrs) == len(r.moms) == len(r.grad_norms) == 9
    assert r.lrs == [0.1] * 9 and r.moms == [0.5] * 9 and r.epoch_iters == [3, 6, 9]
    assert r.metric_names == ['train_loss', 'valid_loss', 'accuracy'] and all(len(v) == 3 for v in r.values)
    # the epoch's train loss is the batch-size weighted mean of its batch losses (all batches have 4 items here)
    assert all(math.isclose(r.values[e][0], sum(r.losses[3 * e:3 * e + 3]) / 3, rel_tol=1e-9) for e in range(3))
    # the last epoch's validation numbers are those of the final model on the validation set
    x, y = learn.dls.valid.dataset.tensors
    with torch.no_grad(): pred = learn.model(x)
    assert math.isclose(r.values[-1][1], F.cross_entropy(pred, y).item(), rel_tol=1e-6)
    assert r.values[-1][2] == (pred.argmax(1) == y).float().mean().item()
    assert learn.validate() == r.values[-1][1:]


def test_recorder_first_grad_norm_and_loss_by_hand():
    learn = _learner(opt_func=torch.optim.SGD, lr=0.)  # lr 0: the model never moves
    batches = []
    class Keep(Callback):
        def before_batch(self): batches.append((self.learn.xb, self.learn.yb))
    learn.fit(1, cbs=[Keep()])
    m = learn.model
    for (xb, yb), loss, gn in zip(batches, learn.recorder.losses, learn.recorder.grad_norms):
        m.zero_grad(); l = F.cross_entropy(m(xb), yb); l.backward()
        # the gradient of softmax cross-entropy for a linear layer, derived by hand: (softmax - onehot)^T x / n
        dz = (F.softmax(m(xb), 1) - F.one_hot(yb, 3)) / len(yb)
        by_hand = torch.cat([(dz.T @ xb).flatten(), dz.sum(0)]).norm()
        assert loss == l.item() and math.isclose(gn, by_hand.item(), rel_tol=1e-5)


def test_moms_for_adam_and_none():
    learn = _learner(opt_func=partial(torch.optim.Adam, betas=(0.8, 0.99))); learn.fit(1)
    assert learn.recorder.moms == [0.8] * 3
    learn = _learner(opt_func=torch.optim.Adagrad); learn.fit(1)
    assert learn.recorder.moms == [None] * 3


def test_scheduler_callback_and_fit_lr():
    learn = _learner([SchedulerCallback(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1)))], lr=0.6)
    learn.fit(1)
    assert learn.recorder.lrs == [0.6, 0.3, 0.6 / 3]
    learn = _learner([SchedulerCallback(lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), per_epoch=True)], lr=0.4)
    learn.fit(2)
    assert learn.recorder.lrs == [0.4] * 3 + [0.2] * 3
    learn = _learner(lr=0.4); learn.fit(1, lr=0.05)
    assert learn.recorder.lrs == [0.05] * 3 and learn.opt.param_groups[0]['lr'] == 0.05


def test_splitter_param_groups():
    def splitter(m): return [dict(params=[m.weight]), dict(params=[m.bias], lr=0.)]
    learn = _learner(opt_func=torch.optim.SGD, lr=0.1, splitter=splitter)
    b = learn.model.bias.detach().clone()
    learn.fit(1)
    assert len(learn.opt.param_groups) == 2 and torch.equal(learn.model.bias, b)


def test_bad_arguments():
    learn = _learner()
    with pytest.raises(ValueError, match='n_epoch'): learn.fit(-1)
    with pytest.raises(FileNotFoundError, match='nothere'): learn.load('nothere.pt')


def _resumable(init_seed, sched=True):
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    cbs = [SchedulerCallback(lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=4 * 5))] if sched else []
    return Learner(model, _data(n=20, bs=4, seed=1), opt_func=torch.optim.Adam, lr=0.01, cbs=cbs, device='cpu', progress=False)


@pytest.mark.parametrize('sched', [True, False])
def test_checkpoint_resume_is_bit_exact(tmp_path, sched):
    straight = _resumable(0, sched); straight.fit(4)
    first = _resumable(0, sched); first.fit(2)
    first.save(tmp_path/'c.pt')
    resumed = _resumable(99, sched).load(tmp_path/'c.pt')  # other initial weights, fresh optimizer and loaders
    resumed.fit(2)
    assert resumed.epoch == straight.epoch == 4 and resumed.train_iter == 20
    r, s = resumed.recorder, straight.recorder
    assert r.losses == s.losses and r.values == s.values and r.lrs == s.lrs and r.moms == s.moms and r.grad_norms == s.grad_norms
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()): assert torch.equal(a, b)
    sa, sb = straight.opt.state_dict(), resumed.opt.state_dict()
    for k in sa['state']:
        for name in sa['state'][k]: assert torch.equal(sa['state'][k][name], sb['state'][k][name])


def test_resume_needs_the_data_order(tmp_path):
    straight = _resumable(0); straight.fit(3)
    first = _resumable(0); first.fit(2); first.save(tmp_path/'c.pt')
    resumed = _resumable(0).load(tmp_path/'c.pt')
    resumed._pending['data_rng'] = None
    resumed.fit(1)
    assert resumed.recorder.losses[:10] == straight.recorder.losses[:10] and resumed.recorder.losses[10:] != straight.recorder.losses[10:]


def test_load_without_opt_and_weights_now(tmp_path):
    a = _resumable(0, sched=False); a.fit(1); a.save(tmp_path/'c.pt')
    b = _resumable(5, sched=False).load(tmp_path/'c.pt', with_opt=False)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))  # before any fit
    b.fit(1)
    assert b.opt.state_dict()['state'][0]['step'] == 5  # a fresh Adam: 5 steps, not 10


def test_works_with_optbook_optimizer():
    optbook = pytest.importorskip('optbook')
    if not hasattr(optbook, 'SGD'): pytest.skip('optbook.SGD not built yet')
    a = _learner(opt_func=partial(torch.optim.SGD, momentum=0.9), lr=0.05); a.fit(2)
    b = _learner(opt_func=partial(optbook.SGD, momentum=0.9), lr=0.05); b.fit(2)
    torch.testing.assert_close(a.recorder.losses, b.recorder.losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='mixed precision runs on CUDA only')
def test_mixed_precision_cuda():
    torch.manual_seed(0)
    learn = Learner(nn.Linear(5, 3), _data(), device='cuda', mixed_precision=True, progress=False)
    learn.fit(2)
    assert learn.scaler is not None and all(math.isfinite(l) for l in learn.recorder.losses)


def test_mixed_precision_off_on_cpu():
    assert _learner(mixed_precision=True).mixed_precision is False


def test_grad_scaler_path_gives_the_same_numbers():
    "The loss-scaling path, run on CPU with a scaler of 2**16: scaling by a power of two and back is exact"
    class SkipSome(Callback):
        def before_step(self):
            if self.learn.iter == 1: raise CancelStepException()
        def after_backward(self):
            if self.learn.iter == 2 and self.learn.epoch == 1: raise CancelBatchException()
    plain = _learner([SkipSome()]); plain.fit(2)
    scaled = _learner([SkipSome()])
    scaled.scaler = torch.amp.GradScaler('cpu', init_scale=2.**16)
    scaled.fit(2)
    assert scaled.recorder.losses == plain.recorder.losses and scaled.recorder.grad_norms == plain.recorder.grad_norms
    assert all(torch.equal(a, b) for a, b in zip(plain.model.parameters(), scaled.model.parameters()))


def test_progress_table_and_bar(capsys):
    from optbook.learner import ProgressCallback
    torch.manual_seed(0)
    learn = Learner(nn.Linear(5, 3), _data(), device='cpu', progress=False, cbs=[ProgressCallback(bar=True)])
    learn.fit(2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ['epoch', 'train_loss', 'valid_loss', 'accuracy', 'time'] and len(lines) == 3
    assert lines[2].split()[0] == '1' and float(lines[2].split()[2]) == pytest.approx(learn.recorder.values[1][1], abs=1e-6)
    assert '[' + '#' * 30 + '] 3/3' in err


def test_live_bar_uses_tqdm_and_prints_the_table_once(capsys):
    pytest.importorskip('tqdm')
    from optbook.learner import ProgressCallback
    learn = Learner(nn.Linear(5, 3), _data(), device='cpu', progress=False, cbs=[ProgressCallback(notebook=True)])
    learn.fit(2)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:2] == ['epoch', 'train_loss'] and [l.split()[0] for l in lines[1:]] == ['0', '1']
    assert '6/6' in err  # tqdm's text bar (no Jupyter here) counted the 3 batches of each of the 2 epochs


def test_live_bar_without_tqdm_falls_back_to_a_line_per_epoch(capsys, monkeypatch):
    from optbook.learner import ProgressCallback
    monkeypatch.setitem(sys.modules, 'tqdm.auto', None)  # `from tqdm.auto import tqdm` now raises ImportError
    learn = Learner(nn.Linear(5, 3), _data(), device='cpu', progress=False, cbs=[ProgressCallback(notebook=True, bar=False)])
    learn.fit(2)
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and err == ''
