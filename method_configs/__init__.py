"""Method definitions registered with nerfstudio (one module per `ns-train` method).

Keep these modules light: nerfstudio imports every registered entry point for every `ns-*` command, so an
import error or a slow import here breaks or slows all of them.
"""

from difix_ns.nerfstudio_startup import speed_up_external_methods

# nerfstudio imports this package (its entry points) just before it builds the external-method placeholders
speed_up_external_methods()
