#!/usr/bin/env bash
# As-ViT ImageNet training with progressive re-tokenization on a Cloud TPU.
#   tpu_scripts/train.sh --variant=large --model_dir=gs://BUCKET/asvit/large --tpu=local [--dry_run]
source "$(dirname "$0")/_common.sh"
opt variant large 'small, base, base_seed2 or large: picks official_configs/asvit_VARIANT_imagenet_tpu.yaml'
opt model_dir '' 'checkpoints and summaries, a gs:// path on TPU (required)'
opt tpu local 'TPU name or address for TPUClusterResolver (local on a TPU VM)'
opt mode train_and_eval 'Model Garden mode'
opt params_override '' 'extra Model Garden overrides, e.g. task.train_data.input_path=gs://...'
parse_args "$@"
require model_dir
case ${OPT[variant]} in small|base|base_seed2|large) ;; *)
  echo "error: --variant must be small, base, base_seed2 or large, got '${OPT[variant]}'" >&2; exit 2 ;;
esac
config="official_configs/asvit_${OPT[variant]}_imagenet_tpu.yaml"
if [[ -z ${OPT[tpu_vm]} && ! -f "$(dirname "$0")/../$config" ]]; then
  echo "error: $config is not in this checkout" >&2; exit 2
fi
args=(asvit train --experiment=asvit_imagenet "--mode=${OPT[mode]}"
      "--config_file=$config"
      "--model_dir=${OPT[model_dir]}" "--tpu=${OPT[tpu]}")
if [[ -n ${OPT[params_override]} ]]; then args+=("--params_override=${OPT[params_override]}"); fi
launch "${args[@]}"
