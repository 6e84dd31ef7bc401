#!/usr/bin/env bash
# Training-free scaling of a seed topology into a family (paper preset) on a Cloud TPU VM's host.
#   tpu_scripts/grow.sh --arch='8,2,3|4,1,2|4,1,4|4,1,6|32' --output_dir=gs://BUCKET/asvit/grow [--dry_run]
source "$(dirname "$0")/_common.sh"
opt arch '8,2,3|4,1,2|4,1,4|4,1,6|32' 'seed topology string'
opt output_dir '' 'where the scaling run writes its series (required)'
opt preset paper 'paper or quick'
opt target_params 80e6 'stop at the first model with at least this many parameters'
opt max_params 110e6 'drop candidates above this many parameters'
opt seed 0 'random seed'
parse_args "$@"
require output_dir
launch asvit grow "--arch=${OPT[arch]}" "--output_dir=${OPT[output_dir]}" \
  "--preset=${OPT[preset]}" "--target_params=${OPT[target_params]}" \
  "--max_params=${OPT[max_params]}" "--seed=${OPT[seed]}"
