"""Writing a run's scoring graph as ONNX or TorchScript, checked against the model it came from.

Each file carries its interface (input widths, context columns, vocabulary sizes) as JSON: the
ONNX model in its ``metadata_props["mmctr"]``, the TorchScript archive as the extra file
``mmctr.json``, so that a service can check its inputs without the run folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr.api import load_run
from mmctr.atomic import atomic_path
from mmctr.errors import ConfigError
from mmctr.export.graph import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Interface,
    ScoringGraph,
    example_inputs,
    fixed_layout_graph,
    interface,
)

FORMATS = ("onnx", "torchscript")
CHECK_ROWS = 256  # random rows scored by both the model and the written file


def export_run(
    run_dir: str | Path,
    data_dir: str | Path | None,
    fmt: str,
    out: str | Path,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Write the best model of ``run_dir`` with its item table baked in to ``out``.

    The table is the one the run keeps; ``data_dir`` (None: none) is checked against it, and
    is needed by a run written before runs kept their table (``mmctr.load_run``).

    Returns what was written: path, format, bytes, interface, the largest difference of
    probabilities between the file and the model on ``CHECK_ROWS`` random rows (None for ONNX
    when onnxruntime is not installed), and seconds taken. The file appears whole or not at
    all; an existing one is replaced only with ``force``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    if fmt == "onnx":
        _require_onnx()
    t0 = time.perf_counter()
    scorer = load_run(run_dir, data_dir, device="cpu")
    graph = fixed_layout_graph(scorer)
    iface = interface(scorer)
    meta = {**iface.to_dict(), "format": fmt, "run": str(run_dir), "torch": torch.__version__}
    writer = _write_onnx if fmt == "onnx" else _write_torchscript
    with atomic_path(out) as tmp:
        writer(graph, iface, meta, tmp)
        check = _check(graph, iface, fmt, tmp)
    return {
        "path": str(out),
        "format": fmt,
        "bytes": out.stat().st_size,
        "interface": iface.to_dict(),
        "max_abs_diff_check": check,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _require_onnx() -> None:
    """Fail before the run is loaded when the ONNX exporter's packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"--format onnx needs the export extra ({exc.name} is not installed): "
            "pip install 'mmctr[export]'"
        ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters warn about optional operators and deprecations that do not concern us."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _write_onnx(graph: ScoringGraph, iface: Interface, meta: dict[str, Any], path: Path) -> None:
    """torch.export's graph (dynamic batch dimension) translated to ONNX in a single file."""
    # a finite upper bound: torch 2.6's export rejects an unbounded batch whose guards
    # exclude the largest int64 (2**30 rows is beyond any batch that fits in memory)
    batch = torch.export.Dim("batch", min=1, max=2**30)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            graph,
            example_inputs(iface),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
            dynamo=True,
            verbose=False,
        )
    if program is None:  # only the legacy exporter returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props["mmctr"] = json.dumps(meta, sort_keys=True)
    program.save(str(path), external_data=False)


def _write_torchscript(
    graph: ScoringGraph, iface: Interface, meta: dict[str, Any], path: Path
) -> None:
    """A trace of the fixed-layout graph: no branch in it depends on the data, so the trace
    is the whole program; the batch size stays a runtime value."""
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(graph, example_inputs(iface), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"mmctr.json": json.dumps(meta)})


def _check(graph: ScoringGraph, iface: Interface, fmt: str, path: Path) -> float | None:
    """Max |prob difference| between the written file and ``graph`` on random rows."""
    inputs = example_inputs(iface, batch=CHECK_ROWS)
    with torch.no_grad():
        expected = graph(*inputs)[0].numpy()
    if fmt == "torchscript":
        with _quiet(), torch.no_grad():
            got = torch.jit.load(str(path))(*inputs)[0].numpy()
    else:
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: t.numpy() for name, t in zip(INPUT_NAMES, inputs, strict=True)}
        got = session.run([OUTPUT_NAMES[0]], feeds)[0]
    return float(np.abs(np.asarray(got) - expected).max())
