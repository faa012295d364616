"""A thin layer over ``kfp.Client`` that says clearly what went wrong.

``kfp.Client`` reports an endpoint that is down as a traceback after about 25
seconds of retries, and a refusal (401, 403, 404) as a raw HTTP dump. Here the
endpoint is probed once, quickly, before the client is built, and every failure
becomes a ``UserError`` naming the endpoint, what answered, and what to check.
The client's own chatter ("Experiment details: ...") goes to stderr, so a
command's ``--json`` output stays one JSON document.

The REST paths are KFP v2's (``/apis/v2beta1/...``), as the kfp 2.x client and
server speak them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubeloop.errors import UserError

HEALTHZ_PATH = "/apis/v2beta1/healthz"
PORT_FORWARD_HINT = "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"


def normalize_host(host: str | None) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash, or a UserError."""
    if not host:
        raise UserError(f"--host is required: the Kubeflow Pipelines endpoint, e.g. http://localhost:8080 "
                        f"after `{PORT_FORWARD_HINT}`")
    parsed = urllib.parse.urlsplit(host.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"--host {host!r} is not an http(s) URL (e.g. http://localhost:8080)")
    if parsed.query or parsed.fragment:
        raise UserError(f"--host {host!r} must not carry a query or fragment")
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"


def run_url(host: str, run_id: str) -> str:
    return f"{host}/#/runs/details/{run_id}"


def recurring_run_url(host: str, recurring_run_id: str) -> str:
    return f"{host}/#/recurringrun/details/{recurring_run_id}"


def experiment_url(host: str, experiment_id: str) -> str:
    return f"{host}/#/experiments/details/{experiment_id}"


def _refusal(host: str, status: int, detail: str) -> UserError:
    where = f"the Kubeflow Pipelines endpoint {host}"
    detail = f": {detail}" if detail else ""
    if status in (401, 403):
        word = "needs credentials" if status == 401 else "refused access"
        return UserError(
            f"{where} {word} (HTTP {status}{detail}). A multi-user Kubeflow needs a session "
            "cookie or token; KFP standalone behind a port-forward needs none"
        )
    if status == 404:
        return UserError(
            f"{where} answered 404{detail}: nothing serves the KFP v2 API there. Check the URL: "
            f"after `{PORT_FORWARD_HINT}` it is http://localhost:8080"
        )
    return UserError(f"{where} failed with HTTP {status}{detail}")


def _unreachable(host: str, reason: Any) -> UserError:
    text = str(reason)
    if isinstance(reason, ConnectionRefusedError) or "refused" in text.lower():
        why = "connection refused"
    elif isinstance(reason, socket.timeout | TimeoutError) or "timed out" in text.lower():
        why = "no answer (timed out)"
    elif isinstance(reason, socket.gaierror) or "name or service not known" in text.lower():
        why = "unknown host name"
    else:
        why = text
    return UserError(
        f"cannot reach the Kubeflow Pipelines endpoint {host}: {why}. Is KFP running, and is "
        f"`{PORT_FORWARD_HINT}` still open?"
    )


def _error_detail(body: bytes | str | None) -> str:
    """The server's own message from a KFP error body ({"error": ..., "message": ...})."""
    if not body:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except ValueError:
        return text.strip()[:200]
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or "")[:300]
    return ""


def check_endpoint(host: str, timeout: float = 10.0) -> dict[str, Any]:
    """GET the healthz path once; the parsed answer, or a UserError saying why not."""
    request = urllib.request.Request(host + HEALTHZ_PATH, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise _refusal(host, exc.code, _error_detail(exc.read())) from None
    except urllib.error.URLError as exc:
        raise _unreachable(host, exc.reason) from None
    except (TimeoutError, ConnectionError, OSError) as exc:
        raise _unreachable(host, exc) from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise UserError(f"{host}{HEALTHZ_PATH} did not answer JSON: is this the Kubeflow Pipelines UI or API?") from None
    if not isinstance(doc, dict):
        raise UserError(f"{host}{HEALTHZ_PATH} answered {doc!r}, not KFP's health document")
    return doc


@contextlib.contextmanager
def quiet_client() -> Iterator[None]:
    """kfp.Client prints links on stdout and warns about versions: keep stdout for results."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", FutureWarning)
        yield


@contextlib.contextmanager
def translate_errors(host: str, action: str) -> Iterator[None]:
    """Turn the client's HTTP and connection failures into a UserError about ``action``."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        if exc.status is None or exc.status == 0:
            raise _unreachable(host, exc.reason) from None
        error = _refusal(host, exc.status, _error_detail(exc.body))
        raise UserError(f"{action}: {error}") from None
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise _unreachable(host, exc) from None


@dataclass
class Endpoint:
    """A KFP endpoint that answered its health check, and a client for it."""

    host: str
    client: Any
    multi_user: bool

    @classmethod
    def connect(cls, host: str | None, *, namespace: str | None = None, timeout: float = 10.0) -> Endpoint:
        host = normalize_host(host)
        health = check_endpoint(host, timeout=timeout)
        import kfp

        with quiet_client(), translate_errors(host, "connecting"):
            kwargs: dict[str, Any] = {"host": host}
            if namespace:
                kwargs["namespace"] = namespace
            client = kfp.Client(**kwargs)
        return cls(host=host, client=client, multi_user=bool(health.get("multi_user")))

    def experiment_id(self, name: str, namespace: str | None = None) -> str:
        """The id of experiment ``name``, created if it does not exist yet."""
        with quiet_client(), translate_errors(self.host, f"getting or creating experiment {name!r}"):
            return self.client.create_experiment(name=name, namespace=namespace).experiment_id

    def create_run(self, package: str, *, arguments: dict[str, Any], run_name: str, experiment: str,
                   namespace: str | None, service_account: str | None) -> dict[str, Any]:
        """One run of a compiled pipeline in ``experiment`` (created if missing)."""
        with quiet_client(), translate_errors(self.host, f"creating the run in experiment {experiment!r}"):
            result = self.client.create_run_from_pipeline_package(
                pipeline_file=package, arguments=arguments, run_name=run_name, experiment_name=experiment,
                namespace=namespace, service_account=service_account,
            )
        return {"run_id": result.run_id, "run_url": run_url(self.host, result.run_id),
                "experiment_id": result.run_info.experiment_id}

    def create_recurring_run(self, package: str, *, arguments: dict[str, Any], name: str, experiment_id: str,
                             cron: str, service_account: str | None, max_concurrency: int,
                             catch_up: bool) -> dict[str, Any]:
        with quiet_client(), translate_errors(self.host, "creating the recurring run"):
            job = self.client.create_recurring_run(
                experiment_id=experiment_id, job_name=name, cron_expression=cron, params=arguments,
                pipeline_package_path=package, max_concurrency=max_concurrency, no_catchup=not catch_up,
                service_account=service_account, enabled=True,
            )
        rid = job.recurring_run_id
        return {"recurring_run_id": rid, "recurring_run_url": recurring_run_url(self.host, rid)}
