# Shared by the action's steps. Every input arrives as an environment variable, never as ${{ }} in a script.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

fail() { # fail CODE MESSAGE: an annotation and an exit code, like codex-ci's own errors
  echo "::error title=codex-ci::$2"
  exit "$1"
}

single_line() { # refuse values that could inject extra lines into GITHUB_ENV / GITHUB_OUTPUT or a workflow command
  case "$2" in *$'\n'* | *$'\r'*) fail 2 "$1 must be a single line" ;; esac
}

extra_for() { # the store extra (and lock file) a store URL needs
  case "$1" in
    vault*) echo vault ;;
    aws*) echo aws ;;
    gcp*) echo gcp ;;
    github*) echo github ;;
    *) echo core ;;
  esac
}

install_codex_ci() { # install_codex_ci PYTHON VENV EXTRA
  # codex-ci from this checkout (--no-deps) plus the hash-locked requirements of one store, into a private venv,
  # with uv, itself installed by pip from a hash-pinned requirement. Nothing comes from a cache of installed code;
  # uv's download cache is checked against the same hashes. The caller's Python and PATH are untouched.
  local python=$1 venv=$2 lock="$root/action/requirements-$3.txt" tools="${RUNNER_TEMP:?}/codex-ci-uv"
  [ -f "$lock" ] || fail 2 "no lock file for the $3 store in the action"
  export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
  if [ ! -x "$tools/bin/uv" ]; then
    "$python" -m venv "$tools"
    "$tools/bin/python" -m pip install --disable-pip-version-check --no-input --quiet --require-hashes \
      --only-binary :all: -r "$root/action/requirements-uv.txt"
  fi
  rm -rf "$venv"
  "$tools/bin/uv" venv --quiet --python "$python" "$venv"
  "$tools/bin/uv" pip install --quiet --python "$venv/bin/python" --require-hashes --only-binary :all: \
    -r "$lock" -r "$root/action/requirements-build.txt"
  "$tools/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps --no-build-isolation --reinstall \
    "$root"
  "$venv/bin/codex-ci" --version
}
