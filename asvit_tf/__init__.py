"""asvit-tf: As-ViT (Auto-scaling Vision Transformers without Training) in TensorFlow/Keras.

Modules: `arch` (topology strings), `layers`, `models`, `complexity`, `search`, `garden`,
`serving`, `cli`. Importing the package itself loads nothing heavy.

Imported before TensorFlow runs its first operation, it asks TensorFlow for its BFC
allocator on the CPU (`TF_CPU_ALLOCATOR_USE_BFC`, unless already set; worker processes
inherit it). That allocator keeps freed memory for the next tensors instead of handing it
back to the system and faulting fresh pages in again; the values are the same
(docs/benchmarks.md, "The BFC allocator", has the timings). Set
TF_CPU_ALLOCATOR_USE_BFC=false to keep TensorFlow's default.
"""
import os as _os

__version__ = '0.1.0'

_os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
