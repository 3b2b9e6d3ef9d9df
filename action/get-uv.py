"""Put the uv binary pinned by requirements-uv.txt at DIR/uv, checking the wheel's sha256 against that file.

Usage: python -I get-uv.py LOCK DIR              read uv's page on the index, download this machine's wheel
       python -I get-uv.py --downloaded LOCK DIR  take the wheel pip downloaded into DIR/wheel

The first form is the fast path: one request for the index's page of uv (PIP_INDEX_URL, else the public index;
PEP 691 JSON or PEP 503 HTML), the wheel for this machine among the files whose hash the lock pins, one download.
It covers glibc Linux and macOS and leaves everything else (musl, a PIP_NO_INDEX setup, an index that needs
credentials, no network) to pip: it exits non-zero with the reason, and the caller runs ``pip download``. Either
way the wheel is hashed here and only the uv binary is taken out of it: no venv, nothing installed, no cache.
Standard library only; run with -I so that nothing in the working directory is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

TIMEOUT = 20  # seconds per connection attempt or read: a blocked network falls back to pip soon
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


def pinned(lock: Path) -> tuple[str, set[str]]:
    text = lock.read_text()
    version = re.search(r"^uv==(\S+)", text, re.MULTILINE)
    if not version:
        raise SystemExit(f"{lock.name} pins no uv version")
    return version.group(1), set(re.findall(r"--hash=sha256:([0-9a-f]{64})", text))


def platform_rank(tags: str) -> tuple[int, int] | None:
    """How well a wheel's platform tags (``manylinux_2_17_x86_64.manylinux2014_x86_64``) fit this machine: the
    newest glibc or macOS version among the tags that fit (pip prefers it too), or None if none does."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine) if sys.platform == "linux" else machine
    if sys.platform == "linux":
        libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
        have = re.fullmatch(r"glibc (\d+)\.(\d+).*", libc or "")
        if not have:
            return None  # musl or unknown: pip knows the rules
        limit = (int(have.group(1)), int(have.group(2)))
        aliases = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
        pattern = r"manylinux_(\d+)_(\d+)_" + re.escape(arch)
    elif sys.platform == "darwin":
        release = tuple(int(part) for part in platform.mac_ver()[0].split(".")[:2])
        limit = (release[0], release[1] if len(release) > 1 else 0)
        aliases = {}
        pattern = r"macosx_(\d+)_(\d+)_" + re.escape(arch)
    else:
        return None
    fits = []
    for tag in tags.split("."):
        match = re.fullmatch(pattern, tag)
        at = (int(match.group(1)), int(match.group(2))) if match else aliases.get(tag.removesuffix("_" + arch))
        if at and tag.endswith("_" + arch) and at <= limit:
            fits.append(at)
    return max(fits) if fits else None


def fetch(url: str, accept: str = "*/*") -> Any:
    """An open response for ``url`` (https, http or file: a local mirror), with PIP_CERT's CA bundle if set."""
    if urllib.parse.urlsplit(url).scheme not in ("https", "http", "file"):
        raise LookupError(f"unsupported URL scheme in {url}")
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310 (schemes checked above)
    return urllib.request.urlopen(request, timeout=TIMEOUT, context=context)  # noqa: S310


def index_files(index: str) -> list[tuple[str, str, str]]:
    """(filename, url, sha256) of every file on the index's page for uv."""
    with fetch(index.rstrip("/") + "/uv/", ACCEPT) as response:
        body, kind, where = response.read(), response.headers.get_content_type(), response.geturl()
    if kind.endswith("json"):
        return [(f["filename"], urllib.parse.urljoin(where, f["url"]), f.get("hashes", {}).get("sha256", ""))
                for f in json.loads(body)["files"]]
    files = []
    for href, name in re.findall(r'<a\s[^>]*?href="([^"]+)"[^>]*>([^<]+)</a>', body.decode()):
        url = urllib.parse.urljoin(where, href.replace("&amp;", "&"))
        digest = re.search(r"#sha256=([0-9a-f]{64})", url)
        files.append((name.strip(), url.split("#")[0], digest.group(1) if digest else ""))
    return files


def default_index() -> str:
    """pip's own default index (the public one) when PIP_INDEX_URL names none; LookupError without pip."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        raise LookupError("no PIP_INDEX_URL, and no pip to name its default index") from None
    return str(PyPI.simple_url)


def download(lock: Path, out: Path) -> Path:
    value = os.environ.get("PIP_NO_INDEX", "").lower()
    if value in ("1", "true", "yes", "on"):
        raise LookupError("PIP_NO_INDEX is set")
    version, hashes = pinned(lock)
    index = os.environ.get("PIP_INDEX_URL") or default_index()
    prefix = f"uv-{version}-py3-none-"
    ranked = [(rank, name, url) for name, url, digest in index_files(index)
              if name.startswith(prefix) and name.endswith(".whl") and digest in hashes
              and (rank := platform_rank(name[len(prefix):-len(".whl")]))]
    if not ranked:
        raise LookupError(f"no wheel of uv {version} for this machine with a pinned hash on the index")
    _, name, url = max(ranked)
    target = out / "wheel" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with fetch(url) as response, target.open("wb") as file:
        shutil.copyfileobj(response, file, 1 << 20)
    return target


def unpack(wheel: Path, hashes: set[str], out: Path) -> Path:
    """Check the wheel's sha256 against the lock, then write its uv binary to OUT/uv."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest not in hashes:
        raise ValueError(f"{wheel.name} has sha256 {digest}, which requirements-uv.txt does not pin")
    binary = out / "uv"
    with zipfile.ZipFile(wheel) as archive, binary.open("xb") as file:
        [member] = [n for n in archive.namelist() if re.fullmatch(r"uv-[^/]+\.data/scripts/uv", n)]
        with archive.open(member) as source:
            shutil.copyfileobj(source, file, 1 << 20)
    binary.chmod(0o755)
    return binary


def main(argv: list[str]) -> int:
    downloaded = argv[:1] == ["--downloaded"]
    args = argv[1:] if downloaded else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    lock, out = Path(args[0]), Path(args[1])
    _, hashes = pinned(lock)
    if downloaded:
        try:
            [wheel] = (out / "wheel").glob("uv-*.whl")
            unpack(wheel, hashes, out)
        except (OSError, ValueError) as error:
            print(f"codex-ci: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        binary = unpack(download(lock, out), hashes, out)
        if subprocess.run([str(binary), "--version"], capture_output=True, timeout=60).returncode != 0:
            raise LookupError(f"the uv binary of {binary.name} does not run here")
    except (OSError, LookupError, ValueError, KeyError) as error:  # urllib's errors are OSErrors
        shutil.rmtree(out / "wheel", ignore_errors=True)
        (out / "uv").unlink(missing_ok=True)
        print(f"codex-ci: uv not fetched directly ({error}): pip will download it", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
