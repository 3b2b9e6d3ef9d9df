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

install_codex_ci() ( # install_codex_ci PYTHON VENV EXTRA, in a subshell (its cd and exports stay here)
  # codex-ci from this checkout (--no-deps) plus the hash-locked requirements of one store, into a private venv,
  # by uv. Nothing installed comes from a cache, not even uv's: its cache keeps unpacked files and does not hash
  # them again when it reuses them, so each install gets an empty cache of its own (UV_CACHE_DIR is overridden).
  # A directory of wheels named by UV_FIND_LINKS, or a mirror, is fine: those archives are hashed every time.
  # The caller's Python, PATH and working directory are untouched.
  local python=$1 venv=$2 lock="$root/action/requirements-$3.txt" tools="${RUNNER_TEMP:?}/codex-ci-uv"
  [ -f "$lock" ] || fail 2 "no lock file for the $3 store in the action"
  rm -rf "$tools" "$venv" # never trust what is already there
  mkdir -p "$tools/src" "$tools/dist"
  cd "$tools" # no uv.toml, pyproject.toml or Python module of the job's workspace is picked up
  export UV_CACHE_DIR="$tools/cache" UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1
  bootstrap_uv "$python" "$tools"
  local uv="$tools/uv" build="$tools/build-env" locked
  "$uv" venv --quiet --python "$python" "$venv"
  "$uv" venv --quiet --python "$python" "$build"
  # The store's locked requirements go into the venv while the wheel is built beside it. --no-deps: the lock file
  # is the whole resolution (tests/test_release.py keeps it so), there is nothing to resolve.
  "$uv" pip install --quiet --python "$venv/bin/python" --no-deps --require-hashes --only-binary :all: \
    -r "$lock" &
  locked=$!
  # The wheel, built from a copy of what the build reads with the locked setuptools in a venv of its own (one
  # PEP 517 call; an installer would call the backend twice, once for the metadata). setuptools stays out of the
  # venv codex-ci runs from.
  "$uv" pip install --quiet --python "$build/bin/python" --no-deps --require-hashes --only-binary :all: \
    -r "$root/action/requirements-build.txt"
  cp -R "$root/pyproject.toml" "$root/MANIFEST.in" "$root/README.md" "$root/LICENSE" "$root/codex_ci" "$tools/src/"
  (cd "$tools/src" && "$build/bin/python" -I -c \
    'import sys, setuptools.build_meta as backend; backend.build_wheel(sys.argv[1])' "$tools/dist") \
    > "$tools/build.log" 2>&1 || {
    cat "$tools/build.log"
    fail 1 "building codex-ci from the action's checkout failed"
  }
  wait "$locked" || fail 1 "installing action/requirements-$3.txt failed"
  "$uv" pip install --quiet --python "$venv/bin/python" --no-deps "$tools"/dist/codex_ci-*.whl
  "$venv/bin/codex-ci" --version || fail 1 "the codex-ci just installed does not run"  # with || bash does not exec it in place of the subshell
)

bootstrap_uv() { # bootstrap_uv PYTHON DIR: DIR/uv, the binary of the wheel requirements-uv.txt pins by hash
  # action/get-uv.py reads uv's page on the index and downloads this machine's wheel itself (pip would spend
  # seconds weighing every file of every uv release); where it cannot, pip downloads the wheel. Either way
  # get-uv.py hashes it against the lock and takes only the uv binary out: no venv, no install. A Python without
  # pip gets one in a throwaway venv.
  local python=$1 dir=$2 lock="$root/action/requirements-uv.txt" get="$root/action/get-uv.py" pip
  "$python" -I "$get" "$lock" "$dir" && return 0
  pip=("$python" -I -m pip)
  if ! "$python" -I -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pip") is None)'; then
    "$python" -I -m venv "$dir/pip-venv"
    pip=("$dir/pip-venv/bin/python" -I -m pip)
  fi
  "${pip[@]}" download --disable-pip-version-check --no-input --quiet --no-deps --only-binary :all: \
    --require-hashes --dest "$dir/wheel" -r "$lock" || fail 1 "could not download uv (action/requirements-uv.txt)"
  "$python" -I "$get" --downloaded "$lock" "$dir" || fail 1 "could not install uv from action/requirements-uv.txt"
}
