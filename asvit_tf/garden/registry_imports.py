"""Import this instead of `official.vision.registry_imports`: Model Garden's stock
registrations plus the `asvit` backbone builder, the experiments `asvit_imagenet`
(classification) and `cascadercnn_asvit_coco` (detection), and the gin-configurable
`AsViTTrainer`."""
# pylint: disable=unused-import
from official.vision import registry_imports as _official_registry_imports

from asvit_tf.garden import backbone as _backbone
from asvit_tf.garden import configs as _configs
from asvit_tf.garden import detection as _detection
from asvit_tf.garden import trainer as _trainer
