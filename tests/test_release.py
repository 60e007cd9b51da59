"""What a user adopting a release reads first: the licence, the version (one source, printed by
``mmctr --version``, recorded by every run), the changelog, the citation, the help texts, and
docs that list what the code defines."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

import mmctr
from mmctr import version as version_module
from mmctr.cli.main import DESCRIPTION, main
from mmctr.config import Config, preset_names
from mmctr.errors import ConfigError
from mmctr.experiments.rows import COLUMNS
from mmctr.training.summary import RunSummary

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_the_licence_declared_is_the_licence_shipped() -> None:
    assert PYPROJECT["license"] == "Apache-2.0" and PYPROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_version_has_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    installed = metadata.version("mmctr")
    assert mmctr.__version__ == installed == PYPROJECT["version"]
    assert help_of(["--version"], capsys) == f"mmctr {installed}\n"
    assert not re.search(r"__version__\s*=\s*['\"]", (ROOT / "src/mmctr/__init__.py").read_text())


def test_a_source_tree_never_installed_says_its_version_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", missing)
    assert version_module.mmctr_version() == "0+unknown"


def test_runs_record_the_version_and_old_runs_read_without_it() -> None:
    raw = {"best_epoch": 1, "best_valid": {"auc": 0.6, "logloss": 0.5, "gauc": 0.55},
           "epochs_run": 1, "train_seconds": 1.0}  # fmt: skip
    assert RunSummary.from_dict(raw, source="old").mmctr_version == ""
    summary = RunSummary.from_dict({**raw, "mmctr_version": "0.1.0"}, source="new")
    assert summary.mmctr_version == "0.1.0" and summary.to_dict()["mmctr_version"] == "0.1.0"
    saved = {**Config().to_dict(), "mmctr_version": "0.1.0"}  # a run's config.json
    assert Config.from_saved(saved, source="config.json") == Config()
    with pytest.raises(ConfigError, match=r"unknown section \[mmctr_version\]"):
        Config.from_dict(saved, source="a.toml")  # a config file holds sections only


def test_the_changelog_keeps_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, flags=re.M)
    assert releases[0] == ("Unreleased", "")
    dated = [Version(v) for v, day in releases if day]
    version = Version(PYPROJECT["version"])
    if version.is_devrelease or version.is_prerelease:  # on its way: after the newest release
        assert version > dated[0], f"{version} is not after the newest release {dated[0]}"
    else:  # a release: it has its dated entry
        assert version in dated, f"no dated entry for {version}"
    kinds = set(re.findall(r"^### (\w+)", text, flags=re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert "inverted padding mask" in text and "fidelity fix" in text


def test_the_citation_cites_the_paper_and_mmctr() -> None:
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"message", "title", "authors"} <= set(cff) and all("name" in a for a in cff["authors"])
    assert cff["version"] == PYPROJECT["version"] and cff["license"] == PYPROJECT["license"]
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("1st Place Solution of WWW 2025 EReL@MIR Workshop")
    assert paper["url"] == "https://arxiv.org/abs/2505.03543" and paper["authors"]


def test_the_help_is_for_users_and_lists_every_preset(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping, so that names stay whole
    top = help_of(["--help"], capsys)
    assert " ".join(DESCRIPTION.split()) in " ".join(top.split())
    assert "commands.py" not in top and "the work is in" not in top
    train = help_of(["train", "--help"], capsys)
    assert {"converge", "qin", "qin-cpu"} <= set(preset_names())
    assert f"a shipped preset: {', '.join(preset_names())}" in train


def test_the_results_csv_columns_in_the_docs_are_runrow_s() -> None:
    text = (ROOT / "docs" / "experiments.md").read_text()
    found = re.search(r"`results\.csv` has these columns: `([^`]+)`", text)
    assert found is not None, "docs/experiments.md no longer lists the results.csv columns"
    assert [c.strip() for c in found[1].split(",")] == list(COLUMNS)
