"""Progress through ``logging``: -q / -v on the command line, RUN/train.log in every run folder
(the CLI's, a resumed one, an experiment's), and library callers left to configure logging."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

import mmctr
from mmctr.cli.main import main
from mmctr.logs import logger, to_terminal
from mmctr.training.run_log import RunLog

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def train(data: Path, config: Path, out: Path, *flags: str) -> int:
    return main(["train", "--data", str(data), "--config", str(config), "--out", str(out),
                 "--set", "train.epochs=1", *flags])  # fmt: skip


def log_lines(run: Path) -> list[str]:
    """train.log without its timestamps (each line is checked to have one)."""
    lines = (run / "train.log").read_text().splitlines()
    assert all(STAMP.match(line) for line in lines)
    return [STAMP.sub("", line) for line in lines]


def epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def test_train_writes_its_log_into_the_run_folder(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    assert train(tiny_data_master, tiny_config_file, run) == 0
    out = capsys.readouterr().out
    lines = log_lines(run)
    assert lines[0].startswith(f"mmctr {mmctr.__version__} (process ")
    assert f"new run in {run}; 3,000 train / 500 valid rows, schema " in lines[0]
    assert epoch_lines(out) == epoch_lines("\n".join(lines)) and len(epoch_lines(out)) == 1
    assert lines[-1].startswith("done: best epoch 1 of 1; valid auc ")
    assert "loaded 3,000 train" in out and out.rstrip().endswith(f"run in {run}")


def test_a_resumed_run_continues_its_log(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run, seen = tmp_path / "run", []

    def ctrl_c_after_epoch_1(line: str) -> None:  # a caller's own log gets every line
        seen.append(line)
        if line.startswith("epoch "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mmctr.train(tiny_data_master, tiny_config_file, run, log=ctrl_c_after_epoch_1)
    first = log_lines(run)
    assert first[1:-1] == seen[1:] and first[-1] == "stopped: interrupted"  # seen[0]: loaded
    assert main(["train", "--data", str(tiny_data_master), "--out", str(run), "--resume"]) == 0
    lines = log_lines(run)
    assert lines[: len(first)] == first
    assert f"resume of {run}" in lines[len(first)]
    assert f"resuming {run} after epoch 1" in lines
    assert [line.split()[1] for line in epoch_lines("\n".join(lines))] == ["1", "2"]
    assert lines[-1].startswith("done: best epoch") and " of 2; " in lines[-1]


@pytest.mark.parametrize("flags", [("--quiet",), ("-q",)], ids=["before", "after"])
def test_quiet_shows_no_progress_but_the_run_keeps_it(
    flags: tuple[str, ...], tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data_master), "--config", str(tiny_config_file),
            "--out", str(run), "--set", "train.epochs=1"]  # fmt: skip
    argv = [*flags, *args] if flags == ("--quiet",) else [*args, *flags]
    assert main(argv) == 0
    assert capsys.readouterr() == ("", "")
    assert len(epoch_lines("\n".join(log_lines(run)))) == 1


def test_verbose_adds_debug_lines_to_the_terminal_only(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    assert train(tiny_data_master, tiny_config_file, run, "--verbose") == 0
    out = capsys.readouterr().out
    assert "config, changed from the defaults: model.id_dim: 64 -> 8; " in out
    assert "train.epochs: 100 -> 1" in out and len(epoch_lines(out)) == 1
    assert not any("config, changed" in line for line in log_lines(run))


def test_the_terminal_handler_follows_the_streams_and_leaves_no_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger("mmctr")
    before = (list(root.handlers), root.level, root.propagate)
    for _ in range(2):  # main() called again and again in one process: no duplicate lines
        with to_terminal():
            logger("serve").info("status")
            logger("serve").debug("detail")
            logger("serve").warning("careful")
    assert capsys.readouterr() == ("status\nstatus\n", "careful\ncareful\n")
    assert (list(root.handlers), root.level, root.propagate) == before
    logger("serve").info("after main")  # a library again: nothing printed
    assert capsys.readouterr() == ("", "")


def test_library_callers_get_the_usual_logging(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="mmctr")
    mmctr.train(tiny_data_master, tiny_config_file, tmp_path / "run", overrides=["train.epochs=1"])
    assert capsys.readouterr().out == ""  # no handler of mmctr's own
    records = [r for r in caplog.records if r.name == "mmctr.training"]
    assert len(epoch_lines("\n".join(r.getMessage() for r in records))) == 1
    assert (tmp_path / "run" / "train.log").is_file()


def test_a_log_file_that_cannot_be_written_never_stops_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the run folder's name taken by a file: train.log cannot be made
    seen: list[str] = []
    with caplog.at_level(logging.WARNING, logger="mmctr"):
        log = RunLog(blocked, seen.append, "first")
        log("one")
        log("two")
    assert seen == ["one", "two"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write the run's log" in warnings[0]


def test_nothing_is_written_before_the_first_line(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), RunLog(tmp_path / "run", print, "first"):
        raise RuntimeError("before any line")
    assert not (tmp_path / "run").exists()  # a run that fails to start leaves no folder


def test_every_experiment_run_has_its_train_log(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "exp"
    assert main(["experiment", "sweep", "--data", str(tiny_data_master), "--config",
                 str(tiny_config_file), "--out", str(out), "--param", "train.lr",
                 "--values", "0.003", "--quick"]) == 0  # fmt: skip
    (run,) = (out / "runs").iterdir()
    lines = log_lines(run)
    assert f"new run in {run}" in lines[0] and len(epoch_lines("\n".join(lines))) == 1
    shown = capsys.readouterr().out
    assert f"[1/1] {run.name}: epoch   1" in shown
    assert f"[1/1] {run.name}: epoch   1" in (out / "experiment.log").read_text()
