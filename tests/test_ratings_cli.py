"""The command line: file formats, output formats, options and error messages."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from arena.ratings.cli import main, read_battles
from arena.ratings.simulate import random_ratings, simulate_battles

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    battles = simulate_battles(random_ratings(5, seed=1), 3_000, seed=2)
    battles["anony"] = True
    battles["judge"] = "u" + (battles.index % 40).astype(str)
    battles["is_code"] = battles.index % 3 == 0
    return battles


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("battles")
    paths = {
        "parquet": folder / "battles.parquet",
        "jsonl": folder / "battles.jsonl",
        "json": folder / "battles.json",
    }
    sample.to_parquet(paths["parquet"])
    sample.to_json(paths["jsonl"], orient="records", lines=True)
    sample.to_json(paths["json"], orient="records")
    return paths


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "json"])
def test_reads_every_supported_file_kind(files, sample, kind):
    battles = read_battles(files[kind])
    pd.testing.assert_series_equal(battles["winner"], sample["winner"], check_dtype=False)
    assert battles["anony"].dtype == bool


def test_json_output_lists_the_required_fields(files, capsys):
    assert main([str(files["jsonl"]), "--bootstrap", "50", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)
    assert len(records) == 5
    for key in ("model", "rating", "ci_lower", "ci_upper", "rank", "votes", "win_rate"):
        assert key in records[0]
    assert records == sorted(records, key=lambda r: -r["rating"])
    assert "5 models rated from 3000 battles" in err


def test_same_seed_same_output_across_file_kinds(files, capsys):
    outputs = []
    for kind in ("parquet", "jsonl"):
        main([str(files[kind]), "--bootstrap", "40", "--seed", "3", "--format", "csv"])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert outputs[0].splitlines()[0].startswith("model,rating,ci_lower,ci_upper,rank")


def test_table_output_with_category_anchor_and_filters(files, capsys):
    argv = [
        str(files["parquet"]),
        "--bootstrap",
        "30",
        "--category",
        "code",
        "--anchor",
        "model-002=1200",
        "--daily-vote-cap",
        "10",
        "--drop-anomalous-users",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "model-002 1200.0 [1200.0, 1200.0]" in out
    assert re.search(r"category -\d+ \(is_code is true\)", err)
    assert "daily_vote_cap -" in err


def test_bad_input_is_reported_with_the_column_or_value(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"model_a": "x", "model_b": "y"}\n')
    assert main([str(missing)]) == 2
    assert "missing column 'winner'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n' * 2)
    bad.write_text(bad.read_text() + '{"model_a": "x", "model_b": "y", "winner": "draw"}\n')
    assert main([str(bad)]) == 2
    assert "row 2: winner 'draw' is not one of" in capsys.readouterr().err
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"\x00\x01 not a table")
    assert main([str(garbage)]) == 2
    assert "cannot read as Parquet or JSON lines" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.parquet")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(bad), "--anchor", "x"]) == 2
    assert "MODEL=SCORE" in capsys.readouterr().err


def test_nothing_to_rate_exits_with_one(tmp_path, capsys):
    path = tmp_path / "one.jsonl"
    path.write_text('{"model_a": "x", "model_b": "x", "winner": "tie"}\n')
    assert main([str(path), "--format", "json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert "note: no battles between two different models" in err


def test_module_entry_point(files):
    result = subprocess.run(
        [sys.executable, "-m", "arena.ratings", str(files["parquet"]), "--bootstrap", "10"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:3] == ["rank", "model", "rating"]
