"""The README's feature-visualisation snippet runs as printed and writes its PNGs."""

from pathlib import Path

import pytest

README = Path(__file__).parents[3] / "README.md"


@pytest.mark.slow
def test_the_readme_snippet_runs(tmp_path, monkeypatch):
    section = README.read_text(encoding="utf-8").split("## Feature visualisation: `nsp.optvis`")[1]
    code = section.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["channel.png", "class3.png", "dream.png", "steps-0.png", "steps-1.png", "steps-2.png"]
