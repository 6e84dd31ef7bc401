"""Reward of the seed search (docs/design.md §8): relative change of the metrics, EMA baseline.

For each metric m the history holds one value per step; the step's term is
    Δm = (m_t − m_{t−1}) / (max − min of the last `window` values, m_t included, + 1e-6)
and the reward is the sum of the terms of the chosen metrics, each signed so that an
improvement is positive (L^E, params and MACs: higher is better; κ_Θ: lower is better).
A bad network (non-finite κ_Θ, or flagged bad by the metric) is given the worst κ_Θ seen so
far; symmetrically a non-finite L^E gets the worst (smallest) L^E seen so far. Before any
finite value exists the value stays NaN and contributes 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from asvit_tf.errors import UserInputError

WINDOW = 20
EPS = 1e-6

# reward name -> ((metric, +1 if higher is better else -1), ...)
REWARDS: Dict[str, Tuple[Tuple[str, int], ...]] = {
    'length_ntk': (('length', +1), ('ntk', -1)),
    'length': (('length', +1),),
    'ntk': (('ntk', -1),),
    'params': (('params', +1),),
    'macs': (('macs', +1),),
}


def reward_metrics(reward: str, name: str = 'reward') -> Tuple[str, ...]:
  """The metrics a reward needs; an unknown one is refused naming the field `name`."""
  if reward not in REWARDS:
    raise UserInputError(f'`{name}` must be one of {", ".join(REWARDS)}, got {reward!r}')
  return tuple(m for m, _ in REWARDS[reward])


def _finite(x) -> bool:
  return x is not None and math.isfinite(x)


def relative_change(values: Sequence[float], window: int = WINDOW, eps: float = EPS) -> float:
  """(v_t − v_{t−1}) / (max − min of the last `window` finite values + eps); 0 at t=0."""
  if len(values) < 2 or not (_finite(values[-1]) and _finite(values[-2])):
    return 0.0
  recent = [v for v in values[-window:] if _finite(v)]
  return (values[-1] - values[-2]) / (max(recent) - min(recent) + eps)


def substitute_bad(value: Optional[float], history: Sequence[float], sign: int,
                   bad: bool = False) -> float:
  """`value`, or the worst finite value of `history` if `value` is bad/non-finite (NaN when
  there is none). `sign` is +1 when higher is better."""
  if not bad and _finite(value):
    return float(value)
  seen = [v for v in history if _finite(v)]
  if not seen:
    return math.nan
  return min(seen) if sign > 0 else max(seen)


@dataclasses.dataclass
class RewardTracker:
  """Histories of the reward's metrics (after substitution) and the step reward."""
  reward: str = 'length_ntk'
  window: int = WINDOW
  history: Dict[str, List[float]] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    reward_metrics(self.reward)
    for metric, _ in REWARDS[self.reward]:
      self.history.setdefault(metric, [])

  def add(self, metrics: Mapping[str, Optional[float]], bad: bool = False
          ) -> Tuple[float, Dict[str, float]]:
    """Appends one step; returns (reward, the values used after substitution).

    `bad` marks a bad network: its κ_Θ becomes the worst seen (docs/design.md §8).
    """
    used, reward = {}, 0.0
    for metric, sign in REWARDS[self.reward]:
      hist = self.history[metric]
      value = substitute_bad(metrics.get(metric), hist, sign, bad and metric == 'ntk')
      hist.append(value)
      used[metric] = value
      reward += sign * relative_change(hist, self.window)
    return reward, used

  def state(self) -> Dict:
    return {'reward': self.reward, 'window': self.window, 'history': self.history}

  @classmethod
  def from_state(cls, s: Mapping) -> 'RewardTracker':
    return cls(s['reward'], s['window'], {k: list(v) for k, v in s['history'].items()})


@dataclasses.dataclass
class EMABaseline:
  """Bias-corrected exponential moving average of the reward (Adam-style correction)."""
  momentum: float = 0.9
  value: float = 0.0
  count: int = 0

  def update(self, reward: float) -> float:
    """Folds in `reward`; returns the bias-corrected baseline including it."""
    self.value = self.momentum * self.value + (1 - self.momentum) * reward
    self.count += 1
    return self.value / (1 - self.momentum**self.count)

  def state(self) -> Dict:
    return dataclasses.asdict(self)
