"""``torchssm presets``: list the presets shipped with the package, or show one.

torchssm presets                     one line each: name, task, model, epochs, what it is
torchssm presets lra                 only those under lra/
torchssm presets mnist1d_lru         the file itself (header comment with the citations, then the values)
torchssm presets mnist1d_lru --path  where it is (cp "$(torchssm presets mnist1d_lru --path)" my.yaml)
"""

from __future__ import annotations

import shutil

from torchssm.presets import OTHER_COMMANDS, describe, list_presets, other_command, preset_path


def register(subparsers) -> None:
    p = subparsers.add_parser("presets", help="list the experiment presets shipped with torchssm (train --preset NAME)")
    p.add_argument("name", nargs="?", help="a preset to show, or an area (a sub-folder such as lra) to list")
    p.add_argument("--path", action="store_true", help="print only the preset's file path")
    p.set_defaults(func=run)


def run(args) -> int:
    names = list_presets()
    area = (args.name or "").strip("/")
    if args.name and area not in {n.split("/")[0] for n in names if "/" in n}:
        path = preset_path(args.name)
        print(path if args.path else path.read_text(encoding="utf-8"), end="\n" if args.path else "")
        return 0
    if args.path:
        raise ValueError("--path needs a preset name, e.g. torchssm presets mnist1d_lru --path")
    shown = [n for n in names if not area or n.startswith(area + "/")]
    width = max(map(len, shown), default=0)
    columns = shutil.get_terminal_size((120, 24)).columns
    for name in shown:
        line = f"{name:<{width}}  {describe(name)}"
        print(line if len(line) <= columns else line[: columns - 3] + "...")
    print(f"{len(shown)} presets; run one with `torchssm train --preset NAME`, show it with `torchssm presets NAME`")
    for pattern, command in OTHER_COMMANDS.items():
        if any(other_command(n) == command for n in shown):
            print(f"  except {pattern}: {command}")
    return 0
