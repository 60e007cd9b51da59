"""The challenge submission: a zip holding only prediction.csv with header ``ID,Task2``."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from mmctr.atomic import atomic_path


def write_submission(probs: np.ndarray, out: str | Path) -> Path:
    """Write row i's probability as ``i,p``; the zip appears whole or not at all."""
    out = Path(out)
    if out.suffix != ".zip":
        raise ValueError(f"{out}: a submission must be a .zip file")
    buf = io.StringIO()
    buf.write("ID,Task2\n")
    np.savetxt(
        buf, np.column_stack([np.arange(len(probs)), probs]), fmt=["%d", "%.8g"], delimiter=","
    )
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("prediction.csv", buf.getvalue())
    return out
