# Shared by the Cloud TPU launchers. Source it, declare options with `opt NAME DEFAULT HELP`,
# then `parse_args "$@"` and `launch CMD...`.
#
# Every launcher takes:
#   --dry_run            print the exact command and exit without running it
#   --tpu_vm NAME        run on the TPU VM NAME through `gcloud compute tpus tpu-vm ssh`
#                        (all workers); without it the command runs here, on the TPU VM itself
#   --zone ZONE, --project PROJECT   for --tpu_vm
#   --repo_dir DIR       checkout of asvit-tf on the TPU VM (default ~/asvit-tf)
set -euo pipefail

declare -A OPT=()
declare -A OPT_HELP=()
OPT_ORDER=()

opt() { OPT[$1]=$2; OPT_HELP[$1]=$3; OPT_ORDER+=("$1"); }

opt dry_run false 'print the command instead of running it'
opt tpu_vm '' 'name of the TPU VM to run on via gcloud ssh (empty: run here)'
opt zone '' 'zone of the TPU VM'
opt project '' 'Google Cloud project of the TPU VM'
opt repo_dir '~/asvit-tf' 'asvit-tf checkout on the TPU VM'

usage() {
  echo "usage: $(basename "$0") [--flag=value ...]"
  for name in "${OPT_ORDER[@]}"; do
    printf '  --%-16s %s (default: %s)\n' "$name" "${OPT_HELP[$name]}" "${OPT[$name]:-none}"
  done
}

parse_args() {
  while (($#)); do
    local arg=$1 name value
    shift
    case $arg in
      -h|--help) usage; exit 0 ;;
      --dry_run) OPT[dry_run]=true; continue ;;
      --*=*) name=${arg%%=*}; name=${name#--}; value=${arg#*=} ;;
      --*) name=${arg#--}
           if (($# == 0)); then echo "error: --$name needs a value" >&2; exit 2; fi
           value=$1; shift ;;
      *) echo "error: unexpected argument '$arg' (flags are --name=value)" >&2; exit 2 ;;
    esac
    if [[ -z ${OPT_HELP[$name]+set} ]]; then
      echo "error: unknown flag --$name; see --help" >&2; exit 2
    fi
    OPT[$name]=$value
  done
}

require() {
  local name
  for name in "$@"; do
    if [[ -z ${OPT[$name]} ]]; then echo "error: --$name is required" >&2; exit 2; fi
  done
}

# launch CMD... : runs (or prints) CMD here, or on all workers of --tpu_vm.
launch() {
  local inner
  inner=$(printf '%q ' "$@")
  inner=${inner% }
  local cmd
  if [[ -n ${OPT[tpu_vm]} ]]; then
    require zone
    local remote="cd ${OPT[repo_dir]} && ${inner}"
    cmd=(gcloud compute tpus tpu-vm ssh "${OPT[tpu_vm]}" "--zone=${OPT[zone]}" --worker=all
         "--command=${remote}")
    if [[ -n ${OPT[project]} ]]; then cmd+=("--project=${OPT[project]}"); fi
  else
    cmd=("$@")
  fi
  if [[ ${OPT[dry_run]} == true ]]; then
    printf '%q ' "${cmd[@]}" | sed 's/ $//'
    echo
  else
    "${cmd[@]}"
  fi
}
