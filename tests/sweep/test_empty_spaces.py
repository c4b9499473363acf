"""A search space with nothing to search (an empty file, no params) is refused in one line, before any
store is made: a sweep of it would run identical trials with no parameters."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from hcmbench.cli import main

TINY = {"model": "dcgan", "objective": {"metric": "fid", "images": 8}, "budget": {"epochs": 1}}


@pytest.mark.parametrize("text, says", [
    ("", "the search space is empty"),
    ("# only a comment\n", "the search space is empty"),
    (yaml.safe_dump(TINY), "no parameters to search"),
    (yaml.safe_dump({**TINY, "params": {}}), "no parameters to search"),
    (yaml.safe_dump({**TINY, "params": None}), "no parameters to search"),
])
def test_a_space_with_nothing_to_search_is_refused_before_the_stores(text, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "space.yaml").write_text(text)
    for extra in ([], ["--print-space"]):
        result = CliRunner().invoke(main, ["sweep", "--model", "dcgan", "--space", "space.yaml", "--trials", "1", *extra])
        assert result.exit_code == 2, result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: space.yaml: ") and says in lines[0], result.output
        assert "--print-space" in lines[0]  # where a space to start from comes from
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # no mlruns/, no study
