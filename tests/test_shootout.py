"Chapter 14's shootout: its contestants follow the package, its analysis is computed as the chapter says, and a quick run works end to end."
import math, pytest
from optbook.distributed import optimizer_classes
from optbook.experiments import SHOOT_METHODS, SHOOT_METRIC, shootout, shoot_rates, shoot_table, shoot_differences, shoot_finder_table

def test_every_exported_optimizer_joins_the_shootout():
    assert {c for c, _, _ in SHOOT_METHODS.values()} >= set(optimizer_classes()) - {'SGDW', 'RMSpropW'}
    assert {'SGD', 'SGD momentum', 'Nesterov', 'RMSprop', 'Adam', 'AMSGrad', 'AdamW', 'RAdam', 'Lion', 'Adafactor', 'Muon', 'Schedule-Free AdamW', 'Schedule-Free SGD'} <= set(SHOOT_METHODS)
    assert SHOOT_METHODS['LARS'][1]['always_adapt']  # the trust ratio acts: LARS is not SGD momentum in disguise

def _row(task, method, lr, seed, split, value, schedule='constant', metric=None):
    return dict(task=task, method=method, schedule=schedule, budget=1, lr=lr, seed=seed, split=split, metric=metric or SHOOT_METRIC[task][0], value=value)

def test_analysis_by_hand():
    # validation picks 0.1 for A (0.9 > 0.5 at 0.3); B only ran 0.01. Test: A 0.90, 0.92, 0.94; B 0.80, 0.86, 0.84 -> B - A = -10, -6, -10 points
    rows = [_row('mnist1d_cnn', 'A', 0.1, 0, 'valid', 0.9), _row('mnist1d_cnn', 'A', 0.3, 0, 'valid', 0.5), _row('mnist1d_cnn', 'B', 0.01, 0, 'valid', 0.7)]
    rows += [_row('mnist1d_cnn', 'A', 0.1, s, 'test', v) for s, v in enumerate((0.90, 0.92, 0.94))]
    rows += [_row('mnist1d_cnn', 'B', 0.01, s, 'test', v) for s, v in enumerate((0.80, 0.86, 0.84))]
    rows += [_row('mnist1d_cnn', 'A', 0.2, 0, 'valid', 0.1, '1cycle')] + [_row('mnist1d_cnn', 'A', 0.2, s, 'test', v, '1cycle') for s, v in enumerate((0.91, 0.93, 0.95))]
    rates = shoot_rates(rows)
    assert rates == {('mnist1d_cnn', 'A', 'constant', 1): 0.1, ('mnist1d_cnn', 'B', 'constant', 1): 0.01, ('mnist1d_cnn', 'A', '1cycle', 1): 0.2}
    t = {(r['method'], r['schedule']): r for r in shoot_table(rows, rates)}
    assert t['B', 'constant']['mean'] == pytest.approx(2.5 / 3) and (t['B', 'constant']['min'], t['B', 'constant']['max']) == (0.80, 0.86)
    d = {(x['kind'], x['B']): x for x in shoot_differences(rows, rates)}
    assert d['vs best', 'B, constant']['A'] == 'A, 1cycle' and d['vs best', 'B, constant']['mean'] == pytest.approx(-29 / 3)
    one = d['1cycle - constant', 'A, 1cycle']
    assert one['mean'] == pytest.approx(1.) and one['lo'] == pytest.approx(1.) and 'beats' in one['verdict']  # +1 point on every seed
    fin = shoot_finder_table([dict(task='mnist1d_cnn', method='A', metric='valley', value=0.01)], rates)
    assert fin[0]['x constant'] == pytest.approx(0.1) and fin[0]['x 1cycle'] == pytest.approx(0.05)

def test_loss_task_lower_is_better():
    rows = [_row('tiny_transformer', m, 0.1, s, sp, v) for m, v in (('C', 1.0), ('D', 0.4)) for s in (0, 1) for sp in ('valid', 'test')]
    d = shoot_differences(rows, shoot_rates(rows))
    assert [(x['A'], x['B']) for x in d] == [('D, constant', 'C, constant')] and d[0]['mean'] == pytest.approx(-0.6) and d[0]['unit'] == 'nats'

def test_quick_shootout_runs_end_to_end(tmp_path):
    pytest.importorskip('sklearn')
    res = shootout(quick=True, workers=1, path=tmp_path/'quick.csv')
    assert {(r['method'], r['schedule']) for r in res.table} == {(o, s) for o in ('SGD momentum', 'Adam') for s in ('constant', '1cycle')}
    assert all(0 <= r['mean'] <= 1 and r['seeds'] == 2 for r in res.table)
    assert sorted(r['reading'] for r in res.finder) == sorted(['valley', 'steepest', 'minimum'] * 2)  # two optimizers, three readings each
    assert 'digits_mlp' in res.summary and (tmp_path/'quick.csv').exists()
