"""Model Garden trainer that applies the re-tokenization schedule of the experiment config.

Orbit traces the train and eval loops once and caches them (`_train_loop_fn`,
`_eval_loop_fn`); the stride is a Python value baked into that trace. The trainer therefore
checks the schedule eagerly before every train loop and every evaluation, and at a switch
re-tokenizes the backbone and drops both caches so orbit traces the loops anew. The check reads
the global step after orbit has restored the checkpoint, so a restarted run (or a separate
evaluation job) uses the right tokenization from its first loop.

Which tokenization: a train loop starting at global step n runs the phase of step n; an
evaluation of the weights after n steps uses the phase of step n-1, the tokenization those
weights were last trained with (a phase's first evaluation would otherwise measure weights not
yet adapted to the new grid). The last evaluation therefore uses the final tokenization.

Injection: `asvit train` passes it to Model Garden's `run_experiment`; from the stock driver use
`--gin_params='create_trainer.trainer_cls=@AsViTTrainer'`.
"""
from __future__ import annotations

from absl import logging
import gin

from official.core import base_trainer

from asvit_tf.garden import retokenization as retok
from asvit_tf.models import size


@gin.configurable
class AsViTTrainer(base_trainer.Trainer):
  """`base_trainer.Trainer` plus the schedule in `task.model.backbone.asvit.retokenization`.

  Train and eval logs (hence TensorBoard) carry `retokenization/*` scalars: stride, dilation,
  stage-1 grid rows/cols and tokens per image in force during that loop.
  """

  def __init__(self, config, task, model, optimizer, *args, **kwargs):
    backbone_cfg = config.task.model.backbone
    if backbone_cfg.type != 'asvit':
      raise ValueError(f'AsViTTrainer needs an asvit backbone, got {backbone_cfg.type!r}')
    asvit_cfg = backbone_cfg.get()
    self._image_size = list(config.task.model.input_size[:2])
    self._final = (asvit_cfg.stride, asvit_cfg.dilation)
    self._phases = retok.as_phases(asvit_cfg.retokenization)
    retok.validate_schedule(self._phases, self._final, self._image_size,
                            config.trainer.steps_per_loop, config.trainer.train_steps)
    super().__init__(config, task, model, optimizer, *args, **kwargs)

  @property
  def tokenization(self):
    return tuple(retok.find_retokenizable(self.model).tokenization)

  def apply_schedule(self, for_eval: bool = False) -> bool:
    """Sets the tokenization due for the next train loop, or with `for_eval` for evaluating
    the current weights (see the module doc); True if it changed."""
    target = retok.find_retokenizable(self.model)
    step = int(self.global_step.numpy())
    if for_eval:
      step = max(0, step - 1)
    due = retok.tokenization_at(self._phases, step, self._final)
    if tuple(target.tokenization) == tuple(due):
      return False
    rows, cols = size.token_grid(self._image_size[:2], due[0])
    logging.info('re-tokenization for step %d: stride/dilation %s -> %s, grid %dx%d '
                 '(%d tokens per image); re-tracing the train and eval loops', step,
                 tuple(target.tokenization), tuple(due), rows, cols, rows * cols)
    target.set_tokenization(*due)
    # Orbit re-creates (and so re-traces) these lazily on their next call.
    self._train_loop_fn = None
    self._eval_loop_fn = None
    return True

  def _tokenization_logs(self):
    return retok.tokenization_logs(self._image_size, *self.tokenization)

  def train_loop_begin(self):
    self.apply_schedule()
    super().train_loop_begin()

  def train_loop_end(self):
    logs = super().train_loop_end()
    logs.update(self._tokenization_logs())
    return logs

  def eval_begin(self):
    self.apply_schedule(for_eval=True)
    return super().eval_begin()

  def eval_end(self, aggregated_logs=None):
    logs = super().eval_end(aggregated_logs)
    logs.update(self._tokenization_logs())
    return logs
