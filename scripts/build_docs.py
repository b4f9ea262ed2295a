#!/usr/bin/env python
"""Build the documentation site from nbs/ offline: `.venv/bin/python scripts/build_docs.py` writes it to `_docs/`.

Quarto, which nbdev's own `nbdev-docs` needs, cannot be installed on machines without network, so this takes
another route to the same pages:

1. execute every notebook of nbs/ as the tests do (nbdev's runner, cells flagged with the `tst_flags` of
   pyproject.toml skipped) into `site/exec/`; a notebook is re-run only when it or the package changed;
2. `nbdev.serve.proc_nbs` turns those into `_proc/`, as for Quarto: hidden and export cells dropped, a `show_doc`
   for every exported function and class (signature, docstring, documented parameters);
3. an adapter rewrites what Quarto would have interpreted (front matter, `echo: false` / `output: asis` cells,
   pandoc link attributes, `#|` directive lines, widget outputs and state) into `site/src/`, and drops what is noise
   on a page (stderr streams: progress bars, "Loading weights", library logs and warnings; tqdm lines and widgets in
   other outputs); the executed notebooks keep all of it;
4. `mkdocs build --strict` (material theme, mkdocs-jupyter, no web fonts) renders `site/src/` into `_docs/`, with a
   wider content column and horizontally scrolling code (`assets/extra.css`), and MathJax 2 served from the site
   itself (`assets/mathjax/`, copied from the `jupyter-server-mathjax` package): equations render offline.

`--quarto` runs `nbdev-docs` instead where a `quarto` executable exists. `--serve PORT` serves `_docs/` after
building. Exit status 0 when every notebook ran and the site built.
"""
from __future__ import annotations
import argparse, hashlib, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXEC, SRC, OUT = ROOT/'site'/'exec', ROOT/'site'/'src', ROOT/'_docs'
DIRECTIVE = re.compile(r'^\s*#\s*\|.*$\n?', re.M)
PANDOC_ATTR = re.compile(r'(\]\([^)]*\))\{[^}]*\}')          # [text](url){target="_blank" ...} -> [text](url)
WIDGET = 'application/vnd.jupyter.widget-view+json'
TQDM = re.compile(r'(\d+%\|.*\|.*\[|\d+(\.\d+)?(it|s)/(s|it)\b|Loading weights)')  # a tqdm bar or a weights-loading log line
TQDM_WIDGET = re.compile(r'^HBox\(children=\(HTML\(value=.*(FloatProgress|IntProgress)', re.S)
MATHJAX_CONFIG = 'TeX-AMS-MML_HTMLorMML-full,Safe,itr_nb'
MATHJAX_LOCAL = '''MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
                                // its probe font 'about:blank' is a CORS error in Chromium; a missing local font is not
                                styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
                   SVG: {font: "STIX-Web"},       // the package ships the STIX-Web fonts only (MathJax's default is TeX)
                   menuSettings: {assistiveMML: false}});   // its hidden MathML copy asks for TeX fonts the package lacks
MathJax.Ajax.loadComplete("[MathJax]/config/itr_nb.js");
'''
TAG = re.compile(r'\\tag\{([^}]*)\}')
EXTRA_CSS = """/* itr_nb docs: a wider content column, and code that scrolls instead of running past the column */
.md-grid { max-width: 96rem; }
.md-content pre, .jupyter-wrapper pre { overflow-x: auto; }
.jupyter-wrapper .jp-InputArea pre, .jupyter-wrapper .highlight pre { white-space: pre; overflow-x: auto; }
.jupyter-wrapper .jp-OutputArea-output pre { white-space: pre; overflow-x: auto; }
.jupyter-wrapper .jp-RenderedImage img { max-width: 100%; height: auto; }
.MathJax_Display { overflow-x: auto; overflow-y: hidden; }
"""


def log(msg): print(f'[docs] {msg}', flush=True)


def _key(nb:Path, flags:str) -> str:
    "What an executed notebook depends on: its own bytes, the package's sources and the skip flags."
    h = hashlib.sha256(nb.read_bytes() + flags.encode())
    for p in sorted((ROOT/'itr_nb').rglob('*.py')): h.update(p.read_bytes())
    return h.hexdigest()


def _execute_here(path:str, flags:str) -> int:
    "Run one notebook copy in place with nbdev's test runner (tracebacks to stderr), saving its outputs."
    os.environ.setdefault('MPLBACKEND', 'Agg')
    from nbdev.test import test_nb
    ok, _ = test_nb(path, skip_flags=flags.split(), save=True, basepath=str(ROOT), showerr=True)
    return 0 if ok else 1


