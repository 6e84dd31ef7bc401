"""A network built once per measurement, its weights re-drawn for every repeat.

A measure builds (and, when traced, traces) its network once; a new Keras model per repeat
would cost a build and a retrace each time. Instead every trainable variable is drawn again
in place from the Keras initializer it was created with (captured by a variable-creator
scope at build time), re-seeded from (seed, repeat, variable index): repeats are independent
initialisations, the same seed gives the same weights, and the global random state is never
touched. A variable whose initial value is not a Keras initializer cannot be re-seeded: it
gets its initial value again at every repeat.

A given, built model (`Network.of_model`) is measured as it is: its weights are never drawn.
"""
from __future__ import annotations

import contextlib
import functools
import numbers
from typing import Callable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf.errors import UserInputError
from asvit_tf.layers import blocks
from asvit_tf.models import size

# A factory builds a fresh, unbuilt model with a `features(images, training)` method that
# returns [batch, F]; `use_layer_norm=False` must make its LayerNorms the identity. It may
# carry its network's cost (`with_macs`), which lets mode='auto' weigh eager against traced.
Factory = Callable[[bool], tf_keras.Model]
# Or a given model with `features`, measured with the weights it holds.
ArchOrFactory = Union[arch_lib.Topology, str, Factory, tf_keras.Model]

def is_model(arch_or_factory) -> bool:
  """True for a model to measure as it is (anything with a `features` method), rather than
  a topology or a factory to build one from."""
  return callable(getattr(arch_or_factory, 'features', None))


def model_factory(arch_or_factory: ArchOrFactory, width: Optional[int] = None,
                  merge: str = 'plain') -> Factory:
  """A `Factory` from a topology, topology string, variant name or a factory itself.

  A topology gives `AsViT(topology with C=width, drop_path_rate=0, merge=merge)`; its
  classification head is never built, as only `features` is called.
  """
  if callable(arch_or_factory):
    if width is not None or merge != 'plain':
      raise ValueError(f'width={width}, merge={merge!r} apply to a topology, not to a factory')
    return arch_or_factory
  topology = arch_lib.as_topology(arch_or_factory)
  if width is not None:
    topology = topology.replace(width=int(width))
  from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top

  def build(use_layer_norm: bool) -> tf_keras.Model:
    return asvit.AsViT(topology, num_classes=1, drop_path_rate=0.0,
                       use_layer_norm=use_layer_norm, merge=merge, name='measured')
  return with_macs(build, lambda side: size.count_macs(topology, side, None, merge=merge))


def with_macs(factory: Factory, forward_macs: Callable[[int], int]) -> Factory:
  """`factory`, carrying `forward_macs(image_side)`: the multiply-accumulates of one image's
  forward pass through what `features` reads, for `eager_pays`. Returns `factory`."""
  factory.forward_macs = forward_macs
  return factory


def forward_macs(arch_or_factory: ArchOrFactory, width: Optional[int],
                 image_shape: Sequence[int]) -> Optional[int]:
  """MACs of one image's forward pass: counted for a topology, as carried by a factory
  (`with_macs`), None when not known (a factory without it, a given model)."""
  if is_model(arch_or_factory):
    return None
  # A topology's factory counts its own MACs: one place counts an As-ViT's.
  factory = arch_or_factory if callable(arch_or_factory) else model_factory(arch_or_factory, width)
  count = getattr(factory, 'forward_macs', None)
  return None if count is None else int(count(max(int(s) for s in image_shape[:2])))


@contextlib.contextmanager
def recorded_initial_values(undrawn: bool = False):
  """Within it, the initial value each new variable was created from is recorded: yields
  {id(variable): initial_value} (the Keras initializer behind it, for `reseeded`).

  With `undrawn`, a variable whose initializer is a seeded (random) Keras one is created as
  zeros instead of drawing it: for a network whose weights are all drawn again before use.
  """
  created = {}

  def remember(next_creator, **kwargs):
    initial_value = kwargs.get('initial_value')
    if undrawn and _is_random(initial_value):
      kwargs['initial_value'] = functools.partial(
          tf_keras.initializers.Zeros(), *initial_value.args, **initial_value.keywords)
    variable = next_creator(**kwargs)
    created[id(variable)] = initial_value
    return variable

  with tf.variable_creator_scope(remember):
    yield created


