"""Reaching an MLflow tracking store: the client (mlflow imported only when asked), an early
check that the store answers, and the experiment that runs are logged in."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mmctr.errors import ConfigError, TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

INSTALL_HINT = "pip install 'mmctr[track]'"
CONNECT_SECONDS = 5.0  # a server that does not accept a connection by then is not there


def mlflow_client(uri: str) -> MlflowClient:
    """A client of the store at ``uri``; ConfigError naming the extra without mlflow."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(
            f"--track needs the mlflow package (the track extra): {INSTALL_HINT}"
        ) from None
    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str) -> None:
    """TrackingError unless a server accepts a connection, or a SQLite store's folder exists
    (seconds, where MLflow's own retries would take minutes)."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https"):
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), CONNECT_SECONDS).close()
        except OSError as exc:
            raise TrackingError(
                f"--track {uri}: cannot reach the tracking server at {parts.hostname}:{port} "
                f"({exc}); is it running?"
            ) from None
    folder = sqlite_folder(uri)
    if folder is not None and not folder.is_dir():
        raise TrackingError(f"--track {uri}: the folder {folder} does not exist")


def sqlite_folder(uri: str) -> Path | None:
    """The folder of a SQLite store's file; None for other stores and one in memory."""
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve().parent


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None, uri: str) -> str:
    """The id of the active experiment ``name``, created (with ``artifact_location``) when
    missing; TrackingError when the store cannot be used or the experiment is deleted."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(client.create_experiment(name, artifact_location=artifact_location))
            except MlflowException:  # created meanwhile by another process: use that one
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
    except Exception as exc:  # the store's own errors are many (SQL, HTTP, permissions)
        raise TrackingError(
            f"--track {uri}: cannot use the tracking store ({type(exc).__name__}: {exc})"
        ) from None
    if found.lifecycle_stage != "active":
        raise TrackingError(
            f"--track {uri}: the experiment {name!r} is deleted there; restore it or choose "
            "another with --track-experiment"
        )
    return str(found.experiment_id)
