"""Method definitions registered with nerfstudio (one module per `ns-train` method).

Keep these modules light: nerfstudio imports every registered entry point for every `ns-*` command, so an
import error or a slow import here breaks or slows all of them.
"""
