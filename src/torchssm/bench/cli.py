"""``torchssm bench <what>``: each benchmark lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; they are imported lazily."""

from __future__ import annotations

import importlib

# sub-command -> (module, help)
BENCHMARKS = {
    "scan": ("torchssm.bench.scan", "linear scan backends vs the naive loop and a same-size copy"),
    "kernels": ("torchssm.bench.kernels", "Triton scan kernels (CUDA) as a fraction of the copy bandwidth"),
    "ops": ("torchssm.bench.ops", "selective scan and SSD vs their naive versions"),
    "layers": ("torchssm.bench.layers", "forward+backward time and memory of every layer vs a Transformer"),
    "generate": ("torchssm.bench.generate", "tokens/s and memory while generating: SSM step vs KV cache"),
    "peers": ("torchssm.bench.peers", "interleaved ratios against the GEMM floor and peers (jax.lax.scan)"),
    "extrapolation": ("torchssm.bench.extrapolation", "evaluate a checkpoint trained at length L at 2L..16L"),
}


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="speed / memory benchmarks")
    which = bench.add_subparsers(dest="bench", metavar="BENCHMARK")
    for name, (module_name, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue  # not written yet
            raise
        parser = which.add_parser(name, help=help_text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run)
