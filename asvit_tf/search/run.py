"""The one driver of a training-free run (search, grow): state, resume, lock, progress, logs.

A run is a loop of steps. In each, a `Strategy` proposes the topologies it still needs
measured, the driver has an `Evaluator` measure them and hands each measurement back as it
arrives, then the strategy concludes the step into a record. Everything around that loop
is here, once:

- the output directory: created, locked against a second run (`lock.RunLock`), holding the
  strategy's state file (`state.py`), refused if it holds a run with another configuration;
- resume: the state is saved after every measurement and every step (atomically), so a
  killed run started again continues where it stopped and gives the uninterrupted result;
- the JSONL of the step records, the strategy's plots and tables, TensorBoard scalars, a
  progress bar; the final outputs, rewritten whenever a finished run is run again (so
  deleted outputs come back);
- the evaluator's life: the default one is made from the run's config and closed at the end.

A strategy (REINFORCE in `reinforce.py`, the scaling in `grow.py`) is only the algorithm: it
keeps what it must remember in the state dict, proposes, takes measurements, concludes. A
strategy that proposes many topologies per step (a population, a batch of samples) gets them
measured side by side by the same evaluator.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from absl import logging
from tqdm.auto import tqdm

from asvit_tf.errors import UserInputError
from asvit_tf.search import data as data_lib
from asvit_tf.search import lock as lock_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel
from asvit_tf.search import ray_evaluator
from asvit_tf.search import state as state_lib

TB_DIR = 'tensorboard'


@dataclasses.dataclass
class Proposal:
  """What a step still needs measured: `keys[i]` names `items[i]` (topology, seed) for
  `Strategy.take`; `done` measurements of the step were taken before (a resumed step)."""
  keys: List[str]
  items: List[measure_lib.Item]
  done: int = 0
  status: str = ''  # shown beside the progress bar


class Strategy(Protocol):
  """The algorithm of a run; the driver calls it in this order:
  `restore` once, then per step `propose`, `take` for each measurement, `conclude`; at the
  end `write_outputs(final=True)`."""
  kind: str  # the state file is f'{kind}_state.json'
  log_file: str  # the JSONL of the step records
  unit: str  # what the progress bar counts: 'step' or 'measurement'
  scalars: Tuple[str, ...]  # record keys written to TensorBoard (none: no TensorBoard)

  def fresh_state(self) -> Dict:
    """The state of a new run: a JSON-able dict with 'kind', 'config', 'step', 'done' and
    'records' (the step records)."""

  def restore(self, state: Dict) -> None:
    """Takes `state` (fresh or saved) as its own; KeyError/TypeError if it is damaged. The
    driver has checked that `state` holds every key of `fresh_state()`."""

  def finished(self) -> bool:
    """No step is left."""

  def total(self) -> Optional[int]:
    """The number of steps if known (for the progress bar)."""

  def propose(self) -> Optional[Proposal]:
    """The current step's topologies still to measure, or None if the run ends here."""

  def take(self, key: str, measurement: measure_lib.Measurement) -> None:
    """One measurement of the current step, as soon as it arrives."""

  def conclude(self) -> Dict:
    """The current step's record (appended to state['records']); advances the state."""

  def status(self) -> str:
    """One short line on where the run is (beside the progress bar)."""

  def write_outputs(self, output_dir: str, final: bool) -> None:
    """The strategy's files besides the state and the JSONL (plots, tables, results)."""


class OpenEndedStrategy:
  """The part of a `Strategy` whose end is not known in advance: its state dict is all it
  keeps (restored as it is) and says itself when the run is 'done'."""
  state: Dict

  def restore(self, state: Dict) -> None:
    self.state = state

  def finished(self) -> bool:
    return self.state['done']

  def total(self) -> None:
    return None


class TensorBoard:
  """tf.summary scalars of the step records, opened lazily (TensorFlow only when used)."""

  def __init__(self, logdir: Optional[str], keys: Sequence[str]):
    self.logdir, self.keys, self.writer = logdir, tuple(keys), None

  def write(self, record: Dict):
    if not self.logdir or not self.keys:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self.writer is None:
      self.writer = tf.summary.create_file_writer(self.logdir)
    with self.writer.as_default(step=record['step']):
      for key in self.keys:
        v = record.get(key)
        if v is not None and math.isfinite(v):
          tf.summary.scalar(key, v)
    self.writer.flush()


