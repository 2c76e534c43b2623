"""Execute notebooks with papermill and keep their results next to them.

Each executed notebook lives in its own run folder together with ``parameters.json`` (what it was run with)
and ``metrics.json`` (scalar results the notebook wrote through :func:`write_results`); batch tools and reports
read those files, never the notebook JSON.
"""

from semkit.batch.execute import NOTEBOOK_DIR, execute_notebook, read_results, write_results

__all__ = ["NOTEBOOK_DIR", "execute_notebook", "read_results", "write_results"]
