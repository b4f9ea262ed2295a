"The claim files of experiments/PROTOCOL.md: they load, their arms are valid template parameters, and a CUSA run leaves every array they compare."
import json
from pathlib import Path
import numpy as np, pytest
from itr_nb.claims import load_claims, claim_runs, load_queries, RSUM_KEYS
from itr_nb.experiment import check_params, find_template, run_template

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT/'experiments').glob('claims_*.yaml'))

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

def test_ttd_baseline_from_init(tiny_benchmark, tmp_path):
    "The TTD template's baseline can start from another run's checkpoint (init): its towers and dim, not the template's."
    st = run_template('train_eval', dict(dataset=str(tiny_benchmark), epochs=1, batch_size=32, dim=24, image_size=32), tmp_path/'init', progress=False)
    assert st['status'] == 'ok', st.get('error')
    p = dict(dataset=str(tiny_benchmark), epochs=1, ttd_epochs=1, batch_size=32, dim=16, image_size=32, workers=0, limit_eval=10, n_examples=0,
             init=str(tmp_path/'init'))
    st = run_template('ttd', p, tmp_path/'ttd', progress=False)
    assert st['status'] == 'ok', st.get('error')
    assert json.loads((tmp_path/'ttd'/'baseline'/'best.json').read_text())['config']['dim'] == 24
