"""Training-free design and scaling: REINFORCE seed search and "grow" (docs/design.md §8–10)."""
from asvit_tf.search.grow import GrowConfig
from asvit_tf.search.grow import run_grow
from asvit_tf.search.measure import Measurement
from asvit_tf.search.measure import make_measure
from asvit_tf.search.policy import Policy
from asvit_tf.search.reinforce import SearchConfig
from asvit_tf.search.reinforce import run_search
