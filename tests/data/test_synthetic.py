"""Synthetic tasks: declared shapes/dtypes, seeding, and each task's defining property."""

import pytest
import torch

from torchssm.data import build_task
from torchssm.data.synthetic.common import GeneratedDataset, example_seed
from torchssm.data.synthetic.signals import aa_ab_pair

SMALL = {"n_train": 24, "n_val": 4, "n_test": 8}

TASKS = {
    "copying": {"delay": 20},
    "selective_copying": {"length": 64},
    "induction_heads": {"length": 32, "test_lengths": (16, 64)},
    "mqar": {"length": 64, "vocab_size": 128, "num_kv_pairs": 8},
    "adding": {"length": 30},
    "aa_ab": {"length": 50},
}


def _check_example(info, ex):
    if info.input_kind == "tokens":
        assert ex["inputs"].shape == (info.length,) and ex["inputs"].dtype == torch.long
        assert 0 <= int(ex["inputs"].min()) and int(ex["inputs"].max()) < info.d_input
    else:
        assert ex["inputs"].shape == (info.length, info.d_input) and ex["inputs"].dtype == torch.float32
    if info.kind == "seq2seq":
        t = ex["targets"]
        assert t.shape == (info.length,) and t.dtype == torch.long
        scored = t[t != info.ignore_index]
        assert scored.numel() > 0 and int(scored.min()) >= 0 and int(scored.max()) < info.d_output
    elif info.kind == "classification":
        assert ex["targets"].shape == () and ex["targets"].dtype == torch.long
        assert 0 <= int(ex["targets"]) < info.d_output
    else:
        assert ex["targets"].shape == (info.d_output,) and ex["targets"].dtype == torch.float32


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_dtypes_and_seeding(name):
    a = build_task(name, seed=3, **SMALL, **TASKS[name])
    b = build_task(name, seed=3, **SMALL, **TASKS[name], materialize=False)
    c = build_task(name, seed=4, **SMALL, **TASKS[name])
    assert (len(a.train), len(a.val), len(a.test)) == (24, 4, 8)
    for split in ("train", "val", "test"):
        for i in (0, len(getattr(a, split)) - 1):
            ex = getattr(a, split)[i]
            _check_example(a.info, ex)
            lazy = getattr(b, split)[i]  # lazily generated == materialised
            for k in ex:
                torch.testing.assert_close(ex[k], lazy[k], rtol=0, atol=0)
    # another seed gives other data; train and test differ
    assert not torch.equal(a.train[0]["inputs"], c.train[0]["inputs"])
    assert not torch.equal(a.train[0]["inputs"], a.test[0]["inputs"])


def test_example_seed_is_spread_and_deterministic():
    seeds = {example_seed(0, s, i) for s in range(3) for i in range(1000)}
    assert len(seeds) == 3000
    assert example_seed(1, 2, 3) == example_seed(1, 2, 3)
    ds = GeneratedDataset(lambda g: {"x": torch.rand(2, generator=g)}, 5, 0, 0)
    torch.testing.assert_close(ds[-1]["x"], ds[4]["x"])
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("selective", [False, True])
def test_copying_targets_are_the_data_tokens_in_order(selective):
    name = "selective_copying" if selective else "copying"
    td = build_task(name, **SMALL, **TASKS[name])
    vocab, m = td.info.d_input, 16 if selective else 10
    for i in range(len(td.train)):
        x, y = td.train[i]["inputs"], td.train[i]["targets"]
        region = x[:-m]
        data = region[region != 0]
        assert data.numel() == m and bool(((data >= 1) & (data <= vocab - 2)).all())
        assert bool((x[-m:] == vocab - 1).all())
        torch.testing.assert_close(y[-m:], data)
        assert bool((y[:-m] == td.info.ignore_index).all())
        if not selective:
            torch.testing.assert_close(x[:m], data)


def test_selective_copying_mamba_preset():
    td = build_task("selective_copying", preset="mamba", n_train=2, n_val=0, n_test=1)
    assert (td.info.length, td.info.d_input, td.info.kind) == (4096, 16, "seq2seq")
    assert td.val is None
    x = td.train[0]["inputs"]
    assert int((x[:-16] != 0).sum()) == 16
    with pytest.raises(ValueError, match="preset"):
        build_task("selective_copying", preset="bogus")


