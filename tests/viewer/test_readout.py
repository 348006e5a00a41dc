"""The fixer's latency read-out against nerfstudio's viewer hooks: setting it must not re-render.

nerfstudio hooks every custom element's update to a re-render (a low-resolution "move" render) and viser runs
update callbacks on values the server sets, so a read-out set during each render re-rendered forever: the viewer
stayed at about 38x30 px with post-processing on and kept a core busy.
"""

from __future__ import annotations

import threading
import time

import torch


def _count_rerenders(viewer):
    """Replace the viewer's re-render trigger (the one every element hook calls) by a counter."""
    calls = []
    event = threading.Event()

    def trigger():
        calls.append(time.monotonic())
        event.set()

    viewer._trigger_rerender = trigger
    return calls, event


def test_latency_readout_does_not_rerender_but_the_toggle_does(served):
    viewer, model = served.viewer, served.model
    camera = viewer.pipeline.datamanager.eval_dataset.cameras[0:1]
    try:
        calls, event = _count_rerenders(viewer)
        before = model.viewer_fixer_latency.value
        model.fix_render(torch.full((24, 32, 3), 0.25), camera)  # what every post-processed render does
        assert model.viewer_fixer_latency.value != before and model.viewer_fixer_latency.value > 0.0
        assert not event.wait(1.0), "setting the latency read-out re-rendered the viewer"

        # the hooks are live: a user's change of a real setting does re-render
        model.viewer_reference.value = model.viewer_reference.value
        assert event.wait(10.0), "the viewer's element hook did not fire (the check above would prove nothing)"
    finally:
        del viewer._trigger_rerender
