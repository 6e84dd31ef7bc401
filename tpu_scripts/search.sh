#!/usr/bin/env bash
# Training-free seed search (REINFORCE, paper preset) on a Cloud TPU VM's host.
#   tpu_scripts/search.sh --output_dir=gs://BUCKET/asvit/search [--data=imagenet2012 --data_dir=gs://BUCKET/tfds] [--dry_run]
source "$(dirname "$0")/_common.sh"
opt output_dir '' 'where the search writes its log, plots and seed.txt (required)'
opt preset paper 'paper or quick'
opt data '' 'TFDS name or image folder for the NTK batch (empty: Gaussian noise)'
opt data_dir '' 'TFDS data_dir'
opt seed 0 'random seed'
parse_args "$@"
require output_dir
args=(asvit search "--preset=${OPT[preset]}" "--output_dir=${OPT[output_dir]}" "--seed=${OPT[seed]}")
if [[ -n ${OPT[data]} ]]; then args+=("--data=${OPT[data]}"); fi
if [[ -n ${OPT[data_dir]} ]]; then args+=("--data_dir=${OPT[data_dir]}"); fi
launch "${args[@]}"
