"""CycleGANExplain in the browser: Slicer's own MRML slice views served by trame-slicer.

A sibling of the Slicer module, not a second implementation: the explanation, the overlay and
its colours come from ``CycleGANExplainLib.mrml_explain`` and ``mrml_overlay``, exactly as in
the module. Start it with ``cyclegan-explain-web [VOLUME]`` (``viewer.serve``). Research use only.
"""