def _execute(job) -> tuple:
    "Execute one notebook in its own process; (name, ok, seconds, stderr tail)."
    path, flags = job; t = time.time()
    r = subprocess.run([sys.executable, __file__, '--exec-one', path, '--flags', flags], capture_output=True, text=True)
    return Path(path).name, r.returncode == 0, time.time() - t, r.stderr[-3000:]


def execute(nbs:list, flags:str, jobs:int) -> list:
    "Execute the notebooks whose cached run is stale; returns the names that failed."
    from concurrent.futures import ThreadPoolExecutor
    EXEC.mkdir(parents=True, exist_ok=True)
    todo = []
    for nb in nbs:
        dst, kf, key = EXEC/nb.name, EXEC/f'{nb.name}.key', _key(nb, flags)
        if dst.exists() and kf.exists() and kf.read_text() == key: continue
        shutil.copy2(nb, dst); kf.unlink(missing_ok=True); todo.append((str(dst), key))
    log(f'executing {len(todo)} of {len(nbs)} notebooks ({len(nbs) - len(todo)} unchanged since their last run)')
    failed = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for (path, key), (name, ok, secs, err) in zip(todo, pool.map(_execute, [(p, flags) for p, _ in todo])):
            log(f'  {name}: {"ok" if ok else "FAILED"} in {secs:.1f} s')
            if ok: (EXEC/f'{name}.key').write_text(key)
            else: failed.append(name); sys.stderr.write(err + '\n')
    for stale in set(p.name for p in EXEC.glob('*.ipynb')) - {nb.name for nb in nbs}: (EXEC/stale).unlink()
    return failed


def _mixed_import_cells(nb:dict) -> int:
    "Mark `eval: false` on code cells mixing imports with other code: nbdev's show_doc pass would re-run them alone."
    import ast
    n = 0
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if re.search(r'^\s*#\s*\|\s*(export|exporti|exports|exec_doc|eval:)', src, re.M): continue
        try: tree = ast.parse(DIRECTIVE.sub('', src))
        except SyntaxError: continue
        imports = any(isinstance(t, (ast.Import, ast.ImportFrom)) for t in ast.walk(tree))   # anywhere, as nbdev looks
        if imports and any(not isinstance(t, (ast.Import, ast.ImportFrom)) for t in tree.body):
            c['source'] = '#| eval: false\n' + src; n += 1
    return n


def process() -> Path:
    "nbdev's processing of the executed notebooks into _proc/ (show_doc added, hidden and export cells dropped)."
    from nbdev.serve import proc_nbs
    stage = ROOT/'site'/'stage'; stage.mkdir(parents=True, exist_ok=True)
    keep = set()
    for p in sorted(EXEC.glob('*.ipynb')):
        nb = json.loads(p.read_text())
        _mixed_import_cells(nb)
        new, dst = json.dumps(nb, indent=1), stage/p.name; keep.add(p.name)
        if not dst.exists() or dst.read_text() != new: dst.write_text(new)   # unchanged files keep their mtime: nbdev skips them
    for p in stage.glob('*.ipynb'):
        if p.name not in keep: p.unlink()
    return Path(proc_nbs(path=str(stage), n_workers=2))


def _frontmatter(src:str) -> dict:
    "Keys of a Quarto front-matter block (title, description, output-file, ...)."
    import yaml
    body = src.strip()
    body = body[3:] if body.startswith('---') else body
    body = body[:-3] if body.rstrip().endswith('---') else body
    try: fm = yaml.safe_load(body)
    except yaml.YAMLError: return {}
    return fm if isinstance(fm, dict) else {}


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def _local_links(s:str, host:str) -> str:
    "Links into the published site made relative, so the offline site links to itself."
    return s.replace(host, '') if host else s


def _description(nb:dict) -> str:
    "The whole `> ...` summary under a notebook's title (nbdev's front matter keeps only its first line)."
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        lines = _text(c['source']).splitlines()
        if not lines or not lines[0].startswith('# '): return ''
        return ' '.join(l[1:].strip() for l in lines[1:] if l.startswith('>'))
    return ''


def _quiet(o:dict):
    "An output without its noise (None when nothing is left): stderr streams go, tqdm lines and widgets go."
    if o.get('output_type') == 'stream':
        if o.get('name') == 'stderr': return None
        lines = [l for l in re.split(r'(?<=\n)', _text(o.get('text')).replace('\r\n', '\n')) if l.strip()]
        keep = [l.rsplit('\r', 1)[-1] for l in lines if not TQDM.search(l)]
        keep = [l for l in keep if l.strip()]
        return dict(o, text=''.join(keep)) if keep else None
    d = o.get('data', {})
    if WIDGET in d and TQDM_WIDGET.search(_text(d.get('text/plain'))): return None
    if set(d) == {'text/plain'} and TQDM.search(_text(d['text/plain'])): return None
    return o


