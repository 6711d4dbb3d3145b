"Chapter 14's shootout: its optimizer list follows the package, its table is computed as the chapter says, and a quick run works end to end."
import pytest
from optbook.distributed import optimizer_classes
from optbook.experiments import shootout, shootout_optimizers, _shoot_table

def test_every_exported_optimizer_joins_the_shootout():
    assert {name for name, _ in shootout_optimizers().values()} == set(optimizer_classes()) - {'SGDW', 'RMSpropW'}
    assert {'SGD', 'SGD momentum', 'Nesterov', 'RMSprop', 'Adam', 'AMSGrad', 'AdamW', 'RAdam'} <= set(shootout_optimizers())

def _row(opt, seed, acc, losses):
    return dict(task='t', optimizer=opt, schedule='constant', seed=seed, lr=0.1, acc=acc, losses=losses, ms_step=2., cpu_ms_step=1.)

def test_table_by_hand():
    # constant losses smooth to themselves: finals 1, 2, 3, 4, so the median target is 2.5; A's runs are at or below it from step 1
    rows = [_row('A', 0, 0.5, [1.] * 3), _row('A', 1, 0.7, [2.] * 3), _row('B', 0, 0.2, [3.] * 3), _row('B', 1, 0.4, [4.] * 3)]
    (a, b), target = _shoot_table(rows)
    assert target == {'t': pytest.approx(2.5)}
    assert (a['acc_mean'], a['acc_min'], a['acc_max'], b['acc_mean']) == (0.6, 0.5, 0.7, 0.3)
    assert (a['reached'], a['steps_to_target'], b['reached'], b['steps_to_target']) == ('2/2', 1, '0/2', None)
    assert (a['ms_step'], a['cpu_ms_step']) == (2., 1.)

def test_quick_shootout_runs_end_to_end():
    pytest.importorskip('sklearn')
    res = shootout(quick=True, tasks=('digits_mlp',), workers=1)
    assert {(r['optimizer'], r['schedule']) for r in res.table} == {(o, s) for o in ('SGD momentum', 'Adam') for s in ('constant', '1cycle')}
    assert all(0 <= r['acc_mean'] <= 1 and r['cpu_ms_step'] > 0 for r in res.table)
    assert sum(r['reached'] == '1/1' for r in res.table) >= 2  # at or below the median of 4 final losses: 2 runs at least
    assert 'digits_mlp' in res.summary