def default_evaluator(metrics: Sequence[str], config, workers: int = 1,
                      threads: Optional[int] = None, ray=None) -> measure_lib.Evaluator:
  """The evaluator of a run config (image_size, repeats, batch_size, data, data_dir, seed,
  share_embedding if it has it): its `data` batch is loaded (and so checked) whenever given,
  though only κ_Θ reads it.

  With `ray` (a `ray_evaluator.RayOptions`) the complexity metrics are Ray tasks on that
  cluster (`ray_evaluator.RayEvaluator`). Else, with `workers` > 1, they run in that many
  local processes (`parallel.PoolMeasure`), each with `threads` intra-op threads (default:
  its share of the cores); else in this process.
  """
  images = data_lib.load_batch(config.data, config.data_dir, config.image_size,
                               config.batch_size, config.seed)
  share = bool(getattr(config, 'share_embedding', False))
  if ray is not None:
    return ray_evaluator.RayEvaluator(metrics, ray, config.image_size, config.repeats, images,
                                      config.batch_size, share_embedding=share)
  if workers > 1:
    return parallel.PoolMeasure(metrics, workers, config.image_size, config.repeats, images,
                                config.batch_size, threads=threads, share_embedding=share)
  return measure_lib.SerialEvaluator(measure_lib.make_measure(
      metrics, config.image_size, config.repeats, images, config.batch_size,
      share_embedding=share))


def _progress_bar(strategy: Strategy, state: Dict, enabled: bool):
  by_step = strategy.unit == 'step'
  bar = tqdm(total=strategy.total() if by_step else None,
             initial=state['step'] if by_step else 0, desc=strategy.kind, unit=strategy.unit,
             disable=not enabled, dynamic_ncols=True)
  if state['records']:
    bar.set_postfix_str(strategy.status())
  return bar


def _open(strategy: Strategy, output_dir: str, config) -> Dict:
  """The saved state of `output_dir` (refused if of another config or damaged), or a
  fresh one; restored into `strategy`."""
  state = state_lib.load_state(output_dir, strategy.kind, dataclasses.asdict(config),
                               dataclasses.asdict(type(config)()))
  fresh = strategy.fresh_state()
  if state is None:
    refuse_records_without_state(strategy, output_dir)
    state = fresh
  try:
    missing = [k for k in fresh if k not in state]
    if missing:
      raise KeyError(f'no {", ".join(missing)}')
    strategy.restore(state)
  except (KeyError, TypeError, AttributeError, IndexError) as e:
    path = os.path.join(output_dir, state_lib.state_file(strategy.kind))
    raise UserInputError(f'the saved state {path} is damaged ({type(e).__name__}: {e}); move it '
                     'away to start the run afresh, or use another `output_dir`') from None
  return state


def refuse_records_without_state(strategy: Strategy, output_dir: str):
  """One line if `output_dir`, which holds no saved state of this kind, holds its records.

  A run saves its state before it writes its records, so records without a state are not
  this directory's own fresh start: the state was deleted, or the records were copied here
  without it. A new run would overwrite them at once; it is refused instead.
  """
  log_path = os.path.join(output_dir, strategy.log_file)
  if not os.path.exists(log_path):
    return
  with open(log_path) as f:
    count = sum(1 for line in f if line.strip())
  if count:
    state_name = state_lib.state_file(strategy.kind)
    raise UserInputError(f'{log_path} holds {count} records of a {strategy.kind} run but '
                         f'{output_dir} has no {state_name} to resume it from, and a new run '
                         f'would overwrite them: move {strategy.log_file} away, or use '
                         'another `output_dir`')


@dataclasses.dataclass
class Hooks:
  """Callbacks (tests use them to stop a run at a chosen point)."""
  on_measure: Optional[Callable[[measure_lib.Measurement], None]] = None
  on_step: Optional[Callable[[Dict], None]] = None


