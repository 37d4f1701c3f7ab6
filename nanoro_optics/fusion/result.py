"""The result of a focus fusion: :class:`FusionResult` (the fused image and its depth map).

Also :data:`ONE_FRAME_ERROR`, every front end's answer to a stack of one frame (no depth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .halo import HaloReport

__all__ = ["ONE_FRAME_ERROR", "FusionResult"]

#: the one answer to a stack of one frame, in every front end (a depth needs two frames)
ONE_FRAME_ERROR = (
    "the stack holds 1 frame: focus fusion needs at least 2 (one frame has nothing to fuse "
    "and no depth to measure)"
)


@dataclass(frozen=True)
class FusionResult:
    """The fused image of a focus stack and its depth map.

    Attributes
    ----------
    image : numpy.ndarray
        Fused image, same dtype and shape as one input frame (integers rounded half to even).
    depth : numpy.ndarray
        float32 ``(H, W)``: frame of best focus with a sub-frame estimate (0 = first frame),
        or its z position in um when z positions were given. Where no frame is confidently
        in focus (confidence below the rule's ``min_confidence``) the depth is filled from
        the confident pixels around it (``fill_depth=True``, the default), else NaN; NaN
        everywhere when no pixel is confident, and outside ``valid_bbox`` with alignment.
    confidence : numpy.ndarray
        float32 ``(H, W)`` in ``[0, 1]``: how clearly one frame stands out as the sharpest
        (0: the focus profile is flat to within the noise, 1: one frame stands far above
        the rest); it marks the filled, less certain pixels.
    n_frames : int
        Number of frames fused.
    depth_unit : str
        ``"frame"`` or ``"um"``.
    depth_kind : str
        ``"nominal"`` (stage z of best focus, or frame index) or ``"actual"`` (height in the
        sample, corrected for an index mismatch: ``FusionOptions.index_mismatch``).
    halo : HaloReport or None
        With ``FusionOptions.halo="auto"``: where the halo correction acted
        (``halo.corrected``, the only pixels that may lie outside the frames' per-pixel
        range), its area and the residual of its check (:mod:`nanoro_optics.fusion.halo`);
        None with ``halo="off"``.
    """

    image: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    n_frames: int
    depth_unit: str = "frame"
    depth_kind: str = "nominal"
    halo: HaloReport | None = None

    @property
    def halo_map(self) -> np.ndarray | None:
        """Bool ``(H, W)``: where the halo correction acted (None with ``halo="off"``)."""
        return None if self.halo is None else self.halo.corrected

    @property
    def halo_fraction(self) -> float:
        """Fraction of the image the halo correction replaced (0 with ``halo="off"``)."""
        return 0.0 if self.halo is None else self.halo.corrected_fraction

    @property
    def halo_residual_dn(self) -> float:
        """RMS residual (DN) of the halo correction's check over its map (NaN: none)."""
        return float("nan") if self.halo is None else self.halo.residual_dn

    def cropped(self, bbox: tuple[int, int, int, int]) -> FusionResult:
        """Return the result cut to ``bbox = (y0, y1, x0, x1)`` (contiguous copies)."""
        y0, y1, x0, x1 = (int(v) for v in bbox)
        return FusionResult(
            image=np.ascontiguousarray(self.image[y0:y1, x0:x1]),
            depth=np.ascontiguousarray(self.depth[y0:y1, x0:x1]),
            confidence=np.ascontiguousarray(self.confidence[y0:y1, x0:x1]),
            n_frames=self.n_frames,
            depth_unit=self.depth_unit,
            depth_kind=self.depth_kind,
            halo=None if self.halo is None else self.halo.cropped(bbox),
        )
