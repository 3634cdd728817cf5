"""CPU benchmark of SpatialRecurrentCoparser: implementation="gemm" vs the literal "shift".

Run it as ``.venv/bin/python benchmarks/coparser.py`` (``--help`` for options). For every
map size ``h = w`` and channel count ``c`` it measures, side by side in one run:

- part ``coparse``: the coparsing step alone (Eq. 5-8, the four groups,
  :meth:`SpatialRecurrentCoparser.coparse` on ``(b, n, c)`` inputs);
- part ``layer``: the whole layer (Eq. 1-10 and the fusion) in training mode, with
  ``--words`` words of ``--text-dim`` channels (a third of them padding).

Columns: forward time (under ``torch.no_grad``, i.e. inference), forward+backward time
(a training step: output summed and back-propagated into the inputs and parameters), and
the peak memory of each, for "gemm" and "shift" and their ratio shift/gemm. Times are the
median of ``--repeats`` runs after ``--warmup`` runs.

Peak memory on CPU: there is no allocator high-water mark to read as on CUDA, and the
process RSS mixes in the allocator's caching and earlier work. So each step is run once
more under ``torch.profiler.profile(profile_memory=True)``, which records every
allocation and free made through PyTorch's CPU allocator (all threads) with a timestamp.
Sorting those events by time and taking the maximum of the running sum gives the peak
number of bytes of tensor storage the step had live *on top of* what existed before it
(inputs and parameters are allocated beforehand, so they are not counted; activations
saved for backward, temporaries and the gradients produced are). This is the quantity
the implementation controls and the one that grows with batch size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rislayers.coparser import SpatialRecurrentCoparser  # noqa: E402

IMPLEMENTATIONS = ("gemm", "shift")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_seconds(step, *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def quiet_stderr():
    """Discard what C++ code writes to stderr (the profiler logs every start and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(step) -> int:
    """Peak live tensor bytes allocated by ``step`` beyond what existed before it."""
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def make_steps(part: str, implementation: str, *, size: int, dim: int, batch: int, text_dim: int, words: int):
    """(forward, forward+backward) closures for one configuration, with their inputs."""
    torch.manual_seed(0)
    layer = SpatialRecurrentCoparser(dim, text_dim, size=(size, size), implementation=implementation).train()
    n = size * size
    if part == "coparse":
        inputs = [torch.randn(batch, n, dim, requires_grad=True) for _ in range(2)]

        def run():
            return layer.coparse(*inputs)
    else:
        vis = torch.randn(batch, dim, size, size, requires_grad=True)
        text = torch.randn(batch, words, text_dim, requires_grad=True)
        lengths = torch.arange(batch) % words + max(1, words - words // 3)
        mask = torch.arange(words)[None, :] < lengths.clamp(max=words)[:, None]
        inputs = [vis, text]

        def run():
            return layer(vis, text, mask)

    def clear_grads():
        for tensor in list(inputs) + list(layer.parameters()):
            tensor.grad = None

    def forward():
        with torch.no_grad():
            run()

    def forward_backward():
        clear_grads()
        run().sum().backward()

    return forward, forward_backward, clear_grads


def measure(part, implementation, args, size, dim):
    forward, forward_backward, clear_grads = make_steps(
        part, implementation, size=size, dim=dim, batch=args.batch, text_dim=args.text_dim, words=args.words
    )
    result = {
        "fwd": median_seconds(forward, warmup=args.warmup, repeats=args.repeats),
        "fb": median_seconds(forward_backward, warmup=args.warmup, repeats=args.repeats),
    }
    clear_grads()
    result["mem_fwd"] = peak_bytes(forward)
    clear_grads()
    result["mem_fb"] = peak_bytes(forward_backward)
    clear_grads()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 15, 16, 20], help="map sizes h = w")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768], help="visual channels c")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-dim", type=int, default=768, help="word channels d (whole layer)")
    parser.add_argument("--words", type=int, default=20, help="words per sentence l (whole layer)")
    parser.add_argument("--parts", nargs="+", choices=("coparse", "layer"), default=["coparse", "layer"])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"batch {args.batch}, median of {args.repeats} after {args.warmup} warm-up; "
          f"layer: l={args.words} words, d={args.text_dim}, training mode")
    print("times in ms; peak = extra tensor bytes live during the step (MiB); x = shift/gemm")
    header = (
        f"{'part':8} {'h=w':>3} {'c':>4} | {'fwd gemm':>9} {'shift':>9} {'x':>6} | {'f+b gemm':>9} {'shift':>9} {'x':>6} | "
        f"{'pk fwd gemm':>11} {'shift':>9} {'x':>6} | {'pk f+b gemm':>11} {'shift':>9} {'x':>6}"
    )
    print(header)
    print("-" * len(header))
    table = {}
    for part in args.parts:
        for size in args.sizes:
            for dim in args.dims:
                res = {impl: measure(part, impl, args, size, dim) for impl in IMPLEMENTATIONS}
                table[part, size, dim] = res
                g, s = res["gemm"], res["shift"]
                mib = 2.0**20
                print(
                    f"{part:8} {size:>3} {dim:>4} | "
                    f"{g['fwd'] * 1e3:9.2f} {s['fwd'] * 1e3:9.2f} {s['fwd'] / g['fwd']:6.1f} | "
                    f"{g['fb'] * 1e3:9.2f} {s['fb'] * 1e3:9.2f} {s['fb'] / g['fb']:6.1f} | "
                    f"{g['mem_fwd'] / mib:11.1f} {s['mem_fwd'] / mib:9.1f} {s['mem_fwd'] / max(g['mem_fwd'], 1):6.1f} | "
                    f"{g['mem_fb'] / mib:11.1f} {s['mem_fb'] / mib:9.1f} {s['mem_fb'] / max(g['mem_fb'], 1):6.1f}",
                    flush=True,
                )

    # Acceptance targets of issue #3 (h = w = 16, c = 768, batch 8).
    key_c, key_l = ("coparse", 16, 768), ("layer", 16, 768)
    if args.batch == 8 and key_c in table and key_l in table:
        c, l = table[key_c], table[key_l]
        checks = [
            ("coparse fwd >= 3x faster", c["shift"]["fwd"] / c["gemm"]["fwd"] >= 3),
            ("coparse fwd+bwd >= 3x faster", c["shift"]["fb"] / c["gemm"]["fb"] >= 3),
            ("coparse peak fwd >= 2x smaller", c["shift"]["mem_fwd"] / c["gemm"]["mem_fwd"] >= 2),
            ("coparse peak fwd+bwd >= 2x smaller", c["shift"]["mem_fb"] / c["gemm"]["mem_fb"] >= 2),
            ("layer fwd faster", l["shift"]["fwd"] > l["gemm"]["fwd"]),
            ("layer fwd+bwd faster", l["shift"]["fb"] > l["gemm"]["fb"]),
        ]
        print("targets at h=w=16, c=768, batch 8: " + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
