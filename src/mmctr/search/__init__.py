"""Hyper-parameter search on Optuna (the ``search`` extra): a TOML space of config keys
(``space.py``, read and checked by ``space_file.py``), trials that are ordinary run folders
stopped early by a pruner (``trial.py``), a study in SQLite that a killed search resumes
(``study.py``), the loop that asks for trials and tells their outcomes, one or several at a
time (``driver.py``), and the search's tables, plots and best config (``report.py``)."""

from mmctr.search.driver import SearchResult, SearchSettings, run_search
from mmctr.search.space import Param, Space
from mmctr.search.space_file import load_space, space_names

__all__ = [
    "Param",
    "SearchResult",
    "SearchSettings",
    "Space",
    "load_space",
    "run_search",
    "space_names",
]