def adapt(nb:dict, host:str='', description:str='') -> tuple:
    "Rewrite what Quarto would have interpreted; returns (notebook, page name, title, API names documented)."
    cells, fm, api = [], {}, []
    for c in nb['cells']:
        src = _local_links(_text(c.get('source')), host)
        if c['cell_type'] == 'markdown' and src.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        c.get('metadata', {}).pop('execution', None)                  # float timings nbformat rejects
        if c['cell_type'] == 'raw' and src.lstrip().startswith('---'):
            fm = _frontmatter(src)
            desc = description or fm.get('description')
            head = f"# {fm.get('title', '')}\n" + (f"\n> {desc}\n" if desc else '')
            cells.append(dict(cell_type='markdown', metadata={}, source=head)); continue
        if c['cell_type'] == 'code':
            asis = re.search(r'^\s*#\s*\|\s*output:\s*asis', src, re.M)
            echo_false = re.search(r'^\s*#\s*\|\s*echo:\s*false', src, re.M)
            if asis:                                                  # show_doc: its markdown output becomes the cell
                md = _local_links('\n'.join(_text(o.get('data', {}).get('text/markdown')) for o in c.get('outputs', [])), host)
                if md.strip(): cells.append(dict(cell_type='markdown', metadata={}, source=PANDOC_ATTR.sub(r'\1', md)))
                api += re.findall(r'^#{2,4} +([\w.]+)\s*$', md, re.M)
                continue
            outs = []
            for o in c.get('outputs', []):
                o = _quiet(o)
                if o is None: continue
                d = o.get('data', {})
                if WIDGET in d:                                      # no widget state offline: say what it is instead
                    name = _text(d.get('text/plain')).split('(', 1)[0]
                    o = dict(output_type='display_data', metadata={}, data={'text/html': f'<p class="widget-note"><em>{name}: an interactive '
                             'widget. Run this notebook in Jupyter to use it; the figure above is its static rendering.</em></p>'})
                outs.append(o)
            c['outputs'] = outs
            c['source'] = DIRECTIVE.sub('', src).strip('\n')
            if echo_false: c.setdefault('metadata', {})['tags'] = ['remove_input']
            if not c['source'] and not outs: continue
        elif c['cell_type'] == 'markdown': c['source'] = PANDOC_ATTR.sub(r'\1', src)
        cells.append(c)
    nb['cells'] = cells
    nb.get('metadata', {}).pop('widgets', None)                       # empty widget state loads a manager from a CDN
    page = Path(str(fm.get('output-file', ''))).stem or None
    return nb, page, str(fm.get('title', '')), api


MKDOCS = """site_name: itr_nb
site_description: A notebook-driven research workbook for image-text retrieval
docs_dir: src
site_dir: {out}
use_directory_urls: false
theme:
  name: material
  font: false
  features: [navigation.instant.prefetch, toc.integrate]   # the page's contents in the left bar: a wider column
extra_css: [assets/extra.css]
plugins:
  - search
  - mkdocs-jupyter:
      execute: false
      include_source: false
      ignore_h1_titles: false
      custom_mathjax_url: "assets/mathjax/MathJax.js?config={mathjax}"
      remove_tag_config:
        remove_input_tags: [remove_input]
nav:
{nav}
"""


def mathjax_dir() -> Path:
    "The MathJax 2 files that the `jupyter-server-mathjax` package ships (what the pages load, from the site itself)."
    try: import jupyter_server_mathjax
    except ImportError: sys.exit('[docs] MathJax is missing: pip install jupyter-server-mathjax (a dev dependency of pyproject.toml)')
    d = Path(jupyter_server_mathjax.__file__).parent/'static'
    if not (d/'MathJax.js').exists() or not (d/'config'/f"{MATHJAX_CONFIG.split(',')[0]}.js").exists():
        sys.exit(f'[docs] {d}: no MathJax.js or config {MATHJAX_CONFIG} in jupyter-server-mathjax')
    return d


def _tags(nb:dict) -> list:
    "Equation tags (\\tag{...}) of the notebook's markdown cells, in order."
    return [t for c in nb['cells'] if c['cell_type'] == 'markdown' for t in TAG.findall(_text(c.get('source')))]


