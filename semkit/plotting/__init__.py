"""Figures for the notebooks, one module per area (``curation``, ``evaluation``, ``interpret``, ``stem``).

Import the module you need (``from semkit.plotting import curation``); nothing heavy is imported here, so
``import semkit`` stays fast and works without a display. Every function returns a matplotlib ``Figure`` and
never calls ``plt.show()``; the notebooks save figures under their ``figures_dir``.
"""
