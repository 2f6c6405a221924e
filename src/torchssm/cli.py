"""``torchssm`` command line: train | eval | average | presets | tasks | bench | plot | length-eval |
robustness | generate | export | vision | rl | timeseries | world | speech | transcribe | tokenizer | lm | theory
(``torchssm --help``).

Each group of commands lives next to the code it drives and exposes ``register(subparsers)``;
this module only assembles them (nothing imports ``cli``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules that add sub-commands. A module that is missing (not written yet, or an optional
# dependency absent) simply contributes no command.
_COMMAND_MODULES = (
    "torchssm.train.cli",  # train, eval
    "torchssm.train.averaging",  # average (weight averaging of one run's checkpoints)
    "torchssm.presets.cli",  # presets
    "torchssm.data.cli",  # tasks
    "torchssm.bench.cli",  # bench
    "torchssm.analysis.cli",  # plot
    "torchssm.analysis.length",  # length-eval (accuracy vs test length)
    "torchssm.analysis.robustness",  # robustness (accuracy under Fourier-mode input noise)
    "torchssm.models.cli",  # generate
    "torchssm.models.export",  # export (ONNX)
    "torchssm.vision.cli",  # vision (restore, cost, classify, pretrain, longvq, video)
    "torchssm.rl.cli",  # rl (POPGym PPO, meta-RL)
    "torchssm.timeseries.cli",  # timeseries (HiSS / IMU, forecasting, irregular sampling)
    "torchssm.worldmodel.cli",  # world (S4WM world models on MiniGrid)
    "torchssm.audio.cli",  # transcribe, speech (synthetic speech, ASR, keyword spotting)
    "torchssm.lm.cli",  # tokenizer train, lm eval (language modelling on text)
    "torchssm.theory.cli",  # theory (SSD duality, HiPPO, S4D-LegS, selectivity, MQAR, Koopman, Granger)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchssm", description="Structured state-space sequence models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and (err.name == name or name.startswith(err.name + ".")):
                continue  # that command group does not exist (yet)
            raise
        module.register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (so captured or redirected stderr works)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_library_messages() -> None:
    """The CLI shows the library's INFO messages (which data set was read, from where) on stderr, one line each.

    Only the ``torchssm`` logger is configured, once; a program that imports torchssm keeps its own logging setup.
    """
    logger = logging.getLogger("torchssm")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("torchssm: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    _show_library_messages()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
        # Bad input (unknown key, missing file, wrong shape): one clear line, not a traceback.
        print(f"torchssm {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
