# Shared by the action's steps. Every input arrives as an environment variable, never as ${{ }} in a script.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

fail() { # fail CODE MESSAGE: an annotation and an exit code, like codex-ci's own errors
  echo "::error title=codex-ci::$2"
  exit "$1"
}

single_line() { # refuse values that could inject extra lines into GITHUB_ENV / GITHUB_OUTPUT
  case "$2" in *$'\n'* | *$'\r'*) fail 2 "$1 must be a single line" ;; esac
}

extra_for() { # the pip extra a store URL needs
  case "$1" in
    vault*) echo vault ;;
    aws*) echo aws ;;
    gcp*) echo gcp ;;
    *) echo "" ;;
  esac
}

install_codex_ci() { # install_codex_ci PYTHON VENV EXTRA VERSION
  local spec
  "$1" -m venv "$2"
  if [ -n "$4" ]; then
    spec="codex-ci${3:+[$3]}==$4"
  else
    spec="$root${3:+[$3]}"
  fi
  "$2/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "$spec"
  "$2/bin/codex-ci" --version
}