def _keras_initializer(initial_value) -> Optional[tf_keras.initializers.Initializer]:
  """The Keras initializer behind a variable's `initial_value`, or None."""
  if (isinstance(initial_value, functools.partial)
      and isinstance(initial_value.func, tf_keras.initializers.Initializer)):
    return initial_value.func
  return None


def _is_random(initial_value) -> bool:
  """Whether `initial_value` is a Keras initializer call that draws (it takes a seed)."""
  init = _keras_initializer(initial_value)
  return init is not None and 'seed' in init.get_config()


def _is_constant(initial_value) -> bool:
  """Whether `initial_value` is a Keras initializer call that does not draw (zeros, ones):
  every call gives the same value."""
  return _keras_initializer(initial_value) is not None and not _is_random(initial_value)


def reseeded(initial_value, seed: int):
  """A new value from the Keras initializer behind `initial_value`, with `seed`."""
  if isinstance(initial_value, functools.partial):
    init = initial_value.func
    if isinstance(init, tf_keras.initializers.Initializer):
      config = init.get_config()
      if 'seed' in config:
        init = type(init).from_config({**config, 'seed': seed})
      return init(*initial_value.args, **initial_value.keywords)
  if callable(initial_value):
    return initial_value()  # not a Keras initializer: cannot re-seed it
  return initial_value


class Network:
  """A model from a factory, built for `image_shape` [H, W, C] in training mode.

  Attributes:
    model: the built model.
    dtype: the dtype its inputs and features use.
    variables: its trainable variables, in creation order.
    layers: its `submodules`, walked once (the measures read them from here).
    given: True for a given model (`of_model`): its weights are kept, never drawn.
  """

  def __init__(self, factory: Factory, use_layer_norm: bool, image_shape: Sequence[int],
               undrawn: bool = False):
    """With `undrawn`, the variables a Keras initializer would draw are created as zeros
    (their first values come from `reinitialise`, which the measures call before any use),
    and the first `reinitialise` leaves the others (zeros, ones: not drawn) as created:
    the same values as without, at less cost for a new network."""
    with recorded_initial_values(undrawn) as created:
      self._build(factory(use_layer_norm), image_shape)
    self._initial_values = [created.get(id(v)) for v in self.variables]
    self._constants_as_created = undrawn
    self.given = False

  @classmethod
  def of_model(cls, model, image_shape: Sequence[int]) -> 'Network':
    """A given model (built, or built here by one call on zeros), measured as it is."""
    from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top
    if isinstance(model, asvit.AsViT) and model.encoder.drop_path_rate > 0:
      raise UserInputError('a measured model must have drop_path_rate=0 (the measures run in '
                       f'training mode), got {model.encoder.drop_path_rate}')
    net = cls.__new__(cls)
    net._build(model, image_shape)
    net._initial_values = [None] * len(net.variables)
    net._constants_as_created = False
    net.given = True
    return net

  def _build(self, model, image_shape: Sequence[int]):
    self.model = model
    self.dtype = tf.as_dtype(getattr(self.model, 'compute_dtype', None) or tf.float32)
    if _builds_from_shape(model):
      # An As-ViT runs on any image size and no weight depends on it: its encoder (all
      # that `features` reads) is built from the shape, without a forward pass on zeros.
      blocks.build_in_scope(model.encoder, tf.TensorShape([None, *image_shape]))
    else:
      try:
        self.model.features(tf.zeros([1, *image_shape], self.dtype), training=True)
      except tf.errors.InvalidArgumentError as e:
        raise ValueError(f'the network does not run on {list(image_shape)} images: '
                         f'{e.message.splitlines()[0]}') from None
    self.variables: List[tf.Variable] = list(self.model.trainable_variables)
    # The layer tree, walked once: `tf.Module.submodules` walks every attribute of every
    # layer again at each call (tens of ms on the seed), and the measures ask for it again.
    self.layers = list(self.model.submodules)
    redrawn = set()
    for layer in self.layers:
      if isinstance(layer, (tf_keras.layers.Dense, tf_keras.layers.LayerNormalization)):
        redrawn.update(v.ref() for v in layer.trainable_weights)
    # The variables the authors' repeats draw again: their code re-initialises only
    # nn.Linear and nn.LayerNorm modules, so the patch embedding's conv keeps its first draw.
    self._dense_or_norm = [v.ref() in redrawn for v in self.variables]

  def reinitialise(self, seed: int, repeat: int, share_embedding: bool = False):
    """Draws every trainable variable again, seeded by (seed, repeat, index).

    With `share_embedding`, only Dense and LayerNorm variables get a new draw per repeat, as
    in the authors' code; the others (on an As-ViT, the patch embedding's conv kernel and
    bias) get repeat 0's draw at every repeat.
    """
    if self.given:
      raise ValueError('a given model keeps its weights: it is not re-initialised')
    keep_constants, self._constants_as_created = self._constants_as_created, False
    for i, (variable, initial) in enumerate(zip(self.variables, self._initial_values)):
      if initial is None or (keep_constants and _is_constant(initial)):
        continue  # created outside our scope (e.g. shared), or a constant as created: keep it
      draw = repeat if self._dense_or_norm[i] or not share_embedding else 0
      value = reseeded(initial, seeding.measure_seed(seed, seeding.WEIGHTS, draw, i))
      variable.assign(tf.cast(value, variable.dtype))

  def kernels(self, include_scales: bool = False) -> List[tf.Variable]:
    """Trainable variables of rank >= 2 (Dense and conv kernels), and with `include_scales`
    the LayerNorm scales (gamma, rank 1): the latter are the weights the NTK differentiates
    by default, as the authors' PyTorch code selects the parameters named 'weight'. Biases
    and LayerNorm offsets (rank 1) are always left out."""
    out = []
    for v in self.variables:
      name = v.name.split('/')[-1].split(':')[0]
      if v.shape.rank >= 2 or (include_scales and name == 'gamma'):
        out.append(v)
    return out


