"The workbook as one book: every reference points inside the repository."
import re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# spelled in pieces so that this file does not match itself
OUTSIDE = re.compile('|'.join([re.escape('METHODS' + '.md'), re.escape('..' + '/shared'), r'(?<![\w.~-])/' + 'work/']))


def _tracked_text():
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        p = ROOT/f
        if not p.is_file(): continue
        b = p.read_bytes()
        if b'\0' in b[:8192]: continue                       # binary
        yield f, b.decode('utf-8', errors='replace')


def test_no_reference_outside_the_repo():
    hits = [f'{f}:{s.count(chr(10), 0, m.start()) + 1}: {m.group(0)}' for f, s in _tracked_text() for m in OUTSIDE.finditer(s)]
    assert not hits, 'references outside the repository (point at nbs/01_methods.ipynb instead):\n' + '\n'.join(hits)


def test_pattern_catches_each_kind():
    for s in ('see ' + 'METHODS' + '.md section 2', '`..' + '/shared/x`', 'cd /' + 'work/main'):
        assert OUTSIDE.search(s), s
    assert not OUTSIDE.search('https://example.org/network/x and nbs/01_methods.ipynb#eq-2-4')


def test_readme_is_a_front_door():
    lines = (ROOT/'README.md').read_text().splitlines()
    assert len(lines) <= 150, f'README.md has {len(lines)} lines (at most 150: the rest belongs on nbs/22_reference.ipynb)'
    assert './run.sh main' in lines and './run.sh test' in lines          # the two commands, each on its own line
    assert './run.sh test' in (ROOT/'.ci'/'run').read_text()


def test_readme_maps_every_notebook():
    text = (ROOT/'README.md').read_text()
    missing = [p.stem for p in sorted((ROOT/'nbs').glob('*.ipynb')) if f'| `{p.stem}` |' not in text]
    assert not missing, f"README.md's notebook map lacks {missing}"


def test_declared_package_data_exists():
    import tomllib
    cfg = tomllib.loads((ROOT/'pyproject.toml').read_text())
    data = cfg.get('tool', {}).get('setuptools', {}).get('package-data', {})
    empty = [f'{pkg}/{g}' for pkg, globs in data.items() for g in globs if not list((ROOT/pkg).glob(g))]
    assert not empty, f'pyproject.toml declares package data that does not exist: {empty}'


def test_run_outside_a_clone_says_so(tmp_path, monkeypatch):
    import pytest
    import itr_nb.experiment as ex
    from itr_nb.core import ItrError
    monkeypatch.setattr(ex, 'project_root', lambda: tmp_path)     # an install without the clone's experiments/
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ItrError, match=r'no experiments/ folder under .*clone of the workbook'):
        ex.find_template('cusa')
    (tmp_path/'experiments').mkdir()
    with pytest.raises(ItrError, match=r'template not found: cusa \(looked in'):
        ex.find_template('cusa')


# the layers, lowest first (the data family, then as the modules build on each other); a module imports only from
# modules before it, at the top or inside a function, except inside the `*_command` entry points behind `itr-nb`
LAYERS = ['core', 'data', 'images', 'shards', 'precomp', 'splits', 'synth', 'metrics', 'search', 'encoders', 'losses', 'train',
          'experiment', 'claims', 'retrieval', 'cusa', 'tgdt', 'ttd', 'inspect', 'distributed', 'cli']


def _imports(path):
    import ast
    tree = ast.parse(path.read_text())
    def walk(node, fn):
        for ch in ast.iter_child_nodes(node):
            f = ch.name if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if isinstance(ch, ast.ImportFrom) and ch.module:
                m = ch.module.split('.')[-1] if ch.level or ch.module.startswith('itr_nb') else None
                if m: yield m, f
            elif isinstance(ch, ast.Import):
                for a in ch.names:
                    if a.name.startswith('itr_nb.'): yield a.name.split('.')[1], f
            yield from walk(ch, f)
    yield from walk(tree, None)


def test_nothing_imports_upward():
    mods = sorted(p.stem for p in (ROOT/'itr_nb').glob('*.py') if not p.stem.startswith('_'))
    assert set(mods) <= set(LAYERS), f'modules missing from LAYERS: {set(mods) - set(LAYERS)}'
    bad = [f'{m} imports {x}' + (f' in {fn}' if fn else '') for m in mods for x, fn in _imports(ROOT/'itr_nb'/f'{m}.py')
           if x in LAYERS and LAYERS.index(x) >= LAYERS.index(m) and x != m and not (fn or '').endswith('_command')]
    assert not bad, bad