def render(proc:Path) -> list:
    "Adapt the processed notebooks into site/src and build the site with mkdocs; returns the pages."
    mj = mathjax_dir()
    shutil.rmtree(SRC, ignore_errors=True); SRC.mkdir(parents=True)
    (SRC/'assets').mkdir(); (SRC/'assets'/'extra.css').write_text(EXTRA_CSS)
    from nbdev.config import get_config
    cfg = get_config(ROOT); host = f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/') + '/'
    pages = []
    for p in sorted(proc.glob('*.ipynb')):
        src = EXEC/p.name
        nb, page, title, api = adapt(json.loads(p.read_text()), host, _description(json.loads(src.read_text())) if src.exists() else '')
        page = 'index' if p.stem == 'index' else (page or re.sub(r'^\d+[a-z]?_', '', p.stem))
        (SRC/f'{page}.ipynb').write_text(json.dumps(nb, indent=1))
        figs = sum(any(k.startswith('image/') for k in o.get('data', {})) for c in nb['cells'] for o in c.get('outputs', []))
        pages.append(dict(page=f'{page}.html', title=title or page, notebook=f'{p.stem}.ipynb', figures=figs, api=api, tags=_tags(nb)))
    pages.sort(key=lambda x: (x['page'] != 'index.html', x['notebook']))
    nav = '\n'.join(f'  - {json.dumps(x["title"])}: {x["page"][:-5]}.ipynb' for x in pages)
    (ROOT/'site'/'mkdocs.yml').write_text(MKDOCS.format(out=os.path.relpath(OUT, ROOT/'site'), nav=nav, mathjax=MATHJAX_CONFIG))
    r = subprocess.run([str(BIN/'mkdocs'), 'build', '--strict', '--clean', '-q', '-f', str(ROOT/'site'/'mkdocs.yml')],
                       cwd=ROOT/'site', capture_output=True, text=True)
    if r.returncode: sys.exit(f'[docs] mkdocs build failed:\n{r.stdout}\n{r.stderr}')
    shutil.copytree(mj, OUT/'assets'/'mathjax', dirs_exist_ok=True)   # served by the site: no CDN
    (OUT/'assets'/'mathjax'/'config'/'itr_nb.js').write_text(MATHJAX_LOCAL)
    (OUT/'pages.json').write_text(json.dumps(pages, indent=1))   # what the browser check expects of each page
    return pages


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--no-execute', action='store_true', help='render the notebooks as they are (no outputs: no figures)')
    p.add_argument('--jobs', type=int, default=2, help='notebooks executed at once')
    p.add_argument('--quarto', action='store_true', help="nbdev's own route (nbdev-docs), where Quarto is installed")
    p.add_argument('--serve', type=int, default=0, metavar='PORT', help='serve _docs/ on 127.0.0.1:PORT after building')
    p.add_argument('--exec-one', help=argparse.SUPPRESS); p.add_argument('--flags', default='', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for k, v in dict(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false', MPLBACKEND='Agg',
                     PYDEVD_DISABLE_FILE_VALIDATION='1').items(): os.environ.setdefault(k, v)   # as run.sh and the tests set them
    if a.exec_one: return _execute_here(a.exec_one, a.flags)
    t0 = time.time()
    if a.quarto:
        if not shutil.which('quarto'): sys.exit('[docs] --quarto needs a quarto executable on PATH (none here); drop --quarto for the offline route')
        return subprocess.call([str(BIN/'nbdev-docs')], cwd=ROOT)
    from nbdev.config import get_config
    cfg = get_config(ROOT)
    nbs = sorted(Path(cfg.nbs_path).glob('*.ipynb'))
    if a.no_execute:
        EXEC.mkdir(parents=True, exist_ok=True)
        for nb in nbs: shutil.copy2(nb, EXEC/nb.name); (EXEC/f'{nb.name}.key').unlink(missing_ok=True)
        failed = []
    else: failed = execute(nbs, cfg.tst_flags, a.jobs)
    if failed: sys.exit(f'[docs] notebooks failed to run: {", ".join(failed)} (their tracebacks are above)')
    t1 = time.time(); proc = process(); t2 = time.time()
    pages = render(proc)
    log(f'{len(pages)} pages in {OUT.relative_to(ROOT)}/ (execute {t1 - t0:.0f} s, nbdev processing {t2 - t1:.0f} s, '
        f'mkdocs {time.time() - t2:.0f} s; total {time.time() - t0:.0f} s)')
    if a.serve:
        import functools, http.server
        h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(OUT))
        log(f'serving on http://127.0.0.1:{a.serve}/ (Ctrl-C stops)')
        http.server.ThreadingHTTPServer(('127.0.0.1', a.serve), h).serve_forever()
    return 0


if __name__ == '__main__':
    sys.exit(main())
