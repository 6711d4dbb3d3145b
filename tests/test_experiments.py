"The book's experiments: a registry and a command line in `optbook.experiments`, kept out of the optimizer modules."
import subprocess, sys
import pytest, torch
from torch import nn
from optbook.data import tensor_dls
from optbook.learner import Learner
from optbook.experiments import experiment, run_experiment, EXPERIMENTS, ExperimentResult, format_table
from fresh_python import fresh_imports


def _data(n=12, n_valid=6, d=5, seed=0, bs=4):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n + n_valid, d, generator=g), torch.randint(0, 3, (n + n_valid,), generator=g)
    return tensor_dls(x[:n], y[:n], x[n:], y[n:], bs=bs, seed=seed)


def test_importing_optimizers_does_not_import_experiments():
    "A practitioner who imports an optimizer does not load the book's training runs"
    mods = [m for m in fresh_imports()['modules'] if m.startswith('optbook.')]  # a fresh interpreter's, after importing these modules
    assert 'optbook.adam' in mods and 'optbook.radam' in mods  # the check sees modules at all
    assert 'optbook.experiments' not in mods, mods
    for name in ('wd_grid', 'super_convergence', 'warmup_experiment', 'mnist1d_baselines', 'run_experiment', 'EXPERIMENTS'):
        assert not hasattr(__import__('optbook'), name), name


def test_every_chapter_experiment_registers_itself():
    "Importing the experiments module is enough: each chapter's cells, appended to it, register by name"
    assert set(fresh_imports()['experiments']) >= {'mnist1d-baselines', 'wd-grid', 'super-convergence', 'warmup'}


def test_experiment_registry_and_table():
    @experiment('tmp-exp', 'a test experiment')
    def tmp(out_dir=None, quick=False): return ExperimentResult([dict(a=1, b=0.123456)], None, f'quick={quick}')
    try:
        res = run_experiment('tmp-exp', quick=True, verbose=False)
        assert res.summary == 'quick=True' and format_table(res.table) == 'a  b     \n-  ------\n1  0.1235'
        with pytest.raises(ValueError, match="'tmp-ex'.*tmp-exp"): run_experiment('tmp-ex')
    finally: del EXPERIMENTS['tmp-exp']


def test_cli_lists_experiments():
    "`python -m` runs the module as __main__, before the chapters' cells appended to it: the listing must still hold them all"
    out = subprocess.run([sys.executable, '-m', 'optbook.experiments'], capture_output=True, text=True, check=True, timeout=120).stdout
    for name in ('mnist1d-baselines', 'wd-grid', 'super-convergence', 'warmup'): assert name in out, out


def test_cli_unknown_name(capsys):
    from optbook.experiments import main
    with pytest.raises(SystemExit) as e: main(['nope'])
    assert e.value.code == 2 and "unknown experiment 'nope'" in capsys.readouterr().err


def test_run_experiment_reports_each_fit_on_stderr(capsys):
    @experiment('test-progress', 'three tiny fits')
    def three_fits(out_dir=None, quick=False):
        for _ in range(3): Learner(nn.Linear(5, 3), _data(), opt_func=torch.optim.SGD, lr=0.1, progress=False).fit(1)
        return ExperimentResult(table=[dict(fits=3)], figure=None, summary='done')
    try:
        run_experiment('test-progress')
        err = capsys.readouterr().err.splitlines()
        assert [l.split(' done')[0] for l in err] == [f'[test-progress] fit {i}' for i in (1, 2, 3)], err
        assert all('valid_loss' in l and 'accuracy' in l for l in err)
        run_experiment('test-progress', verbose=False)
        assert capsys.readouterr().err == ''  # quiet when asked, and the listener is gone afterwards
        Learner(nn.Linear(5, 3), _data(), opt_func=torch.optim.SGD, lr=0.1, progress=False).fit(1)
        assert capsys.readouterr().err == ''
    finally: EXPERIMENTS.pop('test-progress', None)


def test_bench_is_shared_and_frozen():
    "One configuration per task; the chapters' experiments that predate it train on the same numbers"
    import dataclasses, inspect
    from optbook.experiments import BENCH, PROTOCOL_TASKS, super_convergence, warmup_run
    assert [t.name for t in BENCH.tasks()] == ['mnist1d_cnn', 'digits_mlp', 'char_lstm', 'tiny_transformer']
    with pytest.raises(dataclasses.FrozenInstanceError): BENCH.mnist1d_cnn.bs = 128
    pt = PROTOCOL_TASKS['mnist1d_cnn']  # the protocol's task: the bench's, with a validation split carved from its training set
    assert (pt.bs, pt.make_model) == (BENCH.mnist1d_cnn.bs, BENCH.mnist1d_cnn.make_model)
    assert len(pt.dls().train.dataset) + len(pt.dls().valid.dataset) == len(BENCH.mnist1d_cnn.dls().train.dataset)
    assert len(inspect.signature(super_convergence).parameters['seeds'].default) >= 5
    wr = inspect.signature(warmup_run).parameters
    tt = BENCH.tiny_transformer
    assert (wr['bs'].default, wr['steps'].default) == (tt.bs, tt.epochs * len(tt.dls().train))
    assert len(BENCH.mnist1d_cnn.dls().train) == 4000 // 100 and len(BENCH.mnist1d_cnn.dls().valid.dataset) == 1000


@pytest.fixture
def toy_experiment():
    "An experiment that draws a one-line figure when matplotlib is there"
    @experiment('toy-fig', 'a figure', minutes=0.1)
    def toy(out_dir=None, quick=False):
        from optbook.experiments import _plt
        try: plt = _plt()
        except ImportError: return ExperimentResult([dict(x=1)], None, 'no figure')
        fig, ax = plt.subplots(); ax.plot([0, 1])
        return ExperimentResult([dict(x=1)], fig, 'a line')
    yield 'toy-fig'
    EXPERIMENTS.pop('toy-fig', None)


def test_cli_saves_the_figure_by_default(toy_experiment, tmp_path, monkeypatch, capsys):
    pytest.importorskip('matplotlib')
    from optbook.experiments import main
    monkeypatch.chdir(tmp_path)
    assert main([toy_experiment]) == 0
    assert (tmp_path / 'toy-fig.png').stat().st_size > 0 and 'figure saved to toy-fig.png' in capsys.readouterr().out
    (tmp_path / 'toy-fig.png').unlink()
    main([toy_experiment, '--no-figure'])
    assert not (tmp_path / 'toy-fig.png').exists()
    main([toy_experiment, '--out', 'figs'])
    assert (tmp_path / 'figs' / 'toy-fig.png').exists()


def test_cli_says_when_matplotlib_is_missing(toy_experiment, tmp_path, monkeypatch, capsys):
    from optbook.experiments import main
    monkeypatch.chdir(tmp_path)
    for m in ('matplotlib', 'matplotlib.pyplot'): monkeypatch.setitem(sys.modules, m, None)  # as if not installed
    assert main([toy_experiment]) == 0
    out, err = capsys.readouterr()
    assert 'matplotlib is not installed' in err and 'optbook[viz]' in err and 'figure saved' not in out and 'x' in out
    assert not list(tmp_path.iterdir())


def test_cli_lists_the_run_time_of_each_experiment(capsys):
    from optbook.experiments import main
    main([])
    lines = {l.split()[0]: l for l in capsys.readouterr().out.splitlines()[1:]}
    for name in ('mnist1d-baselines', 'wd-grid', 'super-convergence', 'warmup'): assert ' min ' in lines[name], lines[name]
