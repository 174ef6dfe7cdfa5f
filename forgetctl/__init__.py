"""forgetctl: a real delete button for language models.

Kept import-light on purpose: `forgetctl list` must start without torch.
"""

__version__ = "0.1.0"
