"""Time `build_benchmark` at the default size (12,000 images at 64 px) and report wall and CPU seconds and the load.

Run: .venv/bin/python bench/synth_build.py [--workers 2] [--out /tmp/synth_bench]
CPU seconds / workers is what the build would take on idle cores; compare it with the wall time to see contention."""
import argparse, os, shutil, time
from itr_nb.synth import build_benchmark

p = argparse.ArgumentParser(); p.add_argument('--workers', type=int, default=2); p.add_argument('--out', default='/tmp/synth_bench')
a = p.parse_args()
shutil.rmtree(a.out, ignore_errors=True)
load0, t0, c0 = os.getloadavg()[0], time.time(), os.times()
build_benchmark(a.out, workers=a.workers, progress=False)
wall, c1 = time.time() - t0, os.times()
cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
print(f"default benchmark, {a.workers} workers: wall {wall:.0f} s, CPU {cpu:.0f} s (all processes), "
      f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
