"""A sweep survives a failing run: its executed notebook keeps the error, the sweep carries on, the summary marks it
failed, and a second start skips the finished runs and retries the failed one."""
import csv, json
from pathlib import Path
import nbformat, yaml
from itr_nb.experiment import run_sweep

BODY = ("assert lr < 1, f'lr {lr} too high'\n"
        "import json, pathlib\n"
        "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps(dict(score=lr * 10 + seed)))")

def _template(d):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("lr: float = 0.5  # learning rate\nseed: int = 0  # random seed\nout_dir: str = 'runs/toy'  # outputs",
                                          metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell(BODY)]
    nb.metadata['kernelspec'] = dict(name='python3', display_name='python3', language='python')
    nbformat.write(nb, d/'toy.ipynb'); return d/'toy.ipynb'

def test_failing_run_kept_marked_and_skipped_on_rerun(tmp_path, capsys):
    sw = tmp_path/'sweep.yaml'
    sw.write_text(yaml.safe_dump(dict(template=str(_template(tmp_path)), grid=dict(lr=[2.0, 0.5]), seeds=[0, 1], out=str(tmp_path/'sw'))))
    df, table = run_sweep(sw, progress=False)
    # the failing grid point came first; the sweep carried on and ran the others
    assert df.status.tolist() == ['failed', 'failed', 'ok', 'ok'] and df.score.dropna().tolist() == [5.0, 6.0]
    runs = sorted((tmp_path/'sw').glob('*/status.json'))
    st = {(json.loads((p.parent/'params.json').read_text())['lr'], json.loads((p.parent/'params.json').read_text())['seed']): json.loads(p.read_text()) for p in runs}
    bad = st[(2.0, 0)]
    assert bad['status'] == 'failed' and 'AssertionError' in bad['error'] and 'lr 2.0 too high' in bad['error']
    nb = nbformat.read(Path(bad['out_dir'])/'executed.ipynb', as_version=4)     # the executed notebook keeps the error
    errs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error']
    assert errs and errs[0]['ename'] == 'AssertionError' and 'lr 2.0 too high' in errs[0]['evalue']
    assert not (Path(bad['out_dir'])/'metrics.json').exists()
    # the summary marks the failures
    rows = list(csv.DictReader(open(tmp_path/'sw'/'runs.csv')))
    assert [r['status'] for r in rows] == ['failed', 'failed', 'ok', 'ok']
    summ = {r['lr']: r for r in csv.DictReader(open(tmp_path/'sw'/'summary.csv'))}
    assert (summ['2.0']['runs'], summ['2.0']['ok']) == ('2', '0') and (summ['0.5']['runs'], summ['0.5']['ok']) == ('2', '2')
    assert summ['0.5']['score_mean'] == '5.5'
    # a second start: the finished runs are skipped (their notebooks untouched), the failed ones run again
    ok_nbs = {k: (Path(v['out_dir'])/'executed.ipynb').stat().st_mtime_ns for k, v in st.items() if v['status'] == 'ok'}
    bad_t = (Path(bad['out_dir'])/'status.json').stat().st_mtime_ns
    capsys.readouterr()
    df2, _ = run_sweep(sw, progress=False)
    out = capsys.readouterr().out
    assert out.count('done, skipped') == 2 and out.count(': running') == 2, out
    assert df2.status.tolist() == ['failed', 'failed', 'ok', 'ok']
    assert all((Path(st[k]['out_dir'])/'executed.ipynb').stat().st_mtime_ns == t for k, t in ok_nbs.items())
    assert (Path(bad['out_dir'])/'status.json').stat().st_mtime_ns != bad_t
