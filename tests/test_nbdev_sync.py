"nbdev-export then nbdev-clean must leave the tracked notebooks and package unchanged."
import shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def _files(root):
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', 'nbs', 'itr_nb', 'pyproject.toml'],
                         cwd=root, capture_output=True, text=True, check=True).stdout.split()
    return sorted(out)

def test_export_and_clean_leave_tree_unchanged(tmp_path):
    files = _files(ROOT)
    assert any(f.endswith('.ipynb') for f in files) and any(f.endswith('.py') for f in files)
    for f in files:
        (tmp_path/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/f, tmp_path/f)
    (tmp_path/'README.md').write_text('x')
    for cmd in ('nbdev-export', 'nbdev-clean'):
        r = subprocess.run([str(BIN/cmd)], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    changed = [f for f in files if (tmp_path/f).read_bytes() != (ROOT/f).read_bytes()]
    new = sorted(set(str(p.relative_to(tmp_path)) for p in (tmp_path/'itr_nb').rglob('*.py')) - set(files))
    assert not changed and not new, f'run nbdev-export && nbdev-clean and commit: changed {changed}, new {new}'
