"""edgeclf: train an image classifier, compress it, export TFLite/ONNX and run it on the edge.

Importing the package imports nothing heavy; TensorFlow is only loaded through
:mod:`edgeclf._keras`, and :mod:`edgeclf.runtime` never loads it.
"""

__version__ = "0.1.0"
