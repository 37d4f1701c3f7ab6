"""Running napari without a screen: is there OpenGL, and napari's GL queries where there is none.

Qt's ``offscreen`` platform draws widgets without a display, but it has OpenGL only through
GLX, i.e. with an X server; Qt's EGL platforms want a window surface, which Mesa's
surfaceless EGL does not give. On a machine with neither (CI, a container), napari's canvas
cannot be drawn, but everything else -- the Qt viewer, layer list, dock widgets, worker
threads -- works, except that adding a layer asks OpenGL for its extensions and texture
sizes. :func:`answer_gl_queries` answers those for a viewer that is never drawn (the tests,
the latency benchmark); :func:`opengl_available` says whether it is needed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["answer_gl_queries", "opengl_available"]

#: what :func:`answer_gl_queries` answers: a desktop GPU's typical values
GL_ANSWERS: dict[str, Any] = {
    "GL_EXTENSIONS": "GL_ARB_texture_float",
    "GL_MAX_TEXTURE_SIZE": 16384,
    "GL_MAX_3D_TEXTURE_SIZE": 2048,
}
_GL_MAX_3D_TEXTURE_SIZE = 32883  # vispy.gloo.gl does not name it


def opengl_available() -> bool:
    """Whether Qt can make an OpenGL context current here (needs a ``QApplication``)."""
    from qtpy.QtGui import QOffscreenSurface, QOpenGLContext

    ctx = QOpenGLContext()
    if not ctx.create():
        return False
    surface = QOffscreenSurface()
    surface.create()
    ok = bool(ctx.makeCurrent(surface))
    if ok:
        ctx.doneCurrent()
    return ok


def answer_gl_queries() -> None:
    """Answer napari's OpenGL queries (extensions, texture sizes) for this process.

    For viewers that are never drawn, on machines without OpenGL. napari asks OpenGL once
    per process, through two cached functions of ``napari._vispy.utils.gl``; they are called
    here while vispy's ``glGetParameter`` returns :data:`GL_ANSWERS`, so their caches hold
    those answers from then on. vispy's own function is put back at once (napari rebinds
    vispy's GL functions itself when it loads its markers visual, so a lasting patch would
    not hold). Drawing still needs OpenGL.
    """
    from napari._vispy.utils import gl as napari_gl
    from vispy.gloo import gl

    original = gl.glGetParameter
    answers = {
        gl.GL_EXTENSIONS: GL_ANSWERS["GL_EXTENSIONS"],
        gl.GL_MAX_TEXTURE_SIZE: GL_ANSWERS["GL_MAX_TEXTURE_SIZE"],
        _GL_MAX_3D_TEXTURE_SIZE: GL_ANSWERS["GL_MAX_3D_TEXTURE_SIZE"],
    }

    def get_parameter(pname: int) -> Any:
        return answers[pname] if pname in answers else original(pname)

    gl.glGetParameter = get_parameter
    try:
        napari_gl.get_gl_extensions()
        napari_gl.get_max_texture_sizes()
    finally:
        gl.glGetParameter = original
