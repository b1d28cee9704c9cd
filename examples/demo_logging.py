"""Logging for the demo and the examples: each record on one readable line, no traceback.

A supervised crash is expected in a demo: the ``supervisors`` logger reports it as an
OTP-style crash report (which supervisor, which child, the error, what happens next) with
the traceback attached for handlers that want it. Here we show the report and drop the
traceback; a real application would keep it (the default `logging.Formatter` prints it).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class OneLineFormatter(logging.Formatter):
    """Prints ``LEVEL logger: message`` and leaves out ``exc_info`` and ``stack_info``."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def formatException(self, ei: object) -> str:
        return ""

    def formatStack(self, stack_info: str) -> str:
        return ""


def configure(stream: TextIO | None = None) -> logging.Handler:
    """Send the ``actors`` and ``supervisors`` loggers (WARNING and up) to ``stream``.

    ``stream`` defaults to stderr. Returns the handler, so a test can remove it again.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter())
    for name in ("actors", "supervisors"):
        logging.getLogger(name).addHandler(handler)
    return handler


def unconfigure(handler: logging.Handler) -> None:
    """Undo `configure`."""
    for name in ("actors", "supervisors"):
        logging.getLogger(name).removeHandler(handler)
