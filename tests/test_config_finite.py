"""Every float key of every config section, the model kinds' own sections included, refuses
nan and the infinities that TOML and ``--set`` both accept: exit 2 naming the file and the key,
before anything is read or written."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

import mmctr.model  # noqa: F401  (registers the shipped model kinds)
from mmctr.cli.main import main
from mmctr.config import SECTIONS, BeyondConfig, ModelConfig, load_config
from mmctr.config import kinds as config_kinds
from mmctr.config.kinds import kind_names, section_of_kind
from mmctr.errors import ConfigError

NON_FINITE = ("nan", "inf", "-inf")


def is_float(hint: object) -> bool:
    """A float field, or a tuple of floats."""
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0] is float
    return hint is float


def section_classes() -> dict[str, tuple[str | None, type]]:
    """Section name -> (the model kind it needs, its dataclass), for every section there is."""
    out: dict[str, tuple[str | None, type]] = {
        "data": (None, SECTIONS["data"]),
        "train": (None, SECTIONS["train"]),
        "model": (None, ModelConfig),
        "model.beyond": (None, BeyondConfig),
    }
    for kind in kind_names():
        out[f"model.{kind}"] = (kind, section_of_kind(kind))
    return out


def float_keys() -> list[tuple[str, str, str | None, bool]]:
    """(section, key, kind, is a list) of every float key."""
    keys = []
    for section, (kind, cls) in section_classes().items():
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if is_float(hint):
                keys.append((section, f.name, kind, typing.get_origin(hint) is tuple))
    return keys


FLOAT_KEYS = float_keys()
CASES = [(*key, value) for key in FLOAT_KEYS for value in NON_FINITE]


def test_the_float_keys_are_all_found() -> None:
    sections = {section for section, *_ in FLOAT_KEYS}
    assert {"train", "model.target_transformer", "model.din", "model.qin"} <= sections
    assert ("train", "lr", None, False) in FLOAT_KEYS and len(FLOAT_KEYS) >= 11


def toml_of(section: str, key: str, kind: str | None, is_list: bool, value: str) -> str:
    head = f'[model]\nkind = "{kind}"\n' if kind else ""
    literal = f"[{value}]" if is_list else value
    return f"{head}[{section}]\n{key} = {literal}\n"


def train(tmp_path: Path, config: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(tmp_path / "no-data"), "--config", str(config),
            "--out", str(tmp_path / "run"), "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("section", "key", "kind", "is_list", "value"),
    CASES,
    ids=[f"{s}.{k}={v}" for s, k, _, _, v in CASES],
)
def test_a_non_finite_float_exits_2_naming_the_key(
    section: str,
    key: str,
    kind: str | None,
    is_list: bool,
    value: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml_of(section, key, kind, is_list, value))
    assert main(train(tmp_path, path)) == 2
    err = capsys.readouterr().err
    assert f"{path}: {section}.{key} must be a finite number" in err, err
    base = tmp_path / "base.toml"
    base.write_text(f'[model]\nkind = "{kind}"\n' if kind else "")
    assert main(train(tmp_path, base, "--set", f"{section}.{key}={value}")) == 2
    err = capsys.readouterr().err
    assert f"{section}.{key} must be a finite number" in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_plug_in_section_gets_the_check_without_writing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kind's section that checks nothing itself still never holds nan: the loader checks."""

    @dataclasses.dataclass(frozen=True)
    class ProbeSection:
        rate: float = 0.5
        rates: tuple[float, ...] = (0.1,)

    monkeypatch.setitem(config_kinds._SECTIONS, "finite_probe", ProbeSection)
    path = tmp_path / "probe.toml"
    for line in ("rate = nan", "rates = [0.2, inf]"):
        path.write_text(f'[model]\nkind = "finite_probe"\n[model.finite_probe]\n{line}\n')
        with pytest.raises(ConfigError, match=r"model\.finite_probe\.rate"):
            load_config(path)
