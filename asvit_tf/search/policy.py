"""The REINFORCE policy of the seed search (docs/design.md §8): 12 independent categoricals.

Pure NumPy (float64): the policy is 12 small logit vectors, so its log-prob gradient is
written out (d log p(a) / d logits = onehot(a) - softmax) and Adam is a few lines. This keeps
the search deterministic and its state (logits + Adam moments) trivially serialisable.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf import seeding

INIT_STD = 1e-3


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = np.exp(logits - logits.max())
  return z / z.sum()


@dataclasses.dataclass
class Adam:
  """Adam with PyTorch's defaults (the authors' framework): betas (0.9, 0.999), eps 1e-8."""
  lr: float = 0.08
  beta1: float = 0.9
  beta2: float = 0.999
  eps: float = 1e-8
  t: int = 0
  m: List[np.ndarray] = dataclasses.field(default_factory=list)
  v: List[np.ndarray] = dataclasses.field(default_factory=list)

  def step(self, params: List[np.ndarray], grads: Sequence[np.ndarray]):
    """Updates `params` in place (gradient descent on the loss whose gradient is `grads`)."""
    if not self.m:
      self.m = [np.zeros_like(p) for p in params]
      self.v = [np.zeros_like(p) for p in params]
    self.t += 1
    c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
    for p, g, m, v in zip(params, grads, self.m, self.v):
      m *= self.beta1
      m += (1 - self.beta1) * g
      v *= self.beta2
      v += (1 - self.beta2) * g * g
      p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

  def state(self) -> Dict:
    return {'lr': self.lr, 'beta1': self.beta1, 'beta2': self.beta2, 'eps': self.eps,
            't': self.t, 'm': [x.tolist() for x in self.m], 'v': [x.tolist() for x in self.v]}

  @classmethod
  def from_state(cls, s: Dict) -> 'Adam':
    return cls(s['lr'], s['beta1'], s['beta2'], s['eps'], s['t'],
               [np.array(x, np.float64) for x in s['m']],
               [np.array(x, np.float64) for x in s['v']])


class Policy:
  """One logit vector per decision of `arch.SEARCH_SPACE`, sampled independently.

  Args:
    seed: initialises the logits N(0, INIT_STD²).
    sizes: choices per decision (defaults to the 12 decisions of the search space).
  """

  def __init__(self, seed: int = 0, sizes: Sequence[int] | None = None):
    if sizes is None:
      sizes = [len(choices) for _, choices in arch_lib.SEARCH_SPACE]
    rng = seeding.rng(seed, seeding.POLICY_INIT)
    self.logits = [rng.normal(0.0, INIT_STD, size=n).astype(np.float64) for n in sizes]

  @property
  def sizes(self) -> List[int]:
    return [len(l) for l in self.logits]

  def probabilities(self) -> List[np.ndarray]:
    return [_softmax(l) for l in self.logits]

  def sample(self, rng: np.random.Generator) -> List[int]:
    """One choice index per decision, each drawn from its own categorical."""
    return [int(rng.choice(len(p), p=p)) for p in self.probabilities()]

  def log_prob(self, actions: Sequence[int]) -> float:
    """Sum over decisions of log p(choice)."""
    return float(sum(np.log(p[a]) for p, a in zip(self.probabilities(), actions)))

  def entropy(self) -> float:
    """Sum over decisions of the categorical entropy (nats)."""
    return float(sum(-(p * np.log(p)).sum() for p in self.probabilities()))

  def argmax(self) -> List[int]:
    return [int(np.argmax(l)) for l in self.logits]

  def log_prob_grad(self, actions: Sequence[int]) -> List[np.ndarray]:
    """d log_prob(actions) / d logits, per decision."""
    grads = []
    for p, a in zip(self.probabilities(), actions):
      g = -p
      g[a] += 1.0
      grads.append(g)
    return grads

  def reinforce_step(self, optimizer: Adam, actions: Sequence[int], advantage: float):
    """One Adam step on the loss -log_prob(actions) * advantage."""
    grads = [-advantage * g for g in self.log_prob_grad(actions)]
    optimizer.step(self.logits, grads)

  def reinforce_batch_step(self, optimizer: Adam, samples: Sequence[Sequence[int]],
                           advantages: Sequence[float]):
    """One Adam step on the batch loss (1/K) Σ_k −log_prob(samples[k])·advantages[k]; with
    one sample, exactly `reinforce_step`."""
    if len(samples) != len(advantages) or not samples:
      raise ValueError(f'need one advantage per sample, got {len(samples)} samples and '
                       f'{len(advantages)} advantages')
    k = len(samples)
    grads = None
    for actions, advantage in zip(samples, advantages):
      g = [-(advantage / k) * x for x in self.log_prob_grad(actions)]
      grads = g if grads is None else [a + b for a, b in zip(grads, g)]
    optimizer.step(self.logits, grads)

  def state(self) -> List[List[float]]:
    return [l.tolist() for l in self.logits]

  def load_state(self, logits: Sequence[Sequence[float]]):
    self.logits = [np.array(l, np.float64) for l in logits]
