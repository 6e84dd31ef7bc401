"""asvit-tf: As-ViT (Auto-scaling Vision Transformers without Training) in TensorFlow/Keras.

Modules: `arch` (topology strings), `layers`, `models`, `complexity`, `search`, `garden`,
`serving`, `cli`. Importing the package itself loads nothing heavy.
"""
__version__ = '0.1.0'
