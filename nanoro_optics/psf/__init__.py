"""Index-mismatch vectorial PSF, apparent focal position and axial scaling factors.

An objective designed for an immersion medium of index ``n_immersion`` focuses through a
planar interface into a sample of index ``n_sample``. The field near focus is given by the
vectorial integrals I0, I1, I2 of Torok et al. and Egner & Hell (:func:`vectorial_integrals`),
from which this package derives:

- :func:`axial_intensity` -- on-axis intensity, widefield or confocal;
- :func:`vectorial_psf` -- the 3-D intensity (z, y, x), unpolarised or x-polarised;
- :func:`focal_scan_psf` -- the z-stack of a bead at a fixed depth (psfmodels' geometry);
- :func:`apparent_focal_position` -- where the focus really is for a nominal depth;
- :func:`axial_scaling_factor` and :func:`actual_depth_um` -- constant and depth-dependent
  models that map nominal to actual depth;
- :class:`IndexMismatch` -- that correction applied to a depth map in stage z.

Conventions: lengths in micrometres; ``nfp_um`` is the nominal focal position (depth of the
nominal focus below the interface); ``z_um`` is measured from the nominal focus, positive
deeper into the sample; wavelengths are vacuum wavelengths. Intensities are relative to the
interface focus (``NFP = 0, z = 0``) in the same media.

References
----------
.. [1] P. Torok et al., J. Opt. Soc. Am. A 12, 325-332 (1995), doi:10.1364/JOSAA.12.000325
.. [2] A. Egner and S. W. Hell, in *Handbook of Biological Confocal Microscopy*, 3rd ed.,
   Springer (2006), ch. 20, doi:10.1007/978-0-387-45524-2_20
"""

from __future__ import annotations

from ._integrals import vectorial_integrals
from .focal import ApparentFocus, apparent_focal_position, axial_intensity
from .mismatch import IndexMismatch
from .scaling import SCALING_MODELS, actual_depth_um, axial_scaling_factor
from .volume import POLARIZATIONS, focal_scan_psf, psfmodels_to_nominal, vectorial_psf

__all__ = [
    "POLARIZATIONS",
    "SCALING_MODELS",
    "ApparentFocus",
    "IndexMismatch",
    "actual_depth_um",
    "apparent_focal_position",
    "axial_intensity",
    "axial_scaling_factor",
    "focal_scan_psf",
    "psfmodels_to_nominal",
    "vectorial_integrals",
    "vectorial_psf",
]
