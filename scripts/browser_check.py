#!/usr/bin/env python
"""Browser check: the documentation site and the inspection notebook in real, headless Chromium.

`.venv/bin/python scripts/browser_check.py` (as root, or with chromium already installed):

1. installs Debian's `chromium` with apt-get when /usr/bin/chromium is missing;
2. builds the site (`scripts/build_docs.py`, unless `--no-build`), serves `_docs/` on 127.0.0.1 and loads every page
   listed in `_docs/pages.json`: a page fails on a console error, an uncaught exception, a request leaving localhost,
   fewer loaded images than its notebook has figures, a missing API entry, a `#|` directive left in its text, a
   progress bar, "Loading weights" or a stderr block in its text, or (on a page with equations) an equation that
   MathJax did not render or whose tag, such as "(2.4)", is not shown; the methods page must also show its equations
   and its three diagrams;
3. starts JupyterLab on 127.0.0.1 with a token, opens a copy of `nbs/19_inspect.ipynb` (cells flagged `slow`, `cuda`
   or `data` left out, as in the tests), runs all cells, and checks that the three inspection widgets rendered with
   their images and that no cell printed an error;
4. saves screenshots to `runs/browser/` (`site_<page>.png`, `lab_<view>.png`, `lab_notebook.png`; for pages with
   equations also `site_<page>_eq_<tag>.png` views of the first equations, and `site_<page>_fig<n>.png` of each figure).

Exit status 0 when everything passed; servers started here are stopped on the way out.
"""
from __future__ import annotations
import argparse, contextlib, functools, http.server, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = '/usr/bin/chromium'
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--no-first-run', '--disable-dev-shm-usage']
VIEWS = {'soft_labels': '.itr-soft-labels', 'false_negatives': '.itr-false-negatives', 'tag_masks': '.itr-tag-masks'}


def log(msg): print(f'[browser] {msg}', flush=True)


def ensure_chromium():
    "Install Debian's chromium with apt-get when it is missing."
    if Path(CHROMIUM).exists(): return
    log('chromium missing: apt-get install -y chromium')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    if subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium'], env=env).returncode:
        subprocess.run(['apt-get', 'update', '-q'], env=env, check=False)
        subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium'], env=env, check=True)
    if not Path(CHROMIUM).exists(): sys.exit(f'[browser] {CHROMIUM} still missing after apt-get install chromium')


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@contextlib.contextmanager
def serve(directory:Path):
    "Serve `directory` on 127.0.0.1 in a thread; yields the base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', free_port()), functools.partial(Quiet, directory=str(directory)))
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}/'
    finally: srv.shutdown(); srv.server_close()


