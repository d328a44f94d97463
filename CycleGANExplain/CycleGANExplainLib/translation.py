"""The translation function for user-visible text: Slicer's inside Slicer, the text as written elsewhere.

Slicer's ``tr`` finds the translation context from the calling file, so callers import it under
the name ``_`` (the convention Slicer's string extraction looks for) and call it directly.
Outside Slicer (command line, web viewer, tests) there is no Slicer application to translate.
PythonSlicer (Slicer's Python without the application) has ``slicer.i18n`` but no ``slicer.app``,
which Slicer's ``tr`` calls: there too the text stays as written.
"""

try:
    from slicer import app  # noqa: F401 - only checks that a Slicer application is running
    from slicer.i18n import tr
except ImportError:
    def tr(text: str) -> str:
        return text
