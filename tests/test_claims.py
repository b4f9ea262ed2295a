"The claim files of experiments/PROTOCOL.md and PROTOCOL2.md: they load, their arms are valid template parameters, and a CUSA run leaves every array they compare."
import json
from pathlib import Path
import numpy as np, pandas as pd, pytest
from itr_nb.claims import load_claims, claim_runs, load_queries, RSUM_KEYS
from itr_nb.experiment import check_params, find_template, run_template

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT/'experiments').glob('claims_*.yaml')) + sorted((ROOT/'experiments').glob('claims2_*.yaml'))   # PROTOCOL.md's, PROTOCOL2.md's

@pytest.mark.parametrize('path', FILES, ids=[f.stem for f in FILES])
def test_claim_file_is_valid(path):
    spec = load_claims(path)
    assert len(spec['seeds']) >= 3 or spec.get('select'), "the protocol asks for at least 3 seeds per claim"
    for arm, extra in spec['arms'].items():
        params = {k: v for k, v in (spec['params'] | (extra or {})).items() if not (isinstance(v, str) and v.startswith('from:'))}
        check_params(find_template(spec['template']), params)

def test_cusa_run_has_what_the_claims_compare(tiny_benchmark, tmp_path):
    small = dict(dataset=str(tiny_benchmark), epochs=1, batch_size=32, dim=32, image_size=32)
    st = run_template('train_eval', small, tmp_path/'init', progress=False)
    assert st['status'] == 'ok', st.get('error')
    spec = load_claims(ROOT/'experiments'/'claims_cusa.yaml')
    params = ({k: v for k, v in spec['params'].items() if k != 'tau_t'} | spec['arms']['cusa'] | small
              | dict(init=str(tmp_path/'init'), teacher_size=32, cache_dir=str(tmp_path/'cache')))
    st = run_template('cusa', params, tmp_path/'cusa', progress=False)
    assert st['status'] == 'ok', st.get('error')
    q, m = load_queries(tmp_path/'cusa'), json.loads((tmp_path/'cusa'/'metrics.json').read_text())
    needed = set(RSUM_KEYS) | {'ext_t2i_mAP@R', 'i2i_mAP@R', 'cross_i2i_mAP@R', 't2t_mAP@R', 'cross_t2t_mAP@R'}
    assert needed <= set(q), needed - set(q)
    for k in ('cross_i2i_mAP@R', 't2t_mAP@R', 'ext_t2i_mAP@R'):   # the per-query means are the metrics the template reports
        assert 100 * np.mean(q[k]) == pytest.approx(m[k], abs=1e-9), k
    assert 'val_ext_t2i_mAP@R' in m   # what claims_cusa_tau selects on
    assert set(spec['report']) <= set(m), set(spec['report']) - set(m)   # what the report shows beside the claims

def test_ttd_baseline_from_init(tiny_benchmark, tmp_path):
    "The TTD template's baseline can start from another run's checkpoint (init): its towers and dim, not the template's."
    st = run_template('train_eval', dict(dataset=str(tiny_benchmark), epochs=1, batch_size=32, dim=24, image_size=32), tmp_path/'init', progress=False)
    assert st['status'] == 'ok', st.get('error')
    p = dict(dataset=str(tiny_benchmark), epochs=1, ttd_epochs=1, batch_size=32, dim=16, image_size=32, workers=0, limit_eval=10, n_examples=0,
             init=str(tmp_path/'init'))
    st = run_template('ttd', p, tmp_path/'ttd', progress=False)
    assert st['status'] == 'ok', st.get('error')
    assert json.loads((tmp_path/'ttd'/'baseline'/'best.json').read_text())['config']['dim'] == 24
    # epochs 0 takes the init checkpoint itself as the baseline: nothing trained before TTD, its retrieval is the init's
    st = run_template('ttd', p | dict(epochs=0), tmp_path/'ttd0', progress=False)
    assert st['status'] == 'ok', st.get('error')
    assert not (tmp_path/'ttd0'/'baseline').exists()
    from itr_nb.retrieval import init_model, run_splits, ModelConfig, evaluate_split
    model, _ = init_model(str(tmp_path/'init'), ModelConfig())
    *_, (_, _, test) = run_splits(str(tiny_benchmark), 'small-cnn', 32, 'auto', '', '', 0, 10, 0)
    m = json.loads((tmp_path/'ttd0'/'metrics.json').read_text())
    assert abs(m['before_rsum'] - evaluate_split(model.eval(), test, uni=False)['rsum']) < 1e-9