def watch(page, problems:list):
    "Record console errors, uncaught exceptions and requests that leave localhost (answered with an abort)."
    page.on('console', lambda m: problems.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
    page.on('pageerror', lambda e: problems.append(f'page error: {e}'))
    def route(r):
        host = urlparse(r.request.url).hostname
        if r.request.url.startswith(('data:', 'blob:')) or host in ('127.0.0.1', 'localhost'): return r.continue_()
        problems.append(f'request leaving localhost: {r.request.url}'); return r.abort()
    page.route('**/*', route)


PAGE_JS = """(api) => {
  const main = document.querySelector('.md-content') || document.body;
  const imgs = [...main.querySelectorAll('img')];
  const text = main.innerText;
  const shown = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const displays = [...main.querySelectorAll('.MathJax_Display')];
  return {loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length, images: imgs.length,
          figures: imgs.filter(i => i.complete && i.naturalWidth > 0 && shown(i) && i.closest('.jp-OutputArea')).length,
          svgs: main.querySelectorAll('.jp-OutputArea svg, .output svg').length,
          missing_api: api.filter(n => !document.getElementById(n.toLowerCase()) && !document.getElementById(n)),
          directives: (text.match(/^\\s*#\\s*\\|.*$/gm) || []).slice(0, 3),
          noise: (text.match(/^.*(\\d+%\\|.*\\||\\d+(\\.\\d+)?it\\/s\\]|Loading weights).*$/gm) || []).slice(0, 3),
          stderr: main.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
          equations: displays.filter(shown).length,
          equation_text: displays.filter(shown).map(e => e.innerText.replace(/\\s+/g, '')),
          equation_overflow: displays.filter(e => shown(e) && e.scrollWidth > e.clientWidth + 1).map(e => e.innerText.replace(/\\s+/g, '').slice(-12)),
          math_errors: main.querySelectorAll('.MathJax_Error, .merror').length + (text.includes('Math Processing Error') ? 1 : 0),
          raw_tex: (text.match(/\\\\tag\\{[^}]*\\}|\\$\\$/g) || []).slice(0, 3),
          title: document.title};
}"""
MATH_READY = """(n) => !!(window.MathJax && MathJax.Hub) && document.querySelectorAll('.MathJax_Display').length >= n
                 && !document.querySelector('.MathJax_Processing, .MathJax_Preview:not(:empty)')"""
REQUIRED = {'methods.html': dict(figures=3, tags=20)}   # the method reference: its diagrams and numbered equations


def check_math(page, p:dict, info:dict, shots:Path) -> list:
    "Equations of a page with tags: all rendered by MathJax, each tag visible as '(tag)'; screenshots of the first ones."
    problems, tags = [], p.get('tags', [])
    if info['equations'] < len(tags): problems.append(f"{info['equations']} rendered equations for {len(tags)} tagged ones")
    missing = [t for t in tags if not any(f'({t})' in e for e in info['equation_text'])]
    if missing: problems.append(f"equation tags not shown: {missing[:5]}")
    if info['equation_overflow']: problems.append(f"equations wider than the column (their tags scroll out of view): {info['equation_overflow'][:3]}")
    if info['math_errors']: problems.append(f"{info['math_errors']} MathJax errors")
    if info['raw_tex']: problems.append(f"unrendered TeX in the text: {info['raw_tex']}")
    for t in tags[:3]:
        a = page.locator(f'[id="eq-{t.replace(".", "-")}"]')
        if a.count():
            a.first.scroll_into_view_if_needed(); page.screenshot(path=str(shots/f"site_{p['page'][:-5]}_eq_{t}.png"))
    return problems


def check_site(browser, out:Path, shots:Path) -> list:
    "Load every page of the built site; returns the failures."
    pages = json.loads((out/'pages.json').read_text()); failures = []
    with serve(out) as base:
        ctx = browser.new_context(viewport={'width': 1280, 'height': 900})
        for p in pages:
            page, problems = ctx.new_page(), []
            watch(page, problems)
            try:
                r = page.goto(base + p['page'], wait_until='load', timeout=60_000)
                if r is None or r.status != 200: problems.append(f'HTTP {r and r.status}')
                page.wait_for_load_state('networkidle', timeout=30_000)
                need = REQUIRED.get(p['page'], {})
                if p.get('tags') or need.get('tags'):
                    try: page.wait_for_function(MATH_READY, arg=len(p.get('tags', [])) or 1, timeout=60_000, polling=250)
                    except Exception: problems.append('MathJax did not typeset the equations within 60 s')
                info = page.evaluate(PAGE_JS, p['api'])
                if info['loaded'] + info['svgs'] < p['figures']:
                    problems.append(f"{info['loaded']} loaded images (+{info['svgs']} svg) for {p['figures']} figures in {p['notebook']}")
                if info['loaded'] < info['images']: problems.append(f"{info['images'] - info['loaded']} images failed to load")
                if info['missing_api']: problems.append(f"API entries missing: {info['missing_api'][:5]}")
                if info['directives']: problems.append(f"directive lines shown: {info['directives']}")
                if info['noise']: problems.append(f"progress bars or library logs shown: {info['noise']}")
                if info['stderr']: problems.append(f"{info['stderr']} stderr blocks shown")
                if len(p.get('tags', [])) < need.get('tags', 0): problems.append(f"{len(p.get('tags', []))} tagged equations, at least {need['tags']} expected")
                if info['figures'] < need.get('figures', 0): problems.append(f"{info['figures']} figures shown, at least {need['figures']} expected")
                if p.get('tags'): problems += check_math(page, p, info, shots)
                for k, img in enumerate(page.locator('.jp-OutputArea img').all()[:4] if need else []):
                    img.scroll_into_view_if_needed(); img.screenshot(path=str(shots/f"site_{p['page'][:-5]}_fig{k + 1}.png"))
                page.screenshot(path=str(shots/f"site_{p['page'][:-5]}.png"), full_page=True)
            except Exception as e: problems.append(f'{type(e).__name__}: {e}')
            finally: page.close()
            status = 'ok' if not problems else 'FAILED'
            log(f"site {p['page']}: {status} ({p['figures']} figures, {len(p['api'])} API entries"
                + (f", {len(p['tags'])} tagged equations" if p.get('tags') else '') + ')')
            failures += [f"{p['page']}: {x}" for x in problems]
        ctx.close()
    return failures


def _lab_settings(d:Path):
    "JupyterLab user settings: no news pop-up over screenshots, every cell kept in the page."
    for ext, name, val in (('@jupyterlab/apputils-extension', 'notification', {'fetchNews': 'false', 'checkForUpdates': False}),
                           ('@jupyterlab/notebook-extension', 'tracker', {'windowingMode': 'none'})):
        (d/ext).mkdir(parents=True, exist_ok=True); (d/ext/f'{name}.jupyterlab-settings').write_text(json.dumps(val))


def _inspection_copy(dst:Path) -> Path:
    "nbs/19_inspect.ipynb without the cells the tests skip (slow, cuda, data), as the notebook to open."
    from nbdev.config import get_config
    flags = set(get_config(ROOT).tst_flags.split())
    nb = json.loads((ROOT/'nbs'/'19_inspect.ipynb').read_text())
    def skip(c):
        first = [l.strip() for l in ''.join(c['source']).splitlines() if l.strip().startswith('#|')]
        return c['cell_type'] == 'code' and any(l.lstrip('#| ').split(':')[0].strip() in flags for l in first)
    nb['cells'] = [c for c in nb['cells'] if not skip(c)]
    for c in nb['cells']:
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
    p = dst/'19_inspect.ipynb'; p.write_text(json.dumps(nb, indent=1)); return p


KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""
RUN_DONE = """(n) => {
  const w = window.jupyterapp.shell.currentWidget, k = w.sessionContext.session.kernel;
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);
  const done = prompts.filter(t => /\\[\\d+\\]/.test(t)).length;
  return k.status === 'idle' && !prompts.some(t => t.includes('*')) && done >= n;
}"""
LAB_JS = """(views) => {
  const out = {};
  for (const [name, sel] of Object.entries(views)) {
    const el = document.querySelector(sel);
    const imgs = el ? [...el.querySelectorAll('img')] : [];
    out[name] = {present: !!el, images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                 text: el ? el.innerText.slice(0, 200) : ''};
  }
  out.errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
                  + '.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')]
               .map(e => e.innerText.slice(0, 300)).filter(t => /Error|Traceback/.test(t));
  out.widget_errors = [...document.querySelectorAll('.jupyter-widgets-view, .jp-OutputArea-output')]
               .map(e => e.innerText).filter(t => /Error displaying widget|model not found/i.test(t)).slice(0, 3);
  return out;
}"""


def check_lab(browser, shots:Path, timeout:int) -> list:
    "Open the inspection notebook in JupyterLab, run all cells, check the three widget views; returns the failures."
    failures, tmp = [], Path(tempfile.mkdtemp(prefix='itr-lab-'))
    nb = _inspection_copy(tmp)
    n_code = sum(c['cell_type'] == 'code' for c in json.loads(nb.read_text())['cells'])
    (tmp/'settings').mkdir(); _lab_settings(tmp/'settings')
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'),
               MPLBACKEND='module://matplotlib_inline.backend_inline', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    cmd = [str(BIN/'jupyter-lab'), '--allow-root', '--no-browser', '--ip=127.0.0.1', f'--port={port}', f'--ServerApp.root_dir={tmp}',
           f'--IdentityProvider.token={token}', '--LabApp.expose_app_in_browser=True', '--ServerApp.open_browser=False',
           '--LabApp.news_url=']
    logf = open(tmp/'lab.log', 'w')
    lab = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    try:
        import urllib.request
        while True:                                          # the server answers its API once it is up
            if lab.poll() is not None: return [f'JupyterLab exited with status {lab.returncode}: see {tmp}/lab.log']
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=2); break
            except Exception:
                if time.time() - t0 > 90: return [f'JupyterLab did not answer within 90 s: see {tmp}/lab.log']
                time.sleep(1)
        log(f'JupyterLab up in {time.time() - t0:.0f} s')
        ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
        page, problems = ctx.new_page(), []
        page.on('pageerror', lambda e: problems.append(f'page error: {e}'))
        page.goto(f'http://127.0.0.1:{port}/lab/tree/{nb.name}?token={token}', wait_until='load', timeout=60_000)
        page.wait_for_function(KERNEL_READY, timeout=120_000, polling=500)     # toolbar "idle" comes too early
        log(f'kernel connected and idle after {time.time() - t0:.0f} s; running all cells')
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_timeout(2000)
        page.wait_for_function(RUN_DONE, arg=n_code, timeout=timeout * 1000, polling=1000)
        page.wait_for_timeout(1500)                          # let the widget views finish rendering
        info = page.evaluate(LAB_JS, VIEWS)
        log(f'all {n_code} code cells ran after {time.time() - t0:.0f} s')
        for name, sel in VIEWS.items():
            v = info[name]
            if not v['present']: failures.append(f'lab: widget {name} ({sel}) not rendered'); continue
            if v['loaded'] < 1 or v['loaded'] < v['images']: failures.append(f"lab: widget {name}: {v['loaded']} of {v['images']} images loaded")
            el = page.locator(sel).first; el.scroll_into_view_if_needed(); el.screenshot(path=str(shots/f'lab_{name}.png'))
            log(f"lab widget {name}: {v['loaded']} images; text: {v['text'][:80]!r}")
        failures += [f'lab: error output: {e}' for e in info['errors']] + [f'lab: {e}' for e in info['widget_errors']]
        failures += [f'lab: {p}' for p in problems]
        page.screenshot(path=str(shots/'lab_notebook.png'), full_page=False)
        ctx.close()
    except Exception as e:
        failures.append(f'lab: {type(e).__name__}: {e}')
        with contextlib.suppress(Exception): page.screenshot(path=str(shots/'lab_failure.png'))
    finally:
        with contextlib.suppress(ProcessLookupError): os.killpg(lab.pid, signal.SIGTERM)
        try: lab.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError): os.killpg(lab.pid, signal.SIGKILL)
        logf.close()
        if not failures: shutil.rmtree(tmp, ignore_errors=True)
        else: log(f'JupyterLab log kept in {tmp}/lab.log')
    return failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--no-build', action='store_true', help='check the site already in _docs/')
    p.add_argument('--skip-site', action='store_true'); p.add_argument('--skip-lab', action='store_true')
    p.add_argument('--shots', default=str(ROOT/'runs'/'browser'), help='screenshot folder')
    p.add_argument('--lab-timeout', type=int, default=240, help='seconds for the notebook to run in JupyterLab')
    a = p.parse_args(argv)
    t0 = time.time()
    ensure_chromium()
    shots = Path(a.shots); shutil.rmtree(shots, ignore_errors=True); shots.mkdir(parents=True)
    if not a.skip_site and not a.no_build:
        log('building the site: scripts/build_docs.py')
        if subprocess.run([sys.executable, str(ROOT/'scripts'/'build_docs.py')], cwd=ROOT).returncode: sys.exit('[browser] the docs build failed')
    from playwright.sync_api import sync_playwright
    failures = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            if not a.skip_site: failures += check_site(browser, ROOT/'_docs', shots)
            if not a.skip_lab: failures += check_lab(browser, shots, a.lab_timeout)
        finally: browser.close()
    n = len(list(shots.glob('*.png')))
    if failures:
        print('\n'.join(['[browser] FAILED:'] + [f'  {f}' for f in failures]), file=sys.stderr)
        log(f'{n} screenshots in {shots} ({time.time() - t0:.0f} s)'); return 1
    log(f'passed: {n} screenshots in {shots} ({time.time() - t0:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
