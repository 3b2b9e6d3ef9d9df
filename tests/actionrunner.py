"""Run a composite ``action.yml`` the way the GitHub Actions runner does, on this machine.

A ``Runner`` is one runner machine: its tool cache and its ``actions/cache`` store survive from job to job, and
``RUNNER_TEMP`` is the same path in every job (as on hosted runners) but emptied when a job starts. A ``Job``
carries what one job accumulates: ``$GITHUB_ENV``, ``$GITHUB_PATH`` and the masks. ``Job.run(action_dir,
inputs)`` evaluates ``if:`` and ``${{ }}`` (a deliberately small subset: anything else raises), simulates the
few ``uses:`` actions the action calls, runs ``run:`` steps with ``bash --noprofile --norc -eo pipefail``,
applies the workflow-command protocol to their output and records every line in which a secret was visible
unmasked (a leak). ``Runner(os_name=...)`` sets ``runner.os`` and ``RUNNER_OS`` (e.g. ``Windows``). Runner-only
behaviour such as the ``post:`` step and job outputs is out of scope.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECRET_PATTERNS = (re.compile(r"CANARY[\w.-]*"), re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}(?:\.[\w-]*)?"))
STEP_TIMEOUT = 300
_COMMAND = re.compile(r"^::([a-z][\w-]*)(?: ([^:]*))?::(.*)$")
_TOKEN = re.compile(r"\s*(?:(==|!=|&&|\|\||!|\(|\))|'((?:[^']|'')*)'|([A-Za-z_][\w.-]*))")
_STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")
_BINARY = (("||",), ("&&",), ("==", "!="))


@dataclass(frozen=True)
class Annotation:
    kind: str  # error, warning or notice
    properties: str  # e.g. "title=codex-ci"
    message: str


@dataclass
class Result:
    """What one run of a composite action left behind."""

    status: int  # 0, or the exit code of the first failing step
    outputs: dict[str, str]  # the action's declared outputs
    steps: dict[str, dict[str, Any]]  # id (else name) -> outcome, conclusion (success/failure/skipped), outputs
    exported_env: dict[str, str]  # what its steps wrote to $GITHUB_ENV
    summaries: list[str]  # each step's $GITHUB_STEP_SUMMARY, masked
    annotations: list[Annotation]
    log: list[str]  # every output line, masked, as the job log would show it
    leaks: list[str]  # where a secret was visible unmasked (the text is not repeated)

    @property
    def errors(self) -> list[Annotation]:
        return [a for a in self.annotations if a.kind == "error"]


def _parse_file_commands(text: str, where: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` / ``$GITHUB_ENV`` syntax: ``K=V`` lines and ``K<<DELIM`` heredocs."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            if delimiter not in lines[i:]:
                raise ValueError(f"{where}: heredoc for {key!r} has no closing {delimiter!r}")
            end = lines.index(delimiter, i)
            values[key], i = "\n".join(lines[i:end]), end + 1
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
        else:
            raise ValueError(f"{where}: invalid line {line!r}")
    return values


class Expression:
    """``a.b.c``, ``'literal'``, ``true``/``false``, ``f()``, ``==``, ``!=``, ``!``, ``&&``, ``||``, parentheses."""

    def __init__(self, text: str, contexts: Mapping[str, Any], status: Mapping[str, bool]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unsupported expression {text!r} at {pos}")
            op, literal, name = match.groups()
            self.tokens.append(("op", op) if op else ("name", name) if name else ("lit", literal.replace("''", "'")))
            pos = match.end()
        self.contexts, self.status, self.pos = contexts, status, 0
        self.uses_status = any(t == ("name", f) for t in self.tokens for f in _STATUS_FUNCTIONS)

    def evaluate(self) -> Any:
        value = self._binary()
        if self.pos != len(self.tokens):
            raise ValueError(f"unsupported expression near {self.tokens[self.pos:]}")
        return value

    def _take(self, op: str) -> bool:
        if self.pos < len(self.tokens) and self.tokens[self.pos] == ("op", op):
            self.pos += 1
            return True
        return False

    def _binary(self, level: int = 0) -> Any:
        """Left-associative operators by precedence: ``||``, then ``&&``, then ``==`` / ``!=``."""
        if level == len(_BINARY):
            return self._unary()
        value = self._binary(level + 1)
        while op := next((o for o in _BINARY[level] if self._take(o)), None):
            right = self._binary(level + 1)
            if op == "||":
                value = value if truthy(value) else right
            elif op == "&&":
                value = right if truthy(value) else value
            else:  # Actions compares strings ignoring case
                value = (_text(value).lower() == _text(right).lower()) == (op == "==")
        return value

    def _unary(self) -> Any:
        if self._take("!"):
            return not truthy(self._unary())
        if self._take("("):
            value = self._binary()
            if not self._take(")"):
                raise ValueError("missing )")
            return value
        if self.pos == len(self.tokens) or self.tokens[self.pos][0] == "op":
            raise ValueError(f"unexpected end or operator in {self.tokens}")
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "lit":
            return text
        if text in ("true", "false"):
            return text == "true"
        if text in _STATUS_FUNCTIONS and self._take("("):
            if not self._take(")"):
                raise ValueError(f"{text}() takes no arguments here")
            return self.status[text]
        head, *rest = text.split(".")
        if head not in self.contexts:
            raise ValueError(f"unsupported context {head!r}")
        found: Any = self.contexts[head]
        for part in rest:
            if head in ("runner", "github") and part not in found:  # only the properties simulated
                raise ValueError(f"unsupported property {text!r}")
            found = found.get(part) if isinstance(found, Mapping) else None
        return found


def truthy(value: Any) -> bool:
    return bool(value) and value != "0"


def _text(value: Any) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def substitute(text: str, contexts: Mapping[str, Any]) -> str:
    """Replace every ``${{ expr }}`` in ``text``."""
    status = dict.fromkeys(_STATUS_FUNCTIONS, False)
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _text(Expression(m.group(1), contexts, status).evaluate()), text)


class Runner:
    """One runner machine under ``root``. Each job's steps start from ``base_env``, by default this process's
    environment (read when the job starts) without its GitHub Actions variables, plus ``machine_env`` (what the
    machine's own configuration sets for every job, e.g. where a local directory of wheels is)."""

    def __init__(self, root: Path, base_env: Mapping[str, str] | None = None, os_name: str = "Linux",
                 machine_env: Mapping[str, str] | None = None) -> None:
        self.root, self.base_env, self.os_name = root, base_env, os_name
        self.machine_env = dict(machine_env or {})
        self.temp, self.workspace = root / "temp", root / "workspace"
        self.cache_dir = root / "actions-cache"
        self.cache: dict[tuple[str, str], Path] = {}  # (key, path) -> saved copy, as actions/cache versions by path

    def job(self, env: Mapping[str, str] | None = None, *, secrets: Iterable[str] = (),
            canaries: Iterable[str] = ()) -> Job:
        """Start a job with an empty RUNNER_TEMP and workspace.

        ``env``: the workflow's ``env:``. ``secrets``: values the runner masks from the start (the ``secrets``
        context). ``canaries``: values that must never be visible, on top of ``SECRET_PATTERNS``.
        """
        for directory in (self.temp, self.workspace):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        base = dict(os.environ if self.base_env is None else self.base_env)
        base = {k: v for k, v in base.items() if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_"))}
        base.update(self.machine_env)
        return Job(self, base, dict(env or {}), {s for s in secrets if s}, [c for c in canaries if c])


@dataclass
class Job:
    runner: Runner
    base_env: dict[str, str]
    env: dict[str, str]  # the env context: the workflow's env plus everything written to $GITHUB_ENV
    masks: set[str]
    canaries: list[str]
    path: list[str] = field(default_factory=list)
    steps_run: int = 0

    def run(self, action_dir: Path, inputs: Mapping[str, str] | None = None) -> Result:
        """Run ``action_dir/action.yml`` with ``inputs`` (as ``with:``) until a step fails."""
        action_dir = action_dir.resolve()
        action = yaml.safe_load((action_dir / "action.yml").read_text())
        assert action["runs"]["using"] == "composite"
        declared = action.get("inputs") or {}
        unknown = set(inputs or {}) - set(declared)
        assert not unknown, f"unexpected inputs {unknown}"
        values = {k: _text((inputs or {}).get(k, spec.get("default", ""))) for k, spec in declared.items()}
        steps: dict[str, dict[str, Any]] = {}
        result = Result(0, {}, steps, {}, [], [], [], [])
        contexts: dict[str, Any] = {
            "inputs": values, "steps": steps, "env": self.env,
            "runner": {"temp": str(self.runner.temp), "os": self.runner.os_name, "arch": "X64"},
            "github": {"action_path": str(action_dir)},
        }
        for index, step in enumerate(action["runs"]["steps"]):
            step_id = step.get("id") or step.get("name") or f"#{index}"
            status = {"always": True, "success": result.status == 0, "failure": result.status != 0,
                      "cancelled": False}
            condition = _text(step.get("if", "success()")).strip()
            condition = condition[3:-2] if condition.startswith("${{") and condition.endswith("}}") else condition
            expression = Expression(condition, contexts, status)
            run_it = truthy(expression.evaluate()) and (expression.uses_status or result.status == 0)
            if not run_it:
                steps[step_id] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
                continue
            with_ = {k: substitute(_text(v), contexts) for k, v in (step.get("with") or {}).items()}
            step_env = {k: substitute(_text(v), contexts) for k, v in (step.get("env") or {}).items()}
            if "uses" in step:
                code, outputs = self._uses(step["uses"], with_)
            else:
                assert step.get("shell") == "bash", "composite run steps need shell: bash"
                code, outputs = self._run_step(step["run"], step_env, action_dir, result)
            outcome = "success" if code == 0 else "failure"
            tolerated = bool(step.get("continue-on-error"))
            steps[step_id] = {"outcome": outcome, "conclusion": "success" if tolerated else outcome,
                              "outputs": outputs}
            if code != 0 and not tolerated:
                result.status = code
        for name, spec in (action.get("outputs") or {}).items():
            result.outputs[name] = substitute(str(spec["value"]), contexts)
            self._check(f"output {name}", result.outputs[name], result, dropped_if_masked=True)
        return result

    def _uses(self, uses: str, with_: dict[str, str]) -> tuple[int, dict[str, str]]:
        name, _, ref = uses.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{uses} is not pinned to a commit"
        if name == "actions/setup-python":
            assert with_.get("update-environment") == "false", "setup-python would change the caller's PATH"
            python = Path(sys.base_prefix) / "bin" / "python3"  # a real interpreter that can create venvs
            return 0, {"python-path": str(python), "python-version": ".".join(map(str, sys.version_info[:3]))}
        if name in ("actions/cache/restore", "actions/cache/save"):
            assert set(with_) <= {"path", "key"}, f"unsupported {name} inputs {set(with_)}"
            slot = (with_["key"], with_["path"])
            target = Path(with_["path"])
            if name.endswith("restore"):
                if slot not in self.runner.cache:
                    return 0, {"cache-primary-key": with_["key"]}  # a miss leaves cache-hit unset
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(self.runner.cache[slot], target, symlinks=True)
                return 0, {"cache-hit": "true", "cache-primary-key": with_["key"], "cache-matched-key": with_["key"]}
            if slot not in self.runner.cache:  # an existing key is never overwritten
                saved = self.runner.cache_dir / str(len(self.runner.cache))
                shutil.copytree(target, saved, symlinks=True)
                self.runner.cache[slot] = saved
            return 0, {}
        raise ValueError(f"the harness does not simulate {uses}")

    def _run_step(self, script: str, step_env: dict[str, str], action_dir: Path, result: Result
                  ) -> tuple[int, dict[str, str]]:
        self.steps_run += 1
        files = {name: self.runner.temp / f"_runner_file_commands/{name.lower()}_{self.steps_run}"
                 for name in ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}
        for path in files.values():
            path.parent.mkdir(exist_ok=True)
            path.touch()
        script_file = self.runner.temp / f"step_{self.steps_run}.sh"
        script_file.write_text(script)
        env = self.base_env | self.env | step_env | {k: str(v) for k, v in files.items()} | {
            "GITHUB_ACTIONS": "true", "GITHUB_ACTION_PATH": str(action_dir), "RUNNER_TEMP": str(self.runner.temp),
            "GITHUB_WORKSPACE": str(self.runner.workspace),
            "RUNNER_OS": self.runner.os_name, "RUNNER_ARCH": "X64", "CI": "true",
        }
        env["PATH"] = ":".join([*reversed(self.path), env.get("PATH", "")])
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)], env=env, cwd=self.runner.workspace,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT,
        )
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            self._line(line, result)
        exported = _parse_file_commands(files["GITHUB_ENV"].read_text(), "GITHUB_ENV")
        self.env.update(exported)
        result.exported_env.update(exported)
        self.path += [p for p in files["GITHUB_PATH"].read_text().splitlines() if p]
        summary = files["GITHUB_STEP_SUMMARY"].read_text()
        if summary:
            self._check("step summary", summary, result)
            result.summaries.append(self._masked(summary))
        outputs = _parse_file_commands(files["GITHUB_OUTPUT"].read_text(), "GITHUB_OUTPUT")
        for key, value in outputs.items():
            self._check(f"step output {key}", value, result, dropped_if_masked=True)
        return proc.returncode, outputs

    def _line(self, line: str, result: Result) -> None:
        command = _COMMAND.match(line)
        if command and command.group(1) == "add-mask":
            self.masks.update(v for v in [command.group(3).strip()] if v)
            return  # the runner does not log the command itself
        self._check("log", line, result)
        if command and command.group(1) in ("error", "warning", "notice"):
            kind, properties, message = command.groups()
            unescaped = message.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")
            result.annotations.append(Annotation(kind, properties or "", self._masked(unescaped)))
        result.log.append(self._masked(line))

    def _masked(self, text: str) -> str:
        for value in sorted(self.masks, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    def _check(self, where: str, text: str, result: Result, dropped_if_masked: bool = False) -> None:
        """A leak: a secret still visible once the masks registered so far are applied. An output holding a
        masked value is one too: the runner would drop it, and a token has no business in an output."""
        masked = self._masked(text)
        if dropped_if_masked and masked != text:
            result.leaks.append(f"{where}: holds a masked value")
        if any(canary in masked for canary in self.canaries):
            result.leaks.append(f"{where}: an unmasked canary")
        for pattern in SECRET_PATTERNS:
            if pattern.search(masked):
                result.leaks.append(f"{where}: an unmasked secret matching {pattern.pattern!r}")


def download_wheels(target: Path, locks: Iterable[Path], env: Mapping[str, str] | None = None) -> None:
    """Download every wheel the hash-locked requirements files ``locks`` pin for this machine into ``target`` (pip
    checks each hash), and write ``target/simple/uv/index.html``, a PEP 503 page for the uv wheels there."""
    arguments = [arg for lock in locks for arg in ("-r", str(lock))]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                           "--no-input", "--no-deps", "--only-binary", ":all:", "--require-hashes", "--dest",
                           str(target), *arguments], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=None if env is None else dict(env))
    if proc.returncode != 0:
        raise RuntimeError(f"pip download failed:\n{proc.stderr}")
    (target / "simple" / "uv").mkdir(parents=True, exist_ok=True)
    (target / "simple" / "uv" / "index.html").write_text("".join(
        f'<a href="../../{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{w.name}</a>\n'
        for w in sorted(target.glob("uv-*.whl"))))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WheelIndex:
    """A directory from download_wheels served on loopback; ``env`` is what a runner machine sets to install from
    it: uv's wheel through the index page (``PIP_INDEX_URL``), the locked requirements from the directory alone
    (``UV_FIND_LINKS``, offline). pip and uv hash every archive against the lock on every install."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/simple"
        self.env = {"PIP_INDEX_URL": self.url, "PIP_FIND_LINKS": str(directory), "UV_FIND_LINKS": str(directory),
                    "UV_OFFLINE": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

    def __enter__(self) -> WheelIndex:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