class _Loop:
  """The steps of one run in one locked output directory."""

  def __init__(self, strategy: Strategy, output_dir: str, state: Dict, board: TensorBoard,
               plot_every: int, bar, hooks: Hooks):
    self.strategy, self.output_dir, self.state = strategy, output_dir, state
    self.board, self.plot_every, self.bar, self.hooks = board, plot_every, bar, hooks
    self.log_path = os.path.join(output_dir, strategy.log_file)

  def save(self):
    state_lib.save_state(self.output_dir, self.state)

  def measure(self, proposal: Proposal, evaluator: measure_lib.Evaluator):
    """Each measurement taken and saved as it arrives: a kill loses at most those under way."""
    by_measurement = self.strategy.unit != 'step'
    for i, m in evaluator.measure(proposal.items):
      self.strategy.take(proposal.keys[i], m)
      self.save()
      if by_measurement:
        self.bar.update(1)
      if self.hooks.on_measure is not None:
        self.hooks.on_measure(m)

  def finish_step(self):
    record = self.strategy.conclude()
    self.save()
    state_lib.write_jsonl(self.log_path, self.state['records'])
    self.board.write(record)
    if self.plot_every and self.state['step'] % self.plot_every == 0:
      self.strategy.write_outputs(self.output_dir, final=False)
    if self.strategy.unit == 'step':
      self.bar.update(1)
    elif not self.bar.disable:  # the bar counts measurements: one line per step
      self.bar.write(self.strategy.status())
    self.bar.set_postfix_str(self.strategy.status())
    if self.hooks.on_step is not None:
      self.hooks.on_step(record)

  def run(self, make_evaluator: Callable[[], measure_lib.Evaluator]):
    evaluator = None
    while not self.strategy.finished():
      proposal = self.strategy.propose()
      if proposal is None:
        break
      if self.strategy.unit != 'step':
        self.bar.update(proposal.done)
      self.bar.set_postfix_str(proposal.status or self.strategy.status())
      if proposal.items:
        evaluator = evaluator or make_evaluator()
        self.measure(proposal, evaluator)
      self.finish_step()


def drive(strategy: Strategy, config, output_dir: str,
          make_evaluator: Callable[[], measure_lib.Evaluator], owned: bool = True,
          progress: bool = True, tensorboard: bool = True, plot_every: int = 1,
          hooks: Optional[Hooks] = None) -> Tuple[str, Dict]:
  """Runs (or resumes, or regenerates the outputs of a finished) run of `strategy`.

  Args:
    config: the run's dataclass config; a saved run with another one is refused.
    make_evaluator: called once, when the first measurement is needed.
    owned: the driver closes the evaluator at the end (False: the caller does).
    plot_every: `strategy.write_outputs` after every so many steps (0: only at the end).

  Returns (absolute output dir, final state).
  """
  output_dir = state_lib.prepare_output_dir(output_dir)
  with lock_lib.RunLock(output_dir):
    state = _open(strategy, output_dir, config)
    # The JSONL may be one step behind the state if a kill fell between the two writes.
    state_lib.write_jsonl(os.path.join(output_dir, strategy.log_file), state['records'])
    board = TensorBoard(os.path.join(output_dir, TB_DIR) if tensorboard else None,
                        strategy.scalars)
    bar = _progress_bar(strategy, state, progress and not state['done'])
    made: List[measure_lib.Evaluator] = []

    def make():
      made.append(make_evaluator())
      return made[-1]
    try:
      _Loop(strategy, output_dir, state, board, plot_every, bar, hooks or Hooks()).run(make)
    finally:
      bar.close()
      if owned:
        for e in made:
          e.close()
    # A strategy may amend its records when the run ends without a step (grow's budget marks
    # when no candidate is left).
    state_lib.write_jsonl(os.path.join(output_dir, strategy.log_file), state['records'])
    # Rewritten (atomically, with the same content) at every run of a finished one.
    strategy.write_outputs(output_dir, final=True)
    if not state['done']:
      logging.info('%s done: %s', strategy.kind, strategy.status())
    state['done'] = True
    state_lib.save_state(output_dir, state)
  return output_dir, state

