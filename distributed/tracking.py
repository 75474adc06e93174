"""MLflow for pretraining runs: one MLflow run per ``tympan pretrain``, never a credential.

Who logs what (ANCHORS section 6: no Train-V2 MLflow callback in 2.60, so plain
``MlflowClient`` calls):

* the driver creates (or, on ``--resume``, reopens) the run before any worker starts and logs
  the flattened config as params and the Ray job id / cluster address as tags; at the end it
  logs the artifacts (config, summary, bad-clip list, final checkpoint) and closes the run;
* rank 0 of the Ray Train worker group logs the step metrics (:class:`MetricLogger`); the
  other ranks log nothing.

Default store: ``sqlite:///<absolute run dir>/mlflow.db`` (a relative sqlite path would resolve
in each Ray worker's own directory); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` name a server.
Everything logged as text passes :func:`redact`: values of credential-like environment
variables (AWS keys, tokens, passwords) and the user:password part of URLs become ``***``.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from tympan.config import flatten

EXPERIMENT = "tympan-pretrain"
# Environment variables whose values must never reach MLflow (matched on the name).
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|API_KEY|ACCESS_KEY|SESSION",
                          re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_MIN_SECRET_LEN = 6     # shorter values (a "1", a region) would blank out ordinary text


def default_tracking_uri(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cli_uri: str | None, run_dir: str | Path) -> str:
    """``--tracking-uri`` > ``MLFLOW_TRACKING_URI`` > sqlite in the run directory."""
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # sqlite:///rel.db is relative to each process's cwd: make it absolute once, here.
        uri = f"sqlite:///{os.path.abspath(uri[len('sqlite:///'):])}"
    return uri


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    vals = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(vals, key=len, reverse=True)


def redact(value: Any, secrets: Iterable[str] | None = None) -> str:
    """``value`` as text with credentials replaced by ``***``."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", str(value))
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, "***")
    return text


def ray_tags() -> dict[str, str]:
    """Ray job id, submission id (under ``ray job submit``) and cluster address of this driver."""
    import ray

    tags = {}
    try:
        ctx = ray.get_runtime_context()
        tags["ray.job_id"] = ctx.get_job_id()
        tags["ray.address"] = ctx.gcs_address
    except Exception:      # not connected: nothing to tag
        pass
    try:
        from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
        meta = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR, "{}")).get("metadata") or {}
        if meta.get("job_submission_id"):
            tags["ray.submission_id"] = meta["job_submission_id"]
    except (ImportError, ValueError):
        pass
    if os.environ.get("RAY_ADDRESS"):
        tags["ray.address_env"] = os.environ["RAY_ADDRESS"]
    return tags


class Tracker:
    """Driver side: create / reopen the run, params, tags, artifacts, final status."""

    def __init__(self, tracking_uri: str):
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.run_id: str | None = None

    def start(self, run_name: str | None, artifact_dir: str | Path | None = None,
              run_id: str | None = None, experiment: str = EXPERIMENT,
              tags: Mapping[str, Any] | None = None) -> str:
        """A new run (or the existing ``run_id`` when resuming, set back to RUNNING).

        Only ``MlflowClient`` calls: nothing here touches MLflow's process-global fluent state
        (active run, active experiment), which would leak into the caller's own MLflow use.
        """
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = Path(artifact_dir).resolve().as_uri() if artifact_dir else None
            exp_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        secrets = secret_values()
        self.run_id = self.client.create_run(
            exp_id, run_name=run_name,
            tags={k: redact(v, secrets) for k, v in (tags or {}).items()}).info.run_id
        return self.run_id

    def log_params(self, config: Mapping[str, Any]) -> None:
        """Flattened config as params; on a resumed run only keys it does not hold yet."""
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        secrets = secret_values()
        params = [Param(k, redact(v, secrets)[:6000]) for k, v in flatten(config).items()
                  if k not in have]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        secrets = secret_values()
        self.client.log_batch(self.run_id, tags=[RunTag(k, redact(v, secrets)) for k, v in tags.items()])

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        log_metrics(self.client, self.run_id, step, metrics)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, redact(text), artifact_file)

    def log_file(self, path: str, artifact_path: str | None = None) -> None:
        """A file (local path or a URI pyarrow can read, e.g. s3://) as an artifact."""
        if "://" in path and not path.startswith("file://"):
            import tempfile

            import pyarrow.fs as pafs
            fs, p = pafs.FileSystem.from_uri(path)
            with tempfile.TemporaryDirectory() as d:
                local = os.path.join(d, os.path.basename(p))
                pafs.copy_files(p, local, source_filesystem=fs)
                self.client.log_artifact(self.run_id, local, artifact_path)
            return
        self.client.log_artifact(self.run_id, path.removeprefix("file://"), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def log_metrics(client, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if v is not None]
    client.log_batch(run_id, metrics=batch)


class MetricLogger:
    """Rank 0's step metrics. A tracking failure warns (once) and never stops training."""

    def __init__(self, tracking_uri: str | None, run_id: str | None):
        self.uri, self.run_id = tracking_uri, run_id
        self._client = None
        self._failed = False

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.run_id:
            return
        try:
            if self._client is None:
                from mlflow.tracking import MlflowClient
                self._client = MlflowClient(self.uri)
            log_metrics(self._client, self.run_id, step, metrics)
        except Exception as e:       # the run matters more than its charts
            if not self._failed:
                warnings.warn(f"MLflow metric logging to {redact(self.uri)} failed (training goes "
                              f"on; later points are still tried): {redact(e)}")
            self._failed = True
