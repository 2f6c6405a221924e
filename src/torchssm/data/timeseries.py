"""UCR/UEA time-series classification from ``.ts`` files, with the copies that Python packages ship.

The ``.ts`` format (sktime/aeon; Bagnall et al., UEA & UCR archive, timeseriesclassification.com):
header lines ``@problemName``, ``@univariate``, ``@equalLength``, ``@classLabel true <labels...>``,
then ``@data`` and one case per line: the channels separated by ``:``, the values of a channel by
``,``, the class label last (``1.0,2.0,3.0:4.0,5.0,6.0:classA``); ``?`` is a missing value.

Where the files come from (first hit wins): ``<data root>/UCR/<Name>/<Name>_{TRAIN,TEST}.ts``
(or ``<data root>/<Name>/``), else the copies bundled in an installed ``aeon`` or ``sktime``
wheel (both ship e.g. GunPoint, ArrowHead, ItalyPowerDemand, OSULeaf, BasicMotions,
JapaneseVowels under ``<package>/datasets/data/``). The files are located through the
package's installed file list, without importing the package, and parsed here: neither package
is a dependency of torchssm.

Examples: {"inputs": (L, channels) float32, "targets": () long, "lengths": () long}; series of
unequal length are right-padded with zeros; in a file that declares ``@equalLength true`` a case
of another length (a truncated row) is an error naming file and line. Missing values become 0.
``standardize`` (default) subtracts the training mean and divides by the training std of each
channel.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

from torchssm.checks import unit_interval
from torchssm.data.loaders import TensorDictDataset, resolve_data_dir
from torchssm.data.lra.common import DataFormatError, split_off
from torchssm.data.registry import TaskData, TaskInfo, register_task

CITATION = "Dau et al. 2019, The UCR Time Series Archive; Bagnall et al. 2018, The UEA multivariate archive"
PACKAGES = ("aeon", "sktime")
ARCHIVE_URL = "https://www.timeseriesclassification.com/dataset.php"


def read_ts(path) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """Parse a ``.ts`` file: series [(l_i, channels) float32], labels [str], class names from the header."""
    path = Path(path)
    series, labels, classes, in_data = [], [], None, False
    equal_length, series_length = False, None  # from @equalLength / @seriesLength
    with open(path, "rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            try:
                line = raw_bytes.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise DataFormatError(f"{path}:{lineno}: invalid UTF-8 at byte {err.start} of the line") from None
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@equallength"):
                    equal_length = low.split()[1:2] == ["true"]
                elif low.startswith("@serieslength"):
                    try:
                        series_length = int(line.split()[1])
                    except (IndexError, ValueError):
                        raise DataFormatError(
                            f"{path}:{lineno}: expected '@seriesLength <integer>', got {line[:60]!r}"
                        ) from None
                elif low.startswith("@classlabel"):
                    parts = line.split()
                    if len(parts) < 2 or parts[1].lower() != "true":
                        raise DataFormatError(
                            f"{path}:{lineno}: only labelled (@classLabel true ...) files are supported"
                        )
                    classes = parts[2:]
                elif low.startswith("@data"):
                    in_data = True
                    if not classes:
                        raise DataFormatError(f"{path}:{lineno}: @data before a '@classLabel true <labels>' line")
                continue
            *channels, label = line.split(":")
            if not channels:
                raise DataFormatError(f"{path}:{lineno}: expected 'values[:values...]:label', got {line[:60]!r}")
            if label not in classes:
                raise DataFormatError(f"{path}:{lineno}: class label {label!r} not declared in @classLabel {classes}")
            try:
                chans = [[float("nan") if v.strip() == "?" else float(v) for v in c.split(",")] for c in channels]
            except ValueError as err:
                raise DataFormatError(f"{path}:{lineno}: bad value ({err})") from None
            if len({len(c) for c in chans}) != 1:
                raise DataFormatError(f"{path}:{lineno}: channels of one case must have the same length")
            if equal_length:  # a truncated (or overlong) case would otherwise be zero-padded silently
                expected = series_length if series_length is not None else (len(series[0]) if series else None)
                if expected is not None and len(chans[0]) != expected:
                    what = "@seriesLength" if series_length is not None else "the first case"
                    raise DataFormatError(
                        f"{path}:{lineno}: the file declares @equalLength true but this case has "
                        f"{len(chans[0])} values per channel, {what} {expected}"
                    )
            series.append(torch.tensor(chans, dtype=torch.float32).T.contiguous())  # (l, channels)
            labels.append(label)
    if not series:
        raise DataFormatError(f"{path}: no cases after @data")
    if len({s.shape[1] for s in series}) != 1:
        raise DataFormatError(f"{path}: cases have different numbers of channels")
    return series, labels, classes


def _package_dir(package: str, name: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file(f"{package}/datasets/data/{name}"))
    return folder if (folder / f"{name}_TRAIN.ts").exists() else None


def find_ts(name: str, data_dir=None) -> Path:
    """The folder holding ``<name>_TRAIN.ts`` and ``<name>_TEST.ts``."""
    root = resolve_data_dir(data_dir)
    for folder in (root / "UCR" / name, root / name):
        if (folder / f"{name}_TRAIN.ts").exists() and (folder / f"{name}_TEST.ts").exists():
            return folder
    for package in PACKAGES:
        folder = _package_dir(package, name)
        if folder is not None and (folder / f"{name}_TEST.ts").exists():
            return folder
    raise FileNotFoundError(
        f"UCR/UEA data set {name!r} not found in {root / 'UCR' / name} nor in an installed {' or '.join(PACKAGES)} "
        f"package. Download {name}.zip from {ARCHIVE_URL} and put {name}_TRAIN.ts and {name}_TEST.ts into "
        f"{root / 'UCR' / name} (data root from --data-dir or $TORCHSSM_DATA), or `pip install aeon` "
        f"(it ships GunPoint, ArrowHead, ItalyPowerDemand, OSULeaf, BasicMotions, JapaneseVowels)."
    )


def _stack(series: list[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros(len(series), length, series[0].shape[1])  # (n, L, c)
    for i, s in enumerate(series):
        out[i, : s.shape[0]] = s[:length]
    lengths = torch.tensor([min(s.shape[0], length) for s in series])
    return torch.nan_to_num(out, nan=0.0), lengths


@register_task("ucr", "UCR/UEA time-series classification from .ts files (e.g. GunPoint; aeon/sktime copies)")
def build(
    data_dir=None, seed: int = 0, dataset: str = "GunPoint", standardize: bool = True, val_fraction: float = 0.0
) -> TaskData:
    """UCR/UEA data set ``dataset`` (train/test as released; ``val_fraction`` of train held out, seeded)."""
    name = str(dataset)
    folder = find_ts(name, data_dir)
    tr_series, tr_labels, classes = read_ts(folder / f"{name}_TRAIN.ts")
    te_series, te_labels, _ = read_ts(folder / f"{name}_TEST.ts")
    length = max(s.shape[0] for s in tr_series + te_series)
    index = {c: i for i, c in enumerate(classes)}
    x_tr, l_tr = _stack(tr_series, length)
    x_te, l_te = _stack(te_series, length)
    if standardize:
        valid = torch.arange(length)[None, :] < l_tr[:, None]  # (n, L) steps that are not padding
        vals = x_tr[valid]  # (steps, c)
        mean, std = vals.mean(0), vals.std(0).clamp_min(1e-8)
        x_tr = torch.where(valid[..., None], (x_tr - mean) / std, 0.0)
        x_te = torch.where((torch.arange(length)[None, :] < l_te[:, None])[..., None], (x_te - mean) / std, 0.0)
    train = TensorDictDataset(inputs=x_tr, targets=torch.tensor([index[c] for c in tr_labels]), lengths=l_tr)
    test = TensorDictDataset(inputs=x_te, targets=torch.tensor([index[c] for c in te_labels]), lengths=l_te)
    val = None
    if val_fraction:
        unit_interval("val_fraction", val_fraction, "a fraction", include_one=False)
        rest, held = split_off(len(train), val_fraction, seed)
        train, val = train.subset(rest), train.subset(held)
    info = TaskInfo(
        name="ucr",
        d_input=int(x_tr.shape[-1]),
        d_output=len(classes),
        length=length,
        kind="classification",
        input_kind="real",
        citation=CITATION,
    )
    return TaskData(
        info=info, train=train, val=val, test=test, extra={"folder": str(folder), "classes": classes, "dataset": name}
    )
