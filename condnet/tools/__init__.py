"""The command line tools (``tools/*.py`` in the repository call these ``main`` functions)."""
