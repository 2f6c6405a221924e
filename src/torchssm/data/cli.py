"""``torchssm tasks``: list the registered tasks; ``tasks check-pathfinder``: the marker-distance check of the
Pathfinder generator; ``tasks show-pathfinder``: a grid of its images."""

from __future__ import annotations

import json

from torchssm.data.registry import list_tasks


def _run_tasks(args) -> int:
    tasks = list_tasks()
    width = max((len(name) for name in tasks), default=0)
    for name, description in tasks.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _run_check_pathfinder(args) -> int:
    from torchssm.data.lra.pathfinder import marker_distance_check

    if args.n_train < 2 or args.n_test < 2:
        raise SystemExit("--n-train and --n-test must be at least 2")
    result = marker_distance_check(
        n_train=args.n_train,
        n_test=args.n_test,
        size=args.size,
        seed=args.seed,
        num_workers=args.workers,
        progress=True,
    )
    print(json.dumps(result, indent=1))
    verdict = "PASS" if result["test_accuracy"] <= args.max_accuracy else "FAIL"
    print(
        f"{verdict}: marker distance alone predicts the label with {result['test_accuracy']:.1%} test accuracy "
        f"(limit {args.max_accuracy:.0%})"
    )
    return 0 if verdict == "PASS" else 1


def _run_show_pathfinder(args) -> int:
    from torchssm.data.lra.pathfinder import plot_examples

    print(plot_examples(args.out, n=args.n, size=args.size, seed=args.seed))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="list the registered tasks; check-pathfinder: shortcut check")
    parser.set_defaults(func=_run_tasks)
    sub = parser.add_subparsers(dest="tasks_command")
    check = sub.add_parser(
        "check-pathfinder", help="fit a logistic regression on the marker distance of generated Pathfinder images"
    )
    check.add_argument("--n-train", type=int, default=10000, help="images to fit on (default 10000)")
    check.add_argument("--n-test", type=int, default=10000, help="further images to score on (default 10000)")
    check.add_argument("--size", type=int, default=32, choices=(32, 64, 128, 256))
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--workers", type=int, default=1, help="worker processes (default 1: also reports images/s)")
    check.add_argument(
        "--max-accuracy", type=float, default=0.60, help="exit 1 when the test accuracy is above this (default 0.60)"
    )
    check.set_defaults(func=_run_check_pathfinder)
    show = sub.add_parser("show-pathfinder", help="save a grid of generated Pathfinder images")
    show.add_argument("--out", required=True, help="figure path (.png, .svg or .pdf)")
    show.add_argument("--n", type=int, default=16)
    show.add_argument("--size", type=int, default=32, choices=(32, 64, 128, 256))
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(func=_run_show_pathfinder)
