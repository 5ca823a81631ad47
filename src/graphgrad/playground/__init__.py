"""The playground: a local web page where small networks learn live, trained by graphgrad.

``graphgrad playground`` serves it (needs ``pip install 'graphgrad[playground]'``). The
training, the pictures' data and the inside view of a neuron live in :class:`Session`, which
needs NumPy only; :func:`create_app` (Starlette) wraps sessions in a WebSocket per tab.
:func:`save_run` / :func:`load_run` keep a run as a graphgrad checkpoint;
:func:`export_html` writes a page that needs no server.
"""

from ._export import export_html, load_run, save_run, snapshot, write_html
from ._params import ParamError, Params, validate_params
from ._session import PlaygroundError, Session

__all__ = [
    "ParamError",
    "Params",
    "PlaygroundError",
    "Session",
    "create_app",
    "export_html",
    "load_run",
    "save_run",
    "snapshot",
    "validate_params",
    "write_html",
]


def __getattr__(name: str) -> object:
    if name == "create_app":  # imports the server stack (the optional extra) only when asked
        from ._app import create_app

        return create_app
    raise AttributeError(f"module 'graphgrad.playground' has no attribute {name!r}")
