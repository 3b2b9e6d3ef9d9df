#!/usr/bin/env bash
# Seed (if absent) or restore from the store, then refresh (once for all runners when a store is given),
# and export CODEX_HOME. codex-ci masks every token and writes the outputs and the step summary itself.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cli="$CODEX_CI_VENV/bin/codex-ci"

export_setting() { # export_setting NAME VALUE: for codex-ci now, and for later steps (the persist step)
  [ -n "$2" ] || return 0
  single_line "$1" "$2"
  export "$1=$2"
  echo "$1=$2" >> "$GITHUB_ENV"
}

store="${CODEX_CI_STORE_INPUT:-}"
refresh="${CODEX_CI_REFRESH_INPUT:-auto}"
case "$refresh" in auto | always | never) ;; *) fail 2 "refresh must be auto, always or never" ;; esac
home="${CODEX_CI_HOME_INPUT:-${RUNNER_TEMP:?}/codex-home}"
access_only="${CODEX_CI_ACCESS_ONLY_INPUT:-false}"
case "$access_only" in true | false) ;; *) fail 2 "access-only must be true or false" ;; esac
copy=()
[ "$access_only" = false ] || copy=(--access-only)

export_setting CODEX_HOME "$home"
export_setting CODEX_CI_VENV "$CODEX_CI_VENV"
export_setting CODEX_CI_STORE_URL "$store"
export_setting VAULT_ADDR "${CODEX_CI_VAULT_ADDR_INPUT:-}"
export_setting VAULT_NAMESPACE "${CODEX_CI_VAULT_NAMESPACE_INPUT:-}"
export_setting CODEX_CI_VAULT_AUTH "${CODEX_CI_VAULT_AUTH_INPUT:-}"
export_setting CODEX_CI_VAULT_ROLE "${CODEX_CI_VAULT_ROLE_INPUT:-}"
export_setting CODEX_CI_VAULT_AUTH_MOUNT "${CODEX_CI_VAULT_AUTH_MOUNT_INPUT:-}"
export_setting CODEX_CI_VAULT_JWT_AUDIENCE "${CODEX_CI_VAULT_JWT_AUDIENCE_INPUT:-}"
export_setting CODEX_CI_AWS_REGION "${CODEX_CI_AWS_REGION_INPUT:-}"
export_setting CODEX_CI_GCP_PROJECT "${CODEX_CI_GCP_PROJECT_INPUT:-}"
[ -n "${CODEX_AUTH_JSON:-}" ] || unset CODEX_AUTH_JSON
{
  echo "codex-home=$home"
  echo "refreshed=false"
  echo "store-version="
} >> "$GITHUB_OUTPUT"

if [ -n "$store" ]; then
  # restore's workflow commands (its masks, an ::error) are held back until its exit code is known, so that an
  # empty store about to be seeded from auth-json is a notice, not an error annotation. It prints no token, and
  # its output stays in this shell's memory: no file holds the mask lines (printf, not a here-string, which older
  # bash writes to a temporary file).
  status=0
  commands=$("$cli" restore --from "$store" ${copy[@]+"${copy[@]}"}) || status=$?
  if [ -n "$commands" ]; then
    if [ "$status" -eq 4 ] && [ -n "${CODEX_AUTH_JSON:-}" ]; then
      printf '%s\n' "$commands" | grep -v '^::error' || true
    else
      printf '%s\n' "$commands"
    fi
  fi
  unset commands
  if [ "$status" -eq 4 ] && [ -n "${CODEX_AUTH_JSON:-}" ]; then
    echo "::notice title=codex-ci::the store holds no login yet: seeding it from auth-json"
    "$cli" seed
    "$cli" persist --to "$store"
    [ "$access_only" = false ] || "$cli" restore --from "$store" --access-only --force
  elif [ "$status" -ne 0 ]; then
    exit "$status"
  fi
elif [ -z "${CODEX_AUTH_JSON:-}" ] && [ -e "$home/auth.json" ]; then
  echo "codex-ci: $home/auth.json is already there and no auth-json was given; using it" >&2
else
  [ -n "${CODEX_AUTH_JSON:-}" ] || fail 4 "give auth-json (the CODEX_AUTH_JSON secret) or a store"
  "$cli" seed ${copy[@]+"${copy[@]}"}
fi

if [ "$refresh" != never ]; then
  args=(refresh)
  [ -z "$store" ] || [ "$access_only" = true ] || args+=(--store "$store")
  [ "$refresh" != always ] || args+=(--force)
  if [ "$access_only" = true ]; then
    # an access-only copy is never refreshed from the store (that would hand the job the full login): the
    # exported CODEX_CI_STORE_URL must not reach refresh's --store
    env -u CODEX_CI_STORE_URL "$cli" "${args[@]}"
  else
    "$cli" "${args[@]}"
  fi
fi
