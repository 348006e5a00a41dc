"""difix-ns: a nerfstudio plugin that improves 3D reconstructions with single-step image fixers.

Importing the package (which nerfstudio does for every `ns-*` command, through our method entry points, and when
it reads a config.yml of ours) makes nerfstudio checkpoints loadable under torch's weights-only default.
"""

from difix_ns.checkpoints import allow_nerfstudio_checkpoints

__version__ = "0.1.0"
__all__ = ["__version__"]

allow_nerfstudio_checkpoints()
