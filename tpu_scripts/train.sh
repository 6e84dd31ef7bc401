#!/usr/bin/env bash
# As-ViT ImageNet training with progressive re-tokenization on a Cloud TPU.
#   tpu_scripts/train.sh --variant=small --model_dir=gs://BUCKET/asvit/small --tpu=local [--dry_run]
source "$(dirname "$0")/_common.sh"
opt variant small 'small, base or large: picks official_configs/asvit_VARIANT_imagenet_tpu.yaml'
opt model_dir '' 'checkpoints and summaries, a gs:// path on TPU (required)'
opt tpu local 'TPU name or address for TPUClusterResolver (local on a TPU VM)'
opt mode train_and_eval 'Model Garden mode'
opt params_override '' 'extra Model Garden overrides, e.g. task.train_data.input_path=gs://...'
parse_args "$@"
require model_dir
case ${OPT[variant]} in small|base|large) ;; *)
  echo "error: --variant must be small, base or large, got '${OPT[variant]}'" >&2; exit 2 ;;
esac
args=(asvit train --experiment=asvit_imagenet "--mode=${OPT[mode]}"
      "--config_file=official_configs/asvit_${OPT[variant]}_imagenet_tpu.yaml"
      "--model_dir=${OPT[model_dir]}" "--tpu=${OPT[tpu]}")
if [[ -n ${OPT[params_override]} ]]; then args+=("--params_override=${OPT[params_override]}"); fi
launch "${args[@]}"
