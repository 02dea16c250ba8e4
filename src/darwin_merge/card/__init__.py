"""Model card (CHILD_DIR/README.md) and run report (RUN_DIR/report.html), from records."""

from .build import CARD_NAME, REPORT_NAME, write_card, write_report

__all__ = ["CARD_NAME", "REPORT_NAME", "write_card", "write_report"]
