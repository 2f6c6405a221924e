"""`torchssm vision --preset`: vision presets are found by the shared lookup (torchssm.presets), or read from a path."""

import pytest

from torchssm.presets import PRESET_DIR, list_presets
from torchssm.vision.cli import load_preset


def test_vision_presets_by_name_or_path(tmp_path):
    names = list_presets(PRESET_DIR / "vision")
    assert "denoise_serpent" in names and all("/" not in n for n in names)
    by_name = load_preset("denoise_serpent")
    assert by_name == load_preset("denoise_serpent.yaml") == load_preset(PRESET_DIR / "vision" / "denoise_serpent.yaml")
    mine = tmp_path / "mine.yaml"
    mine.write_text("task: deblur\nsteps: 3\n")
    assert load_preset(str(mine)) == {"task": "deblur", "steps": 3}
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="expected a YAML mapping"):
        load_preset(tmp_path / "list.yaml")


@pytest.mark.parametrize("bad", ["denoise_serpnt", "lra/listops_s4d", "missing.yaml", ""])
def test_unknown_vision_preset_is_one_line_naming_the_presets(bad):
    with pytest.raises(FileNotFoundError, match=rf"no vision preset '{bad}'; expected a YAML path or one of \[") as err:
        load_preset(bad)
    assert "denoise_serpent" in str(err.value) and "\n" not in str(err.value)
