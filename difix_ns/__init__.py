"""difix-ns: a nerfstudio plugin that improves 3D reconstructions with single-step image fixers.

Importing the package (which nerfstudio does for every `ns-*` command, through our method entry points, and when
it reads a config.yml of ours) makes nerfstudio checkpoints loadable under torch's weights-only default.
"""

import os

# Before torch loads OpenMP: with its default busy-waiting, two processes on a 2-core machine slow each other down
# about 50x (NAFNet training step: 14 s instead of 0.26 s while an ns-train ran beside it); alone, passive waiting
# is within the noise (0.13-0.17 s against 0.09-0.19 s). Only affects processes whose first torch import comes
# through this package (the difix-ns CLI); `difix_ns.runner` sets it for the ns-train subprocesses it starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from difix_ns.checkpoints import allow_nerfstudio_checkpoints  # noqa: E402

__version__ = "0.1.0"
__all__ = ["__version__"]

allow_nerfstudio_checkpoints()
