"""GitHub Actions secrets: ``github://OWNER/REPO/NAME``, ``github://OWNER/REPO/environments/ENV/NAME`` and
``github://orgs/ORG/NAME``. Write-only, no versions, last writer wins.

Read: GitHub never gives a secret's value back through its API. A read returns the value the workflow passed in
the environment variable named like the secret (``NAME: ${{ secrets.NAME }}``); its version is a digest of that
value. An empty or missing variable reads as "no secret" (restore then shows the YAML line to add).

Write: fetch the scope's public key, encrypt the value with a libsodium sealed box (PyNaCl, imported only when
writing) and PUT it with the key's id. An organisation secret keeps the visibility (and the selected repositories)
it has; a new one is created ``private``. ``write(value, expected)`` ignores ``expected``: GitHub has no
compare-and-set, so ``compare_and_set`` is False and codex-ci refuses what needs it (``refresh --store`` and its
lease). The rotator (``keepalive --store github://… --handout github://…``) runs serialized by the workflow's
``concurrency:`` instead.

The write check (``check_writable``), run by the rotator before it rotates anything: GET the scope's public key
(200), and GET the secret itself (200 or 404, never 401 or 403). GitHub offers no dry-run write, so a token that
may read secrets but not write them passes this check; what it catches is a missing or expired token, a token
for another repository or environment, and a token without the Secrets permission. A rotation whose write then
fails anyway is reported as unsaved, with the way to save it.

Credentials: ``CODEX_CI_GITHUB_TOKEN``, else ``GH_TOKEN`` (a GitHub App installation token with "Secrets: write",
or a fine-grained personal access token); never ``GITHUB_TOKEN``, which cannot write Actions secrets. The API is
``GITHUB_API_URL`` (default https://api.github.com): ``https://``, or ``http://`` to a loopback host only.
No response body is ever forwarded into a message.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from codex_ci.errors import ConfigError, StoreError
from codex_ci.secret import Secret
from codex_ci.stores.base import Store, Versioned, is_loopback, missing_extra

TIMEOUT = 15.0
DEFAULT_API = "https://api.github.com"
API_VERSION = "2022-11-28"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_ENVIRONMENT = re.compile(r"[^\x00-\x1f/\\'\"`]{1,255}")
PERMISSION_HINT = (
    "The token (CODEX_CI_GITHUB_TOKEN or GH_TOKEN) needs write access to Actions secrets there: a GitHub App "
    "installation token with \"Secrets: write\" on that repository (or \"Organization secrets: write\"), or a "
    "fine-grained personal access token with the same permission."
)


def digest(value: str) -> str:
    """The version of a value read from the environment or written: GitHub keeps none of its own."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class GitHubSecretStore:
    """One Actions secret of a repository, an environment or an organisation."""

    compare_and_set = False

    def __init__(self, location: str, scope: str, name: str, api: str, token: Secret | None, github_token: bool,
                 passed: Secret) -> None:
        self.location, self.scope, self.name, self.api = location, scope, name, api
        self._token, self._github_token, self._passed = token, github_token, passed
        self._org = scope.startswith("orgs/")

    @property
    def url(self) -> str:
        return f"github://{self.location}"

    @property
    def key(self) -> str:
        """The API server, the scope and the secret's name (GitHub's names are case-insensitive)."""
        return f"github://{self.api}/{self.scope}/{self.name.upper()}"

    def __repr__(self) -> str:
        return f"GitHubSecretStore({self.url!r})"

    @property
    def missing_hint(self) -> str:
        """How the workflow passes this secret in (restore's hint when the variable is empty or missing)."""
        return (f"GitHub secrets cannot be read through the API: pass it to this step as `{self.name}: "
                f"${{{{ secrets.{self.name} }}}}` under `env:`" + (" (and set the job's `environment:`)"
                                                                   if "/environments/" in self.scope else "")
                + ". If the secret does not exist yet, create it with `codex-ci persist --to URL`.")

    def read(self) -> Versioned | None:
        text = self._passed.reveal()
        if not text.strip():
            return None
        return Versioned(text, digest(text))

    def write(self, value: str, expected: str | None) -> str:
        """Encrypt and PUT ``value``. ``expected`` is ignored: GitHub has no compare-and-set (last writer wins)."""
        del expected
        with self._client() as client:
            key_id, key = self._public_key(client)
            body: dict[str, Any] = {"encrypted_value": _seal(key, value), "key_id": key_id}
            if self._org:
                body |= self._org_visibility(client)
            self._call(client, "PUT", self._secret_path, "write the secret", body=body)
        return digest(value)

    def check_writable(self) -> None:
        """Before a rotation: prove the token reaches this secret's scope with the Secrets permission (see the
        module docstring for what this can and cannot prove)."""
        with self._client() as client:
            self._public_key(client)
            self._call(client, "GET", self._secret_path, "check access to the secret", absent_ok=True)

    def sibling(self, suffix: str) -> Store:
        raise ConfigError(f"{self.url} cannot hold a {suffix}: GitHub secrets have no compare-and-set",
                          hint=ROTATOR_HINT)

    # -- HTTP ------------------------------------------------------------------------------------------------------

    @property
    def _secret_path(self) -> str:
        return f"/{self.scope}/secrets/{quote(self.name, safe='')}"

    def _client(self) -> Any:
        import httpx

        token = self._require_token()
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION,
                   "Authorization": f"Bearer {token.reveal()}", "User-Agent": "codex-ci"}
        return httpx.Client(base_url=self.api, headers=headers, timeout=TIMEOUT, follow_redirects=False,
                            trust_env=False)

    def _require_token(self) -> Secret:
        if self._token is not None:
            return self._token
        if self._github_token:
            raise ConfigError(
                "GITHUB_TOKEN cannot write Actions secrets: set CODEX_CI_GITHUB_TOKEN (or GH_TOKEN) to a token "
                "that can",
                hint="Use a GitHub App installation token from actions/create-github-app-token with \"Secrets: "
                "write\", or a fine-grained personal access token kept in an environment.")
        raise ConfigError(f"writing {self.url} needs a token in CODEX_CI_GITHUB_TOKEN (or GH_TOKEN)",
                          hint=PERMISSION_HINT)

    def _call(self, client: Any, method: str, path: str, what: str, *, body: dict[str, Any] | None = None,
              absent_ok: bool = False) -> Any:
        """One request; every failure becomes a one-line StoreError that forwards no response text."""
        import httpx

        try:
            response = client.request(method, path, json=body)
        except httpx.TimeoutException:
            raise StoreError(f"the GitHub API at {self.api} did not answer in time (to {what} {self.url})") from None
        except httpx.HTTPError as exc:
            raise StoreError(f"cannot reach the GitHub API at {self.api} ({type(exc).__name__}) to {what} "
                             f"{self.url}") from None
        status = response.status_code
        if status == 404 and absent_ok:
            return None
        if status == 401:
            raise StoreError(f"GitHub rejected the token (HTTP 401) to {what} {self.url}",
                             hint="The token is invalid or has expired. " + PERMISSION_HINT)
        if status == 403:
            raise StoreError(f"permission denied (HTTP 403) to {what} {self.url}", hint=PERMISSION_HINT)
        if status == 404:
            raise StoreError(f"not found (HTTP 404) to {what} {self.url}: the {self._kind} does not exist or the "
                             "token cannot see it", hint=PERMISSION_HINT)
        if not 200 <= status < 300:
            raise StoreError(f"GitHub answered HTTP {status} to {what} {self.url}")
        if status == 204 or method == "PUT":
            return None
        try:
            return response.json()
        except ValueError:
            raise StoreError(f"GitHub's answer to {what} {self.url} is not JSON") from None

    @property
    def _kind(self) -> str:
        return "organisation" if self._org else "environment" if "/environments/" in self.scope else "repository"

    def _public_key(self, client: Any) -> tuple[str, str]:
        data = self._call(client, "GET", f"/{self.scope}/secrets/public-key", "fetch the public key of")
        if not isinstance(data, dict) or not isinstance(data.get("key_id"), str) or not isinstance(
                data.get("key"), str):
            raise StoreError(f"GitHub's public key for {self.url} is not in the expected form")
        return data["key_id"], data["key"]

    def _org_visibility(self, client: Any) -> dict[str, Any]:
        """The visibility the organisation secret has (and its selected repositories): a write keeps them."""
        data = self._call(client, "GET", self._secret_path, "read the visibility of", absent_ok=True)
        visibility = data.get("visibility") if isinstance(data, dict) else None
        if visibility not in ("all", "private", "selected"):
            return {"visibility": "private"}
        if visibility != "selected":
            return {"visibility": visibility}
        ids: list[int] = []
        for page in range(1, 101):
            listed = self._call(client, "GET", f"{self._secret_path}/repositories?per_page=100&page={page}",
                                "list the repositories of")
            repos = listed.get("repositories") if isinstance(listed, dict) else None
            if not isinstance(repos, list):
                raise StoreError(f"GitHub's list of repositories for {self.url} is not in the expected form")
            ids += [repo["id"] for repo in repos if isinstance(repo, dict) and isinstance(repo.get("id"), int)]
            if len(repos) < 100:
                break
        return {"visibility": "selected", "selected_repository_ids": ids}


