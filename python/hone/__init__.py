"""Python client of hone, the self-hosted fine-tuning server.

``from hone import foundation_model as fm`` offers the hosted product's
fine-tuning SDK surface (fm.create, fm.get, fm.list, fm.cancel, fm.delete,
fm.get_events) against a hone server; standard library only.
"""

from . import foundation_model
from ._http import HoneError

__all__ = ["foundation_model", "HoneError"]
__version__ = "0.1.0"
