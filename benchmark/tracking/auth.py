"""Credentials for a tracking server that runs MLflow's own authentication (``mlflow server --app-name basic-auth``).

The suite never handles a credential itself: MLflow's REST client reads ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``) from the environment of each process, and without them
``requests`` takes the host's entry in ``~/.netrc`` (or the file ``$NETRC`` names). So a credential is never in a
config, a command line, a logged parameter or tag, a job pickle or a Slurm script; jobs inherit it with their
environment (Slurm exports the submitting shell's environment by default), and a spool replay uses the same client.
Here: what to tell a user when the server refuses, naming where the credentials came from but never their values,
the refusal of a password written into the tracking URI itself, and ``check_server``, the check a driver makes
before it submits anything (``tracker.check_reachable``). Nothing here imports mlflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from benchmark.errors import ConfigError, TrackingError

USER_ENV, PASSWORD_ENV, TOKEN_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"
# MLflow's error codes for HTTP 401 and 403
AUTH_CODES = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}
FIX = f"check {USER_ENV}/{PASSWORD_ENV} or ~/.netrc"


def credentials_source(uri: str) -> str | None:
    """Where MLflow's client takes credentials for ``uri`` from (a description, never a value); None: nowhere.

    Args:
        uri: tracking URI.
    """
    if os.environ.get(USER_ENV) or os.environ.get(PASSWORD_ENV):
        return f"{USER_ENV}/{PASSWORD_ENV}"
    if os.environ.get(TOKEN_ENV):
        return TOKEN_ENV
    if uri.startswith(("http://", "https://")):
        from requests.utils import get_netrc_auth

        try:
            if get_netrc_auth(uri):
                return f"{os.environ.get('NETRC') or '~/.netrc'} (host {urlsplit(uri).hostname})"
        except Exception:  # an unreadable netrc file: requests ignores it too
            return None
    return None


def auth_error(uri: str, exc: BaseException, what: str = "") -> TrackingError | None:
    """A one-line ``TrackingError`` when ``exc`` is the server refusing the credentials (401) or the user (403).

    Args:
        uri: tracking URI.
        exc: what the MLflow client raised.
        what: the refused action, for a 403 (e.g. ``"experiment 'study'"``).

    Returns:
        The error to raise, or None when ``exc`` is no authentication failure.
    """
    status = AUTH_CODES.get(str(getattr(exc, "error_code", "")))
    if status is None:
        return None
    source = credentials_source(uri)
    if status == 403:
        who = f"the user of {source}" if source else "an anonymous user"
        target = f" to {what}" if what else ""
        return TrackingError(f"MLflow server {uri} denied {who} access{target} (403): ask the server's admin for "
                             f"permission, or {FIX}")  # fmt: skip
    if source is None:
        return TrackingError(f"MLflow server {uri} requires authentication (401): set {USER_ENV} and {PASSWORD_ENV} "
                             "in the environment, or give the host an entry in ~/.netrc")  # fmt: skip
    return TrackingError(f"MLflow server {uri} refused the credentials of {source} (401): {FIX}")


def refuse_credentials_in_config(env: Mapping[str, str], key: str = "cluster.env") -> None:
    """Refuse credential variables set in the config (they would be written to ``config.yaml``, MLflow parameters
    and the Slurm scripts); jobs inherit them from the submitting shell's environment instead.

    Raises:
        ConfigError: naming the key and the variables.
    """
    bad = sorted(k for k in env if k in (USER_ENV, PASSWORD_ENV, TOKEN_ENV))
    if bad:
        raise ConfigError(f"{key}: {', '.join(bad)} must not be set in a config (it is written to config.yaml and "
                          "the job scripts); export it in the shell that starts the sweep or use ~/.netrc")  # fmt: skip


def refuse_password_in_uri(uri: str) -> None:
    """Refuse a tracking URI that carries a password (``http://user:secret@host``): the URI is written to the
    study's ``config.yaml``, logged as a parameter and printed in logs.

    Raises:
        TrackingError: naming the URI with its password masked.
    """
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        return
    if not password:
        return
    host = parts.netloc.rsplit("@", 1)[-1]
    masked = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    if uri.startswith(("http://", "https://")):
        where = f"{USER_ENV}/{PASSWORD_ENV} or ~/.netrc"
    else:
        where = "the database client's own files or environment (e.g. ~/.pgpass or PGPASSWORD)"
    raise TrackingError(f"tracking.uri / --tracking-uri {masked}: a password in the tracking URI would be written to "
                        f"config.yaml, MLflow parameters and logs; remove it and give it through {where}")  # fmt: skip


def check_server(uri: str, timeout: float, probe: Callable[[], object]) -> None:
    """Fail fast, before any job is submitted, when an HTTP tracking server does not answer or refuses the
    credentials (one line, no retries), or when the URI carries a password (``tracker.check_reachable``).

    Args:
        uri: tracking URI; only ``http(s)://`` URIs are probed.
        timeout: seconds to wait for ``/health`` and for ``probe``.
        probe: one authenticated request through MLflow's client (it reads the credentials).
    """
    refuse_password_in_uri(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from benchmark.tracking.spool import own_http_retries

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"tracking server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"tracking server {uri} is unreachable ({exc}); start it or pass another --tracking-uri"
        ) from None
    try:  # /health answers anyone; a basic-auth server refuses the rest without valid credentials
        with own_http_retries(timeout):
            probe()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise auth_error(uri, exc) or TrackingError(f"tracking server {uri} refused a request: {first}") from None