def _builds_from_shape(model) -> bool:
  """True for an As-ViT whose encoder is not built yet (it is then built from the image
  shape alone: `AsViTEncoder.build` creates every weight without a forward pass)."""
  from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top
  return isinstance(model, asvit.AsViT) and not model.encoder.built


def measured_network(arch_or_model, width: Optional[int], use_layer_norm: bool,
                     image_shape: Sequence[int], share_embedding: bool = False) -> Network:
  """The measured `Network`: a given model as it is, or one built from a topology or factory
  (its weights drawn at every repeat)."""
  if not is_model(arch_or_model):
    return Network(model_factory(arch_or_model, width), use_layer_norm, image_shape,
                   undrawn=True)
  if width is not None or share_embedding:
    raise UserInputError('width and share_embedding apply to drawn weights, not to a given '
                     f'model (got width={width}, share_embedding={share_embedding})')
  return Network.of_model(arch_or_model, image_shape)


MODES = ('auto', 'eager', 'graph', 'xla')
# mode='auto' on a topology (or a factory carrying its MACs) runs a measure eagerly when
# that is cheaper than tracing it: a trace is paid once per new network, the eager dispatch of
# its ops at every repeat, so eager up to EAGER_REPEATS repeats. And only while the measure's
# batch is small, since eager keeps more intermediates alive: the forward MACs of the whole
# batch (images × MACs of one image) within EAGER_BATCH_MACS. The measurements behind both
# numbers are in docs/benchmarks.md, "Per new network" (As-ViT) and "`asvit correlate` on
# ViT-Bench-101's PiT networks" (PiT: the same bound; at 224 px only the smallest PiT's
# curves are within it).
EAGER_REPEATS = 5
EAGER_BATCH_MACS = 1e9


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise UserInputError(f'mode must be one of {MODES}, got {mode!r}')
  return mode


