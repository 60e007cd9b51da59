"""A corpus of malformed inputs, each run through the real command line (docs/reliability.md).

Every case (corpus_cases.py) breaks one input of a command that works on the unbroken inputs,
and must exit 2 with a message naming the file and the column (and the row or line where there
is one), print no traceback, and leave nothing behind: the folder that receives the command's
output (a run, a submission, a converted data set) is as empty afterwards as it was before.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import TINY_TOML
from corpus_cases import CASES, Bench, Case

from mmctr.cli.main import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@pytest.fixture(scope="module")
def trained_run(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus-run")
    (root / "tiny.toml").write_text(TINY_TOML)
    run = root / "run"
    argv = ["train", "--data", tiny_data_master, "--config", root / "tiny.toml", "--out", run]
    assert main([str(a) for a in argv] + ["--set", "train.epochs=1", "--no-progress"]) == 0
    return run


@pytest.fixture
def bench(
    tiny_data: Path,
    tiny_config_file: Path,
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Bench:
    return Bench(tmp_path, tiny_data, tiny_config_file, trained_run, monkeypatch)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "predict", "convert interactions", "convert microlens-50k"]
)
def test_the_unbroken_inputs_pass(
    bench: Bench, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = bench.argv(command) + (["--set", "train.epochs=1"] if command == "train" else [])
    code, err = run_cli(argv, capsys)
    assert code == 0, err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_and_names_it(
    bench: Bench, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.name.endswith("(chmod 000)") and os.geteuid() == 0:
        pytest.skip("root reads any file whatever its mode; the EACCES case covers this path")
    case.setup(bench)
    code, err = run_cli(bench.argv(case.command), capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for words in case.expect:
        assert words in err, f"{words!r} not in {err!r}"
    assert list(bench.out_dir.iterdir()) == [], "a failed command leaves no output"


def test_the_docs_table_lists_every_case() -> None:
    section = DOC.read_text().split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row[2].strip() for row in rows] == [case.name for case in CASES]
    assert [row[3].strip() for row in rows] == [f"`mmctr {case.command}`" for case in CASES]
    assert len(CASES) >= 40
