"""Helpers shared by the benchmark scripts (run as `python bench/<script>.py`, so this folder is on the path)."""
import time


def timed(f, repeat:int=1):
    "(best wall seconds over `repeat` calls of `f`, the last result)."
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); r = f(); best = min(best, time.perf_counter() - t0)
    return best, r