def measured_repeats(repeats: int, repeat_range: Optional[Sequence[int]] = None) -> range:
  """The repeats a measurement runs: all `repeats`, or only [start, stop) of them
  (`repeat_range`). A repeat's draws depend on (seed, repeat) alone and its path is chosen for
  all `repeats`, so its value is the one the whole measurement gives: the parts of a
  measurement can run apart (in different workers) and be put together. A range outside
  0..repeats, or empty, raises a one-line UserInputError."""
  if repeats < 1:
    raise UserInputError(f'repeats must be >= 1, got {repeats}')
  if repeat_range is None:
    return range(repeats)
  try:
    start, stop = (int(i) for i in repeat_range)
  except (TypeError, ValueError):
    raise UserInputError(f'repeat_range must be (start, stop), got {repeat_range!r}') from None
  if not 0 <= start < stop <= repeats:
    raise UserInputError(f'repeat_range must satisfy 0 <= start < stop <= repeats '
                         f'({repeats}), got {repeat_range!r}')
  return range(start, stop)


def eager_pays(arch_or_factory: ArchOrFactory, width: Optional[int],
               image_shape: Sequence[int], images: int, repeats: int,
               batch_macs: Optional[float] = None) -> bool:
  """Whether mode='auto' runs a measure eagerly: at most EAGER_REPEATS repeats of a network
  whose cost is known (`forward_macs`: a topology, or a factory carrying it) and whose batch
  of `images` is within `batch_macs` (None: EAGER_BATCH_MACS; a measure whose eager pass
  was measured apart passes its own bound). A given model or a factory without its cost is
  traced."""
  if repeats > EAGER_REPEATS:
    return False
  macs = forward_macs(arch_or_factory, width, image_shape)
  bound = EAGER_BATCH_MACS if batch_macs is None else batch_macs
  return macs is not None and macs * images <= bound


def compile_mode(fn, mode: str):
  """`fn` run eagerly ('eager'), as one traced `tf.function` ('graph'), or XLA-compiled.

  Forward mode dispatches one small traced JVP function per op: eager pays that dispatch
  at every call, a trace pays it once but costs seconds per new network. What wins was
  measured (docs/benchmarks.md): each measure's 'auto' picks it. Traced without AutoGraph:
  no measure branches on a tensor's value, and converting their code cost ~17–27 % of a new
  network's κ_Θ at 224 px.
  """
  if mode == 'eager':
    return fn
  if mode not in ('graph', 'xla'):
    raise UserInputError(f'mode must be one of {MODES}, got {mode!r}')
  traced = tf.function(fn, jit_compile=mode == 'xla', autograph=False)
  concrete = []

  def call(*tensors):
    # One trace per measured network, by design: calling the concrete function keeps
    # TensorFlow's "frequent retracing" warning (keyed on fn's code) out of long searches.
    if not concrete:
      with releasing_custom_gradients():
        concrete.append(traced.get_concrete_function(*tensors))
    with without_grappler():
      return concrete[0](*tensors)
  return call


@contextlib.contextmanager
def releasing_custom_gradients():
  """Unregisters the gradients `tf.custom_gradient` registers while tracing inside.

  Traced, every call of a `tf.custom_gradient` function (`attention.attention`) registers a
  new gradient function in TensorFlow's global registry, never removed, whose closure holds
  the whole traced graph: about 50 MB per κ_Θ measurement at 32 px kept for the life of the
  process. The traced function holds its backward already, so the entries are dropped once
  the trace is done.
  """
  registry = _gradient_registry()
  before = set(registry)
  try:
    yield
  finally:
    for name in [n for n in registry if n not in before and n.startswith('CustomGradient-')]:
      registry.pop(name, None)


def _gradient_registry():
  # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.framework import ops
  return ops._gradient_registry._registry  # pylint: disable=protected-access


@contextlib.contextmanager
def without_grappler():
  """Functions first run inside skip Grappler's graph rewrites (TensorFlow's global
  optimizer option, restored after). A measure traces a new network each time, so the
  rewrites only add to its first run: the runs after are no faster (docs/benchmarks.md)."""
  key = 'disable_meta_optimizer'
  before = bool(tf.config.optimizer.get_experimental_options().get(key, False))
  tf.config.optimizer.set_experimental_options({key: True})
  try:
    yield
  finally:
    tf.config.optimizer.set_experimental_options({key: before})


def image_shape(image_size: Union[int, Tuple[int, int]]) -> Tuple[int, int, int]:
  h, w = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
  if int(h) < 1 or int(w) < 1:
    raise UserInputError(f'image_size must be positive, got {image_size}')
  return int(h), int(w), 3
