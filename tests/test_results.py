"""The method notebooks' results sections render from sweeps the test runs: tiny real sweeps of the cusa, tgdt and ttd
templates into a temporary runs folder ($ITR_NB_RUNS), their tables checked against each run's metrics.json."""
import json, math, os
from pathlib import Path
import nbformat, numpy as np, pandas as pd, pytest, yaml
from itr_nb.experiment import run_sweep, sweep_table, sweep_results

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group('results')


def _results_cells(nb:str) -> str:
    "The code of the cells after a notebook's '## Results' heading."
    cells = nbformat.read(ROOT/'nbs'/nb, as_version=4).cells
    k = next(i for i, c in enumerate(cells) if c.cell_type == 'markdown' and c.source.startswith('## Results'))
    return '\n'.join(c.source for c in cells[k + 1:] if c.cell_type == 'code')


def _render(nb:str) -> dict:
    "Execute a notebook's results cells from the project root; their namespace."
    ns = {}
    exec(compile(_results_cells(nb), nb, 'exec'), ns)
    return ns


def _independent(out:Path, by:list, metric:str) -> dict:
    "{arm values: (mean, std, n)} of `metric` from each run's params.json and metrics.json, read without the package."
    vals = {}
    for m in out.glob('*/metrics.json'):
        p = json.loads((m.parent/'params.json').read_text())
        vals.setdefault(tuple(str(p[k]) for k in by), []).append(json.loads(m.read_text())[metric])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v)) for k, v in vals.items()}


def _sweep(tmp_path, name, template, params, grid, seeds, out=None):
    runs = Path(os.environ['ITR_NB_RUNS'])
    f = tmp_path/f'{name}.yaml'
    f.write_text(yaml.safe_dump(dict(template=template, params=params, grid=grid, seeds=seeds, out=str(runs/(out or name)))))
    df, _ = run_sweep(f, progress=False)
    assert (df.status == 'ok').all(), df
    return runs/(out or name)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv('ITR_NB_RUNS', str(tmp_path/'runs'))
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    monkeypatch.chdir(ROOT)
    return tmp_path/'runs'


def test_cusa_results_from_a_tiny_sweep(tiny_benchmark, runs, tmp_path, capsys):
    small = dict(dataset=str(tiny_benchmark), epochs=1, batch_size=16, dim=32, image_size=32, lr=2e-3, teacher_size=32,
                 cache_dir=str(tmp_path/'cache'))
    out = _sweep(tmp_path, 'cusa_ablation', 'cusa', small, dict(alpha=[0.0, 0.1], beta=[0.0]), [0, 1])
    # the numeric table against the runs' own files
    t = sweep_table('cusa_ablation', ['rsum', 't2t_mAP@R'])
    for metric in ('rsum', 't2t_mAP@R'):
        ref = _independent(out, ['alpha', 'beta'], metric)
        assert len(t) == len(ref) == 2
        for (a, b), (mean, std, n) in ref.items():
            row = t.loc[f'alpha={a}, beta={b}']
            assert row[(metric, 'mean')] == pytest.approx(mean, rel=1e-12, abs=1e-12)
            assert row[(metric, 'std')] == pytest.approx(std, rel=1e-12, abs=1e-12) and row[('seeds', '')] == n == 2
    # the notebook's results cells render from it; the sweep not run (cusa_tau) says what to run
    capsys.readouterr()
    ns = _render('16_cusa.ipynb')
    said = capsys.readouterr().out
    r = ns['cusa_ablation']
    assert list(r.index) == ['InfoNCE', '+CSA'] and ns['cusa_tau'] is None
    assert 'itr-nb sweep experiments/cusa_tau.yaml' in said
    ref = _independent(out, ['alpha', 'beta'], 'rsum')
    for arm, key in (('InfoNCE', ('0.0', '0.0')), ('+CSA', ('0.1', '0.0'))):
        mean, std, n = ref[key]
        assert r.loc[arm, 'rsum'] == f'{mean:.2f} ± {std:.2f}' and r.loc[arm, 'seeds'] == n
    assert set(ns['CUSA_METRICS']) <= set(r.columns)


def test_tgdt_and_ttd_results_from_tiny_sweeps(tiny_benchmark, runs, tmp_path, capsys):
    capsys.readouterr()
    for nb in ('17_tgdt.ipynb', '18_ttd.ipynb'):   # nothing run yet: each cell names its command
        ns = _render(nb)
    said = capsys.readouterr().out
    assert 'itr-nb sweep experiments/tgdt.yaml' in said and 'itr-nb sweep experiments/ttd.yaml' in said
    tg = dict(dataset=str(tiny_benchmark), epochs=1, batch_size=32, dim=32, layers=1, heads=2, image_size=32, lr=2e-3,
              k_i2t=5, k_t2i=3, k_curve=[3])
    out = _sweep(tmp_path, 'tgdt', 'tgdt', tg, dict(k_i2t=[5]), [0], out='tgdt_sweep')   # where experiments/tgdt.yaml writes
    ns = _render('17_tgdt.ipynb')
    r = ns['tgdt_results']
    (mean, _, n), = _independent(out, ['k_i2t'], 'two_stage_rsum').values()
    assert r.loc['two_stage_rsum', 'k_i2t=5'] == f'{mean:.2f}' and r.loc['seeds', 'k_i2t=5'] == n == 1
    ds = Path(tiny_benchmark)
    td = dict(dataset=str(ds), image_size=32, dim=32, epochs=1, ttd_epochs=1, batch_size=32, n_examples=2, device='cpu')
    out = _sweep(tmp_path, 'ttd', 'ttd', td, dict(theta=[-1.0]), [0])
    ns = _render('18_ttd.ipynb')
    r = ns['ttd_results']
    (mean, _, n), = _independent(out, ['theta'], 'after_pixel_f1').values()
    assert r.loc['after_pixel_f1', 'theta from val'] == f'{mean:.2f}' and set(ns['TTD_METRICS']) <= set(r.index)
