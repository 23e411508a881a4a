"""ensemble-eval: multi-crop, multi-model evaluation of image classifiers.

Reproduces the GoogLeNet ILSVRC 2014 evaluation (144 crops per image, softmax averaged over
crops and models) and the paper's Table 3 in one pass.
"""

__version__ = "0.1.0"
