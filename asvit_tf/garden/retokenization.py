"""Progressive re-tokenization (docs/design.md §11): the schedule, and a `Model.fit` callback.

A schedule is a list of phases (start step, stride, dilation): from its start step on, a phase's
stride and dilation drive the patch embedding. Only the tokenization changes, no weight, so one
checkpoint serves every phase. Traced functions bake the stride in, so whoever applies a switch
must re-trace: `AsViTTrainer` (Model Garden, `asvit_tf.garden.trainer`) drops orbit's cached
loop functions, `RetokenizationCallback` (plain `Model.fit`) rebuilds Keras' train function.

The schedule always ends at the backbone's own `stride`/`dilation` (checked by
`validate_schedule`), so a model built from a config without a trainer (evaluation, export,
detection fine-tuning) has the final tokenization.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import List, NamedTuple, Optional, Sequence, Tuple

from absl import logging
import tf_keras

from official.modeling import hyperparams

from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.layers.blocks import retokenization_dilation
from asvit_tf.models import size

# The published schedule (300 epochs): stride 16 until epoch ~80, stride 8 until ~132, then 4.
PUBLISHED_EPOCHS = 300
PUBLISHED_PHASES = ((0, 16), (80, 8), (132, 4))


@dataclasses.dataclass
class RetokenizationPhase(hyperparams.Config):
  """One phase of the schedule: from global step `start_step` on, tokenize with
  `stride` and `dilation`."""
  start_step: int = 0
  stride: int = 4
  dilation: int = 1


class Phase(NamedTuple):
  start_step: int
  stride: int
  dilation: int


def as_phases(schedule) -> List[Phase]:
  """Phases from config entries, dicts or (start_step, stride, dilation) tuples."""
  out = []
  for entry in schedule or ():
    if isinstance(entry, (tuple, list)):
      out.append(Phase(*(int(v) for v in entry)))
    elif isinstance(entry, dict):
      out.append(Phase(int(entry['start_step']), int(entry['stride']), int(entry['dilation'])))
    else:
      out.append(Phase(int(entry.start_step), int(entry.stride), int(entry.dilation)))
  return out


def published_schedule(train_steps: int, kernel: int,
                       epochs: int = PUBLISHED_EPOCHS,
                       steps_per_loop: int = 1) -> List[Phase]:
  """The paper's schedule scaled from `epochs` to `train_steps`, with the dilation rule
  d = max(1, round((s-1)/(K1-1))) for the patch kernel K1 (the paper's 16/d5 and 8/d2 are
  that rule at K1 = 4). Start steps are rounded down to a multiple of `steps_per_loop`."""
  phases = []
  for start_epoch, stride in PUBLISHED_PHASES:
    start = train_steps * start_epoch // epochs
    start -= start % steps_per_loop
    phases.append(Phase(start, stride, retokenization_dilation(kernel, stride)))
  return phases


def validate_schedule(schedule, final: Tuple[int, int], image_size: Sequence[int] = (),
                      steps_per_loop: int = 1, train_steps: Optional[int] = None):
  """Raises ValueError naming the rule a schedule breaks.

  Rules: the first phase starts at step 0; start steps increase; stride and dilation >= 1;
  the last phase is `final` (the backbone's stride/dilation: what evaluation and export use);
  start steps are multiples of `steps_per_loop` (switches happen between loops); every phase
  starts before `train_steps`; image sides follow `validation.check_image_size` at every
  stride (a side the stride does not divide is padded up, as in evaluation and export).
  """
  phases = as_phases(schedule)
  strides = {final[0]} | {p.stride for p in phases}
  for stride in sorted(strides):
    validation.integer('task.model.backbone.asvit.stride (or a retokenization stride)', stride)
    for side in image_size:
      validation.check_image_size(side, stride, 'task.model.input_size')
  if not phases:
    return
  where = 'task.model.backbone.asvit.retokenization'
  if phases[0].start_step != 0:
    raise UserInputError(f'{where}: the first phase must start at step 0, got '
                         f'{phases[0].start_step}')
  for prev, phase in zip(phases, phases[1:]):
    if phase.start_step <= prev.start_step:
      raise UserInputError(f'{where}: start steps must increase, got {prev.start_step} then '
                           f'{phase.start_step}')
  for phase in phases:
    if phase.stride < 1 or phase.dilation < 1:
      raise UserInputError(f'{where}: stride and dilation must be >= 1, got {tuple(phase)}')
    if phase.start_step % steps_per_loop:
      raise UserInputError(f'{where}: start step {phase.start_step} is not a multiple of '
                           f'trainer.steps_per_loop={steps_per_loop} (switches happen between '
                           'loops)')
    if train_steps is not None and phase.start_step >= train_steps > 0:
      raise UserInputError(f'{where}: phase {tuple(phase)} starts at or after '
                           f'trainer.train_steps={train_steps}')
  last = (phases[-1].stride, phases[-1].dilation)
  if last != tuple(final):
    raise UserInputError(f'{where}: the last phase uses stride/dilation {last} but the backbone '
                         f'has stride/dilation {tuple(final)}; they must agree (evaluation and '
                         'export build the model with the backbone\'s values)')


def tokenization_at(schedule, step: int, default: Tuple[int, int]) -> Tuple[int, int]:
  """(stride, dilation) in force at global `step`; `default` without a schedule."""
  phases = as_phases(schedule)
  i = bisect.bisect_right([p.start_step for p in phases], int(step))
  if i == 0:
    return tuple(default)
  return phases[i - 1].stride, phases[i - 1].dilation


def tokenization_logs(image_size: Sequence[int], stride: int, dilation: int) -> dict:
  """Scalars for TensorBoard: the stage-1 grid and the tokens per image."""
  rows, cols = size.token_grid(image_size[:2], stride)
  return {'retokenization/stride': stride, 'retokenization/dilation': dilation,
          'retokenization/grid_rows': rows, 'retokenization/grid_cols': cols,
          'retokenization/tokens_per_image': rows * cols}


def find_retokenizable(model):
  """The part of `model` that has `set_tokenization`: a Model Garden classifier's backbone or
  the model itself (an `AsViT`)."""
  for candidate in (getattr(model, 'backbone', None), model):
    if candidate is not None and hasattr(candidate, 'set_tokenization'):
      return candidate
  raise UserInputError(f'{type(model).__name__} has no As-ViT tokenization to schedule')


class RetokenizationCallback(tf_keras.callbacks.Callback):
  """Applies a schedule during `Model.fit`, by the optimizer's global step.

  Before every batch it compares the tokenization due at `optimizer.iterations` with the
  model's; at a switch it re-tokenizes and rebuilds the train function (fit reads it anew every
  step) and drops the test/predict functions. Using the global step makes it correct across
  epochs and after restoring a checkpoint. Put it before a `TensorBoard` callback to have the
  grid and tokens per image logged with each epoch.

  Args:
    schedule: phases, as `(start_step, stride, dilation)` tuples or config entries.
    image_size: [H, W] of the training images (for the logged grid); read from the model's
      input when omitted.
  """

  def __init__(self, schedule, image_size: Optional[Sequence[int]] = None):
    super().__init__()
    self.phases = as_phases(schedule)
    if not self.phases:
      raise UserInputError('RetokenizationCallback needs a non-empty schedule')
    self.image_size = list(image_size) if image_size else None
    self.switches: List[Tuple[int, int, int]] = []  # (step, stride, dilation) applied

  def _apply(self):
    target = find_retokenizable(self.model)
    step = int(self.model.optimizer.iterations.numpy())
    due = tokenization_at(self.phases, step, target.tokenization)
    if tuple(target.tokenization) != tuple(due):
      logging.info('re-tokenization at step %d: stride/dilation %s -> %s', step,
                   tuple(target.tokenization), due)
      target.set_tokenization(*due)
      self.model.make_train_function(force=True)
      self.model.test_function = None
      self.model.predict_function = None
      self.switches.append((step, *due))

  def on_train_begin(self, logs=None):
    self._apply()

  def on_train_batch_begin(self, batch, logs=None):
    self._apply()

  def on_epoch_end(self, epoch, logs=None):
    if logs is None:
      return
    size = self.image_size
    if size is None and getattr(self.model, 'inputs', None):
      size = self.model.inputs[0].shape[1:3]
    if size is None or None in list(size):
      return
    logs.update(tokenization_logs(size, *find_retokenizable(self.model).tokenization))
