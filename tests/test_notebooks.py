"One pytest test per notebook in nbs/, run by nbdev's own runner with the project's skip flags."
import os
from pathlib import Path
import pytest
from nbdev.config import get_config
import nbdev.test as nbtest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch):
    flags = get_config(ROOT).tst_flags.split()
    monkeypatch.chdir(nb.parent)
    ok, secs = nbtest.test_nb(nb, skip_flags=flags, basepath=ROOT, showerr=True)
    assert ok, f'{nb.name} failed (traceback above)'
