"""Model card (CHILD_DIR/README.md) and run report (RUN_DIR/report.html), from records."""

from .build import write_card, write_report

__all__ = ["write_card", "write_report"]
