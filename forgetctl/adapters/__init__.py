"""Torch side of forgetctl: objectives, training, composition, evaluation.

Submodules import torch/transformers/peft at module level; this file does not,
so `import forgetctl.adapters` alone stays cheap.
"""
