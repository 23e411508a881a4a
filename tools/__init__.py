"""Development tools over the package, not installed with it: the benchmark (`tools.benchmark`)
and the input-sensitive demo checkpoints (`tools.demo`). The scripts in scripts/ and the tests
import them from the repository root; nothing in `ensemble_eval` imports them.
"""