def test_tgdt_run_has_what_the_claims_compare(tiny_benchmark, tmp_path):
    "A TGDT run from another run's towers (init) writes the four rankings' per-query arrays whose means are its metrics."
    small = dict(dataset=str(tiny_benchmark), epochs=1, batch_size=32, image_size=32, workers=0)
    st = run_template('train_eval', small | dict(dim=32), tmp_path/'init', progress=False)
    assert st['status'] == 'ok', st.get('error')
    spec = load_claims(ROOT/'experiments'/'claims_tgdt.yaml')
    params = spec['params'] | small | dict(init=str(tmp_path/'init'), image_encoder='small-cnn', text_encoder='small-transformer',
                                           freeze_text=False, dim=32, layers=1, heads=2, k_i2t=5, k_t2i=3)
    st = run_template('tgdt', params, tmp_path/'tgdt', progress=False)
    assert st['status'] == 'ok', st.get('error')
    q, m = load_queries(tmp_path/'tgdt'), json.loads((tmp_path/'tgdt'/'metrics.json').read_text())
    for c in spec['claims'].values():
        if c['direction'] == 'every seed below': continue   # T4 reads metrics.json, not queries
        for metric in (c['metric'], c['b_metric']):
            prefix = metric.partition(':')[2]
            for k in RSUM_KEYS:   # the per-query hits give back the template's recalls, ranking by ranking
                assert 100 * np.mean(q[prefix + k]) == pytest.approx(m[prefix + k], abs=1e-9), prefix + k
    assert 0 < m['two_stage_over_local_secs']   # T4's figure
    assert set(spec['report']) <= set(m), set(spec['report']) - set(m)
    # the claims compare rankings within one run: T1's difference is two-stage RSUM minus global RSUM, as the template reports them
    import shutil
    from itr_nb.claims import claims_report
    shutil.copytree(tmp_path/'tgdt', tmp_path/'claims'/'tgdt'/'seed=0')
    table = claims_report(spec | dict(out=tmp_path/'claims', seeds=[0], seeds_needed=1), n_boot=50)
    assert list(table.index) == ['T1', 'T2', 'T3', 'T4']
    assert table.loc['T4', 'verdict'] == ('shown' if m['two_stage_over_local_secs'] < 0.5 else 'not shown')   # one seed of one
    for name, (a, b) in dict(T1=('two_stage', 'global'), T2=('two_stage', 'fused'), T3=('local', 'global')).items():
        assert table.loc[name, 'diff'] == pytest.approx(m[f'{a}_rsum'] - m[f'{b}_rsum'], abs=1e-6), name
    arms = pd.read_csv(tmp_path/'claims'/'arms.csv').set_index('metric')   # one seed: its own numbers, beside the claims
    assert arms.loc['two_stage_over_local_secs', 'mean'] == pytest.approx(m['two_stage_over_local_secs'], rel=1e-12)

def test_ttd_run_has_what_the_claims_compare(tiny_benchmark, tmp_path):
    "A TTD run with the claim file's parameters writes per-caption arrays before and after TTD whose claims are the template's numbers."
    import shutil
    from itr_nb.claims import claims_report
    small = dict(dataset=str(tiny_benchmark), batch_size=32, image_size=32, workers=0)
    st = run_template('train_eval', small | dict(epochs=1, dim=24), tmp_path/'init', progress=False)
    assert st['status'] == 'ok', st.get('error')
    spec = load_claims(ROOT/'experiments'/'claims_ttd.yaml')
    st = run_template('ttd', spec['params'] | small | dict(init=str(tmp_path/'init'), limit_eval=20), tmp_path/'ttd', progress=False)
    assert st['status'] == 'ok', st.get('error')
    m = json.loads((tmp_path/'ttd'/'metrics.json').read_text())
    assert set(spec['report']) <= set(m), set(spec['report']) - set(m)
    shutil.copytree(tmp_path/'ttd', tmp_path/'claims'/'ttd'/'seed=0')
    table = claims_report(spec | dict(out=tmp_path/'claims', seeds=[0], seeds_needed=1), n_boot=20)
    assert list(table.index) == ['D1', 'D2', 'D3', 'D4', 'D5']
    want = dict(D1=m['before_pixel_f1'] - m['before_image_f1'], D2=m['before_pixel_auc'] - m['before_image_auc'],
                D3=m['before_single_tag_share_pixel'] - m['before_single_tag_share_image'],
                D4=m['after_pixel_f1'] - m['before_pixel_f1'], D5=m['after_cap_miou'] - m['before_cap_miou'])
    for name, w in want.items():   # each claim's point estimate is the difference of the numbers the template reports
        assert table.loc[name, 'diff'] == pytest.approx(w, abs=1e-3), (name, table.loc[name, 'diff'], w)
