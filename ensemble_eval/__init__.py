"""ensemble-eval: multi-crop, multi-model evaluation of image classifiers.

Reproduces the GoogLeNet ILSVRC 2014 evaluation (144 crops per image, softmax averaged over
crops and models) and the paper's Table 3 in one pass; any image classifier, alone or in
mixed ensembles, under the papers' multi-crop protocols.

The Python API (docs/python-api.md):

    import ensemble_eval as ee
    results = ee.evaluate("ckpts/*.pt", "/data/imagenet/val", crops="10", out="runs/ab")
    ee.load_results("runs/ab")

`evaluate`, `validate`, `rebuild_report`, `compare_runs`, `load_results`, `Results` and `Validation` live in
`ensemble_eval.api` and are imported on first use, so `import ensemble_eval` (and the command's --help) stays instant.
"""

__version__ = "0.1.0"
__all__ = [
    "Results",
    "Validation",
    "__version__",
    "compare_runs",
    "evaluate",
    "load_results",
    "rebuild_report",
    "validate",
]


def __getattr__(name: str):
    if name in ("Results", "Validation", "compare_runs", "evaluate", "load_results", "rebuild_report", "validate"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'ensemble_eval' has no attribute {name!r}")