ROTATOR_HINT = (
    "Keep the full login in a store with compare-and-set (vault, aws, gcp, file) and run `codex-ci keepalive "
    "--store URL --handout github://…`; or, with GitHub secrets only, run one serialized rotator "
    "(`concurrency:` in its workflow): `codex-ci keepalive --store github://…/FULL --handout github://…/ACCESS`."
)


def _seal(key: str, value: str) -> str:
    try:
        from nacl.exceptions import CryptoError
        from nacl.public import PublicKey, SealedBox
    except ImportError:
        raise missing_extra("github") from None
    try:
        box = SealedBox(PublicKey(base64.b64decode(key, validate=True)))
        return base64.b64encode(box.encrypt(value.encode("utf-8", "surrogateescape"))).decode("ascii")
    except (CryptoError, ValueError, TypeError):
        raise StoreError("GitHub's public key is not a usable libsodium key") from None


def api_base(env: Mapping[str, str]) -> str:
    """GITHUB_API_URL (or the default): https, or http to a loopback host only."""
    text = env.get("GITHUB_API_URL", "").strip() or DEFAULT_API
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ConfigError("GITHUB_API_URL is not a URL") from None
    if parts.username or parts.password or parts.query or parts.fragment or not host:
        raise ConfigError("GITHUB_API_URL must be a plain https:// URL")
    if parts.scheme == "https":
        return text.rstrip("/")
    if parts.scheme == "http" and is_loopback(host):
        return text.rstrip("/")
    raise ConfigError("GITHUB_API_URL must be an https:// URL (http:// only to a loopback host)")