def test_induction_heads_answer_and_extrapolation_sets():
    td = build_task("induction_heads", **SMALL, **TASKS["induction_heads"])
    special = td.info.d_input - 1
    for ds in [td.train, *td.extra["test_lengths"].values()]:
        for i in range(len(ds)):
            x, y = ds[i]["inputs"], ds[i]["targets"]
            where = (x == special).nonzero().flatten().tolist()
            assert len(where) == 2 and where[1] == len(x) - 1
            assert int(y[-1]) == int(x[where[0] + 1]) and int(y[-1]) != special
            assert bool((y[:-1] == -100).all())
    assert {n: ds[0]["inputs"].shape[0] for n, ds in td.extra["test_lengths"].items()} == {16: 16, 64: 64}


def test_mqar_layout_matches_zoologys_documented_example():
    """Zoology's multiquery_ar docstring: vocab 12, 2 pairs (2, 8), (4, 7), queries for 4 then 2, no filler."""
    from torchssm.data.synthetic.recall import mqar_sequence

    keys, values, gaps = torch.tensor([2, 4]), torch.tensor([8, 7]), torch.tensor([4, 1])
    x, y = mqar_sequence(keys, values, gaps, 16)
    assert x.tolist() == [2, 8, 4, 7, 0, 0, 4, 0, 0, 0, 0, 0, 2, 0, 0, 0]
    assert {i: v for i, v in enumerate(y.tolist()) if v != -100} == {6: 7, 12: 8}


