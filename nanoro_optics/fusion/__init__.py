"""Focus fusion: Laplacian-pyramid focus stacking, streaming, depth map, alignment.

Arrays in, arrays out: ``fuse_stack(frames, options)`` fuses a stack (an array or any
iterable of frames) into one sharp image and a depth map; :class:`StackFuser` does the same
frame by frame as a camera delivers them, with memory independent of the number of frames;
:class:`FusionOptions` holds every setting. Files are read and written by
:mod:`nanoro_optics.pipeline`, not here. Importing this package is cheap: the numba kernels
compile (once per machine, cached) on first use.

Public names
------------
fuse_stack, StackFuser, FusionResult   fusion (:mod:`.fuse`, :mod:`.stack`, :mod:`.result`)
FusionOptions                          every setting of a fusion, one frozen value (:mod:`.options`)
FusionRule                             the selection rule's options (:mod:`.rule`)
laplacian_pyramid, gaussian_pyramid, collapse_pyramid   pyramids (:mod:`.pyramid`)
synthetic_stack, SyntheticStack        stacks with ground truth (:mod:`.synthetic`)
scene_stack, SceneStack                hard scenes: fluorescence, occlusion, thick (:mod:`.scenes`)
align_stack, FrameAligner, AlignResult alignment (:mod:`.align`)
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = [
    "AlignResult",
    "FrameAligner",
    "FusionOptions",
    "FusionResult",
    "FusionRule",
    "SceneStack",
    "StackFuser",
    "SyntheticStack",
    "align_stack",
    "collapse_pyramid",
    "fuse_stack",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "scene_stack",
    "synthetic_stack",
]

_EXPORTS: dict[str, str] = {
    "FusionResult": "result",
    "StackFuser": "stack",
    "fuse_stack": "fuse",
    "FusionRule": "rule",
    "FusionOptions": "options",
    "laplacian_pyramid": "pyramid",
    "gaussian_pyramid": "pyramid",
    "collapse_pyramid": "pyramid",
    "synthetic_stack": "synthetic",
    "SyntheticStack": "synthetic",
    "scene_stack": "scenes",
    "SceneStack": "scenes",
    "align_stack": "align",
    "FrameAligner": "align",
    "AlignResult": "align",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
