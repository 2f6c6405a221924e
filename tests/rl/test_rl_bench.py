"""rl bench at tiny shapes: widths equalise the memory parameter counts, rows and the table are complete;
the reward-table Markdown aggregates seeds."""

from torchssm.rl.bench import bench_ppo_update, memory_params, width_for
from torchssm.rl.table import _markdown


def test_widths_equalise_parameter_counts():
    for name in ("gru", "lru", "window_transformer"):
        d = width_for(name, 20_000)
        assert d % 8 == 0
        assert abs(memory_params(name, d) - 20_000) <= abs(memory_params(name, d + 8) - 20_000)


def test_bench_rows_and_table(tmp_path):
    out = tmp_path / "bench.json"
    result = bench_ppo_update(
        ["gru", "lru"], [16, 32], target_params=5_000, batch=2, repeats=1, episode_length=8, out=str(out)
    )
    assert out.is_file() and len(result["rows"]) == 4
    assert all(r["cpu_s"] > 0 for r in result["rows"])
    assert "x GRU" in result["markdown"] and "L=32" in result["markdown"]


def test_reward_table_markdown():
    rows = [
        {
            "env": "e",
            "model": "lru",
            "seed": s,
            "eval_return": v,
            "eval_stderr": 0.0,
            "env_steps": 10,
            "train_cpu_s": 2.0,
        }
        for s, v in ((0, 0.5), (1, 0.7))
    ]
    md = _markdown(rows, ["lru", "gru"])
    assert "0.600 ± 0.141 (n=2)" in md and "| - |" in md
    assert md.splitlines()[0].startswith("| env | lru | gru |")
