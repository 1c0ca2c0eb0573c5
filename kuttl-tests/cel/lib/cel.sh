# Helpers for the steps of the CEL suite. Each step's script sources this file
# (`. ../../lib/cel.sh`; kuttl runs step commands in the test's directory) and pipes a
# manifest into one of the checks below. kuttl sets $NAMESPACE (the test's namespace) and
# $KUBECONFIG; every kubectl call is bounded by --request-timeout.
#
# POSIX sh on purpose: kuttl runs scripts with `sh -c`.

: "${NAMESPACE:?kuttl sets NAMESPACE}"
CEL_TIMEOUT=${CEL_TIMEOUT:-20s}

# kubectl in the test's namespace, bounded in time.
k() {
  kubectl --request-timeout="$CEL_TIMEOUT" -n "$NAMESPACE" "$@"
}

# rejected MESSAGE < manifest
# Passes when `kubectl apply` of the manifest fails and the apiserver's answer contains
# MESSAGE (compared as a fixed string). Fails when the object is accepted, or refused for
# another reason.
rejected() {
  fails_with "$1" k apply -f -
}

# fails_with MESSAGE COMMAND [ARG...]
# Passes when COMMAND exits non-zero and its output contains MESSAGE (a fixed string).
fails_with() {
  _msg=$1
  shift
  if _out=$("$@" 2>&1); then
    printf 'FAIL: %s succeeded; expected a refusal with:\n  %s\noutput:\n%s\n' "$*" "$_msg" "$_out"
    return 1
  fi
  if ! printf '%s\n' "$_out" | grep -qF -- "$_msg"; then
    printf 'FAIL: %s was refused, but not with:\n  %s\noutput:\n%s\n' "$*" "$_msg" "$_out"
    return 1
  fi
  printf 'ok, refused with: %s\n' "$_msg"
}

# accepted < manifest
# Passes when the apiserver accepts the manifest (`kubectl apply --dry-run=server`: schema,
# defaults and CEL all run, nothing is stored, so no provider that may be running acts on it).
accepted() {
  if ! _out=$(k apply --dry-run=server -f - 2>&1); then
    printf 'FAIL: a valid manifest was refused:\n%s\n' "$_out"
    return 1
  fi
  printf '%s\n' "$_out"
}

# created < manifest
# Like accepted, but stores the objects, for steps that then try to change them. Managed
# resources created this way carry crossplane.io/paused: "true", so a provider that happens
# to run leaves them alone (no finalizer, nothing on a SQL Server).
created() {
  if ! _out=$(k apply -f - 2>&1); then
    printf 'FAIL: a valid manifest was refused:\n%s\n' "$_out"
    return 1
  fi
  printf '%s\n' "$_out"
}
