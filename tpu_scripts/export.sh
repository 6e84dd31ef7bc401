#!/usr/bin/env bash
# SavedModel export of a trained As-ViT (classifier or detector) with the final tokenization.
#   tpu_scripts/export.sh --model_dir=gs://BUCKET/asvit/small --export_dir=gs://BUCKET/asvit/small/export [--dry_run]
source "$(dirname "$0")/_common.sh"
opt model_dir '' 'training model_dir: its params.yaml and latest checkpoint are used (required)'
opt export_dir '' 'where the SavedModel is written (required)'
opt experiment asvit_imagenet 'experiment name (cascadercnn_asvit_coco for the detector)'
parse_args "$@"
require model_dir export_dir
launch asvit export "--experiment=${OPT[experiment]}" \
  "--config_file=${OPT[model_dir]}/params.yaml" "--checkpoint_path=${OPT[model_dir]}" \
  "--export_dir=${OPT[export_dir]}"
