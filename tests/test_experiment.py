"The train_eval template through papermill, sweeps, the main job's stage file, and the CLI."
import json, subprocess, sys
from pathlib import Path
import pytest, yaml
from itr_nb.core import ItrError
from itr_nb.experiment import run_template, run_sweep, check_params, load_main, parse_params

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(epochs=2, batch_size=32, dim=32, image_size=32, lr=2e-3)

def test_train_eval_template_with_overrides(tiny_benchmark, tmp_path):
    st = run_template('train_eval', dict(SMALL, dataset=str(tiny_benchmark), seed=3), tmp_path/'run', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'run'/'metrics.json').read_text())
    # the RSUM is the sum of the six recalls, each a percentage; the oracle metrics are present
    six = [m[f'{d}_R@{k}'] for d in ('i2t', 't2i') for k in (1, 5, 10)]
    assert abs(m['rsum'] - sum(six)) < 1e-6 and all(0 <= v <= 100 for v in six)
    assert {'ext_t2i_mAP@R', 'ext_i2t_R-P', 'i2i_R@1', 't2t_mAP@R'} <= set(m)
    assert m['chance_R1_t2i'] == pytest.approx(100 / 30)
    hist = json.loads((tmp_path/'run'/'history.json').read_text())
    assert len(hist) == 2 and hist[1]['train_loss'] < hist[0]['train_loss']
    assert m['best_epoch'] == max(hist, key=lambda h: h['val_rsum'])['epoch']
    assert json.loads((tmp_path/'run'/'params.json').read_text())['seed'] == 3
    for f in ('executed.ipynb', 'best.safetensors', 'best.json', 'curves.png'): assert (tmp_path/'run'/f).exists()

def test_train_eval_from_init_writes_queries(tiny_benchmark, tmp_path):
    "init= starts from another run's checkpoint (its towers and dim, not the template's); queries.npz agrees with metrics.json."
    import numpy as np
    from itr_nb.claims import load_queries
    st = run_template('train_eval', dict(SMALL, dataset=str(tiny_benchmark), epochs=1), tmp_path/'a', progress=False)
    assert st['status'] == 'ok', st.get('error')
    st = run_template('train_eval', dict(SMALL, dataset=str(tiny_benchmark), epochs=1, dim=64, init=str(tmp_path/'a')), tmp_path/'b', progress=False)
    assert st['status'] == 'ok', st.get('error')
    assert json.loads((tmp_path/'b'/'best.json').read_text())['config']['dim'] == 32   # the init's, not the template's 64
    m, q = json.loads((tmp_path/'b'/'metrics.json').read_text()), load_queries(tmp_path/'b')
    for k in ('t2i_R@1', 'i2t_R@5', 'ext_t2i_mAP@R', 'i2i_mAP@R'):
        assert 100 * np.mean(q[k]) == pytest.approx(m[k], abs=1e-9), k
    assert len(q['t2i_R@1']) == 150 and len(q['i2t_R@1']) == 30

def test_bad_parameters_are_refused():
    with pytest.raises(ItrError, match="unknown parameter 'epoch'"): check_params(ROOT/'experiments'/'train_eval.ipynb', dict(epoch=1))
    with pytest.raises(ItrError, match="'epochs' must be int"): check_params(ROOT/'experiments'/'train_eval.ipynb', dict(epochs='ten'))
    with pytest.raises(ItrError, match="'lr' must be float"): check_params(ROOT/'experiments'/'train_eval.ipynb', dict(lr=[1]))

def test_sweep_over_two_seeds(tiny_benchmark, tmp_path):
    sw = tmp_path/'sweep.yaml'
    sw.write_text(yaml.safe_dump(dict(template='train_eval', params=dict(SMALL, epochs=1, dataset=str(tiny_benchmark)),
                                      grid=dict(dim=[32]), seeds=[0, 1], out=str(tmp_path/'sw'))))
    df, table = run_sweep(sw, progress=False)
    assert df.status.tolist() == ['ok', 'ok'] and sorted(df.seed) == [0, 1]
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path/'sw').glob('*/metrics.json'))]
    assert len(runs) == 2
    mean = sum(r['rsum'] for r in runs) / 2
    assert table.loc['32', 'rsum'].startswith(f'{mean:.2f} ±')
    assert (tmp_path/'sw'/'summary.md').read_text().count('\n') >= 2 and (tmp_path/'sw'/'summary.csv').exists()

def test_main_stages_file():
    from itr_nb.retrieval import STUDENT
    stages = load_main()
    assert stages[0]['name'] == 'baseline'
    for s in stages: check_params(ROOT/'experiments'/f"{s['template']}.ipynb", s.get('params', {}))
    # the baseline is the student; every other stage (a small version of one claim) starts from it
    b = stages[0]['params']
    assert (b['image_encoder'], b['text_encoder'], b['freeze_text']) == (STUDENT.image_encoder, STUDENT.text_encoder, STUDENT.freeze_text)
    assert [s['params'].get('init') for s in stages[1:]] == ['runs/main/baseline'] * (len(stages) - 1)
    assert {s['template'] for s in stages[1:]} == {'cusa', 'tgdt', 'ttd'}

def test_cli_help_and_errors(tmp_path):
    exe = str(Path(sys.executable).parent/'itr-nb')
    r = subprocess.run([exe, '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and all(c in r.stdout for c in ('main', 'synth', 'eval', 'run', 'sweep'))
    r = subprocess.run([exe, 'run', 'train_eval', '-p', 'epochz', '3'], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown parameter 'epochz'" in r.stderr and 'Traceback' not in r.stderr
    r = subprocess.run([exe, 'run', 'no_such_template'], capture_output=True, text=True)
    assert r.returncode == 2 and 'template not found: no_such_template' in r.stderr