def parse_location(location: str) -> tuple[str, str]:
    """``OWNER/REPO/NAME``, ``OWNER/REPO/environments/ENV/NAME`` or ``orgs/ORG/NAME``: (API scope path, NAME)."""
    parts = location.split("/")
    usage = ("a github:// store is github://OWNER/REPO/NAME, github://OWNER/REPO/environments/ENV/NAME or "
             "github://orgs/ORG/NAME")
    if len(parts) == 3 and parts[0] == "orgs" and _PART.fullmatch(parts[1]):
        scope = f"orgs/{parts[1]}/actions"
    elif len(parts) == 3 and all(_PART.fullmatch(p) for p in parts[:2]):
        scope = f"repos/{parts[0]}/{parts[1]}/actions"
    elif (len(parts) == 5 and parts[2] == "environments" and all(_PART.fullmatch(p) for p in parts[:2])
          and _ENVIRONMENT.fullmatch(parts[3])):
        scope = f"repos/{parts[0]}/{parts[1]}/environments/{quote(parts[3], safe='')}"
    else:
        raise ConfigError(usage)
    name = parts[-1]
    if not _NAME.fullmatch(name) or name.upper().startswith("GITHUB_"):
        raise ConfigError(f"{name!r} is not a GitHub secret name (letters, digits and _, not starting with a digit "
                          "or GITHUB_)")
    return scope, name


def open_store(location: str, env: Mapping[str, str]) -> GitHubSecretStore:
    scope, name = parse_location(location)
    api = api_base(env)
    raw = env.get("CODEX_CI_GITHUB_TOKEN", "").strip() or env.get("GH_TOKEN", "").strip()
    token = Secret(raw) if raw else None
    passed = Secret(env.get(name, ""))  # the value the workflow passed in (``NAME: ${{ secrets.NAME }}``)
    return GitHubSecretStore(location, scope, name, api, token, bool(env.get("GITHUB_TOKEN", "").strip()), passed)