@pytest.mark.parametrize("random_non_queries", [False, True])
def test_mqar_defining_properties(random_non_queries):
    """Distinct keys in 1..V/2-1, distinct values in V/2..V-1, K queries at even offsets after the pairs,
    each scored with the value paired with its key; filler 0 (Zoology Fig. 2) or any token."""
    length, vocab, k = 64, 128, 8
    td = build_task(
        "mqar", length=length, vocab_size=vocab, num_kv_pairs=k, **SMALL, random_non_queries=random_non_queries
    )
    fillers = []
    for i in range(len(td.train)):
        x, y = td.train[i]["inputs"], td.train[i]["targets"]
        keys, values = x[0 : 2 * k : 2], x[1 : 2 * k : 2]
        assert len(set(keys.tolist())) == k and len(set(values.tolist())) == k
        assert bool(((keys >= 1) & (keys < vocab // 2)).all() and ((values >= vocab // 2) & (values < vocab)).all())
        scored = (y != -100).nonzero().flatten()
        assert scored.numel() == k and bool((scored >= 2 * k).all() and ((scored - 2 * k) % 2 == 0).all())
        assert sorted(x[scored].tolist()) == sorted(keys.tolist())  # each key queried exactly once
        table = dict(zip(keys.tolist(), values.tolist()))
        assert all(table[int(x[p])] == int(y[p]) for p in scored.tolist())
        rest = torch.ones(length, dtype=torch.bool)
        rest[: 2 * k], rest[scored] = False, False
        fillers.append(x[rest])
    fill = torch.cat(fillers)
    if random_non_queries:
        assert int(fill.max()) < vocab and len(set(fill.tolist())) > vocab // 2  # spread over the vocabulary
    else:
        assert bool((fill == 0).all())
    with pytest.raises(ValueError, match="4 \\* num_kv_pairs"):
        build_task("mqar", length=64, vocab_size=128, num_kv_pairs=17)


def test_mqar_query_gaps_follow_zoologys_power_law():
    """With one pair the query's gap is one draw from p(i) ~ (i+1)^(a-1), a = 0.01 (Zoology)."""
    from torchssm.data.synthetic.recall import mqar_example

    length, a, n = 22, 0.01, 4000  # space = (22 - 2) / 2 = 10 gaps
    gaps = torch.tensor(
        [
            int(
                (
                    mqar_example(torch.Generator().manual_seed(i), length=length, vocab_size=32, num_kv_pairs=1)[
                        "targets"
                    ]
                    != -100
                ).nonzero()
            )
            - 2
            for i in range(n)
        ]
    )
    assert bool((gaps % 2 == 0).all())
    freq = torch.bincount(gaps // 2, minlength=10).double() / n
    p = torch.arange(1, 11, dtype=torch.float64) ** (a - 1)
    torch.testing.assert_close(freq, p / p.sum(), atol=0.025, rtol=0)  # binomial s.d. <= 0.008
    assert float(freq[0]) > 2.5 * float(freq[9])  # the near gaps dominate: not uniform


def test_mqar_defaults_are_zoologys_figure2_setting():
    """vocab 8192, L 256, 16 pairs, filler 0, 100k train / 3k test (zoology iclr24_zoology_figure2/configs.py)."""
    td = build_task("mqar")
    assert (td.info.length, td.info.d_input, td.info.d_output) == (256, 8192, 8192)
    assert (len(td.train), len(td.test)) == (100000, 3000)
    x, y = td.test[0]["inputs"], td.test[0]["targets"]
    assert int((y != -100).sum()) == 16 and int((x == 0).sum()) == 256 - 2 * 16 - 16


def test_adding_problem_target_is_sum_of_marked_values():
    td = build_task("adding", **SMALL, **TASKS["adding"])
    for i in range(len(td.train)):
        x, y = td.train[i]["inputs"], td.train[i]["targets"]
        marks = x[:, 1].nonzero().flatten()
        assert marks.numel() == 2 and marks[0] < 15 <= marks[1]
        torch.testing.assert_close(y, x[marks, 0].sum().reshape(1))


def test_aa_ab_pair_and_labels():
    pair = aa_ab_pair(20, gap=10)
    assert pair.shape == (2, 20, 1)
    assert pair[0, :, 0].nonzero().flatten().tolist() == [0, 10] and float(pair[1, 10, 0]) == -1.0
    assert float(aa_ab_pair(20, 10, first_differs=True)[1, 0, 0]) == -1.0
    td = build_task("aa_ab", noise=0.0, **SMALL, **TASKS["aa_ab"])
    labels = torch.stack([td.train[i]["targets"] for i in range(len(td.train))])
    assert 0 < int(labels.sum()) < len(labels)
    for i in range(len(td.train)):
        torch.testing.assert_close(td.train[i]["inputs"], aa_ab_pair(50)[int(labels[i])])
    with pytest.raises(ValueError, match="gap"):
        build_task("aa_ab", length=10, gap=10)


@pytest.mark.parametrize(
    "name, bad",
    [
        ("copying", {"n_tokens": 0}),
        ("adding", {"length": "10"}),
        ("selective_copying", {"length": 20, "n_tokens": 16}),
        ("induction_heads", {"test_lengths": (2,)}),
    ],
)
def test_bad_options_raise(name, bad):
    with pytest.raises(ValueError):
        build_task(name, **bad)


def test_task_defaults_are_the_builders_keyword_defaults():
    from torchssm.data.registry import task_defaults

    defaults = task_defaults("copying")
    assert "seed" in defaults and "data_dir" in defaults
    with pytest.raises(ValueError, match="unknown task 'no_such_task'"):
        task_defaults("no_such_task")
    pytest.importorskip("espeakng_loader")
    sentences = task_defaults("spoken_sentences")
    assert sentences["n_val"] == 100 and sentences["extra_train_accents"] == [] and sentences["snr_db"] is None


def test_a_task_option_left_out_counts_as_its_default_when_resuming():
    from torchssm.data.registry import task_defaults, with_task_defaults
    from torchssm.train.loop import config_differences

    assert task_defaults("copying")["delay"] == 100
    old = {"task": {"name": "copying", "seed": 0}, "model": {}, "train": {}}  # saved before the option existed
    same = {"task": {"name": "copying", "seed": 0, "delay": 100}, "model": {}, "train": {}}  # writes its default
    assert config_differences(old, same) == [] and config_differences(same, old) == []
    other = {"task": {"name": "copying", "seed": 0, "delay": 50}, "model": {}, "train": {}}
    assert config_differences(old, other) == ["task.delay: checkpoint 100 != now 50"]
    assert with_task_defaults({"name": "no_such_task", "a": 1}) == {"name": "no_such_task", "a": 1}  # as it is
    assert with_task_defaults({"a": 1}) == {"a": 1}
    unknown = {"task": {"name": "no_such_task"}, "model": {}, "train": {}}
    differs = config_differences(unknown, {**unknown, "task": {"name": "no_such_task", "a": 1}})
    assert differs == ["task.a: checkpoint None != now 1"]
