#!/usr/bin/env bash
# As-ViT ImageNet training with progressive re-tokenization on a Cloud TPU.
#   tpu_scripts/train.sh --variant=large --model_dir=gs://BUCKET/asvit/large --tpu=local [--dry_run]
source "$(dirname "$0")/_common.sh"
# The variants are the ImageNet TPU configs in this checkout: a new YAML is a new variant.
variants=()
for yaml in "$(dirname "$0")"/../official_configs/asvit_*_imagenet_tpu.yaml; do
  [[ -f $yaml ]] || continue
  name=${yaml##*/asvit_}; variants+=("${name%_imagenet_tpu.yaml}")
done
variant_list=$(printf '%s, ' "${variants[@]}"); variant_list=${variant_list%, }
opt variant large "one of ${variant_list}: picks official_configs/asvit_VARIANT_imagenet_tpu.yaml"
opt model_dir '' 'checkpoints and summaries, a gs:// path on TPU (required)'
opt tpu local 'TPU name or address for TPUClusterResolver (local on a TPU VM)'
opt mode train_and_eval 'Model Garden mode'
opt params_override '' 'extra Model Garden overrides, e.g. task.train_data.input_path=gs://...'
parse_args "$@"
require model_dir
if [[ " ${variants[*]} " != *" ${OPT[variant]} "* ]]; then
  echo "error: --variant must be one of ${variant_list}, got '${OPT[variant]}'" >&2; exit 2
fi
config="official_configs/asvit_${OPT[variant]}_imagenet_tpu.yaml"
args=(asvit train --experiment=asvit_imagenet "--mode=${OPT[mode]}"
      "--config_file=$config"
      "--model_dir=${OPT[model_dir]}" "--tpu=${OPT[tpu]}")
if [[ -n ${OPT[params_override]} ]]; then args+=("--params_override=${OPT[params_override]}"); fi
launch "${args[@]}"
